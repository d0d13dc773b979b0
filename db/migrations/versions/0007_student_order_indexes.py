"""An index for each order of the students connection, the tie-breaking student_id
included: ix_students_name (name, student_id) and ix_students_created_at (created_at,
student_id), which those orders lacked (each page read and sorted every student),
and ix_students_grade_level becomes (grade_level, student_id) (each page sorted a
whole grade level). db/plans.py shows the plans.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.drop_index("ix_students_grade_level", "students")
    op.create_index(
        "ix_students_grade_level", "students", ["grade_level", "student_id"]
    )
    op.create_index("ix_students_name", "students", ["name", "student_id"])
    op.create_index("ix_students_created_at", "students", ["created_at", "student_id"])
    _restat()


def _restat() -> None:
    """SQLite keeps the planner's statistics per index (sqlite_stat1, written by the
    seed's ANALYZE): the new indexes get theirs, as the ones they join had."""
    bind = op.get_bind()
    if bind.dialect.name == "sqlite" and sa.inspect(bind).has_table("sqlite_stat1"):
        op.execute("ANALYZE students")


def downgrade() -> None:
    op.drop_index("ix_students_created_at", "students")
    op.drop_index("ix_students_name", "students")
    op.drop_index("ix_students_grade_level", "students")
    op.create_index("ix_students_grade_level", "students", ["grade_level"])
    _restat()
