"""Student types, the student connection, inputs and the order field."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated

import strawberry

from db.records import StudentRecord
from resolvers import analytics, grades, students
from resolvers.pagination import Page
from schema.analytics import StudentAnalytics
from schema.common import PageInfo, ctx
from schema.grades import Grade


@strawberry.type(
    description="A student. Admins read every student, teachers the students of "
    "their grade levels, students only themselves."
)
class Student:
    student_id: str = strawberry.field(
        description="The student's public id, e.g. S00001."
    )
    name: str = strawberry.field(description="Full name.")
    email: str = strawberry.field(description="Email address (stored lower-case).")
    grade_level: int = strawberry.field(description="Grade level, 1 to 12.")
    created_at: datetime = strawberry.field(
        description="When the record was created (UTC)."
    )
    _record: strawberry.Private[StudentRecord]

    @classmethod
    def from_model(cls, row: StudentRecord) -> Student:
        return cls(
            student_id=row.student_id,
            name=row.name,
            email=row.email,
            grade_level=row.grade_level,
            created_at=row.created_at,
            _record=row,
        )

    @strawberry.field(description="All of the student's grades, oldest first.")
    def grades(
        self,
        info: strawberry.Info,
        subject: Annotated[
            str | None, strawberry.argument(description="Only this subject's grades.")
        ] = None,
    ) -> list[Grade]:
        # GradeRecord has every attribute Grade reads (id becomes a string through
        # the ID scalar), so the records go out as they are: no per-grade object.
        # The loader's future is returned as it is; the executor awaits it.
        context = ctx(info)
        students.require_readable(context, self._record)
        return grades.grades_of_student(context, self.student_id, subject)  # type: ignore[return-value]

    @strawberry.field(description="The student's analytics.")
    async def analytics(self, info: strawberry.Info) -> StudentAnalytics:
        value = await analytics.analytics_of(ctx(info), self._record)
        return StudentAnalytics(_value=value)


@strawberry.enum(description="What to sort students by.")
class StudentOrderField(Enum):
    STUDENT_ID = "student_id"
    NAME = "name"
    GRADE_LEVEL = "grade_level"
    CREATED_AT = "created_at"


@strawberry.type(description="An edge in a student connection.")
class StudentEdge:
    cursor: str = strawberry.field(description="Opaque position of this student.")
    node: Student = strawberry.field(description="The student.")


@strawberry.type(description="A page of students.")
class StudentConnection:
    edges: list[StudentEdge] = strawberry.field(
        description="The students on this page."
    )
    page_info: PageInfo = strawberry.field(description="Paging state.")
    _page: strawberry.Private[Page[StudentRecord]]

    @strawberry.field(description="How many students match the filters, on all pages.")
    async def total_count(self) -> int:
        return await self._page.count()

    @classmethod
    def from_page(cls, page: Page[StudentRecord]) -> StudentConnection:
        return cls(
            edges=[
                StudentEdge(cursor=cursor, node=Student.from_model(row))
                for row, cursor in zip(page.items, page.cursors, strict=True)
            ],
            page_info=PageInfo(has_next_page=page.has_next, end_cursor=page.end_cursor),
            _page=page,
        )


@strawberry.input(description="A new student.")
class StudentCreateInput:
    student_id: str = strawberry.field(
        description="Public id, unique, 1 to 64 characters."
    )
    name: str = strawberry.field(description="Full name, 1 to 200 characters.")
    email: str = strawberry.field(description="Email address, unique.")
    grade_level: int = strawberry.field(description="Grade level, 1 to 12.")


@strawberry.input(description="Changes to a student; fields left out stay as they are.")
class StudentUpdateInput:
    student_id: str | None = strawberry.field(
        default=strawberry.UNSET, description="New public id (grades follow)."
    )
    name: str | None = strawberry.field(
        default=strawberry.UNSET, description="Full name."
    )
    email: str | None = strawberry.field(default=strawberry.UNSET, description="Email.")
    grade_level: int | None = strawberry.field(
        default=strawberry.UNSET, description="Grade level, 1 to 12."
    )
