"""Who is asking: the viewer, their role, and what that role may read and write."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from resolvers.errors import Forbidden

Role = Literal["admin", "teacher", "student"]
ROLES: tuple[Role, ...] = ("admin", "teacher", "student")


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is asking: `identity` names them in the audit log and keys their rate
    budget ("key:<id>", "user:<sub>", or "ip:<address>" when anonymous). Anonymous
    callers exist only where AUTH_REQUIRED is off, and then act as admin.
    `expires_at` (epoch seconds) is when the credential behind the viewer expires,
    None when it does not: a WebSocket connection ends then."""

    identity: str = "anonymous"
    role: Role = "admin"
    student_id: str | None = None
    grade_levels: frozenset[int] | None = None
    anonymous: bool = True
    expires_at: float | None = None

    def require(self, *roles: Role) -> None:
        if self.role not in roles:
            raise Forbidden(f"the {self.role} role may not do this")

    def may_write_level(self, grade_level: int) -> bool:
        if self.role == "admin":
            return True
        if self.role == "teacher":
            return self.grade_levels is None or grade_level in self.grade_levels
        return False

    def may_read(self, student_id: str, grade_level: int) -> bool:
        """Whether the viewer may read this student's record, grades and analytics."""
        if self.role == "student":
            return student_id == self.student_id
        return self.may_write_level(grade_level)

    @property
    def readable_levels(self) -> frozenset[int] | None:
        """Lists show only students of these grade levels; None: every level."""
        return self.grade_levels if self.role == "teacher" else None

    @property
    def readable_students(self) -> frozenset[str] | None:
        """Lists show only these students (a student's own id); None: anyone."""
        if self.role != "student":
            return None
        return frozenset({self.student_id}) if self.student_id else frozenset()
