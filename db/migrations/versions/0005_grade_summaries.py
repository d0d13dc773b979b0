"""Summaries that every grade write keeps exact (db.summaries): each student's sums on
students (grade_count, sum_p, sum_x, sum_xx, sum_xp), the same per student and subject
with min, max and the latest grade (student_subject_stats), and how many grades of a
level and subject have each percentage (grade_value_counts). Filled from the grades
of an existing database. ix_grades_student_id goes: ix_grades_student_id_subject
serves the same lookups.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

_SUMS = ("sum_p", "sum_x", "sum_xx", "sum_xp")


def _p(table: str = "") -> str:
    """The percentage exactly as db.summaries.percentage computes it (it is a key)."""
    return f"(100.0 * CAST({table}score AS FLOAT)) / {table}max_score"


_X = {
    "sqlite": "julianday(recorded_at) - 2458849.5",
    "postgresql": "EXTRACT(EPOCH FROM recorded_at) / 86400.0 - 18262.0",
}


def upgrade() -> None:
    with op.batch_alter_table("students") as batch:
        batch.add_column(
            sa.Column("grade_count", sa.Integer(), nullable=False, server_default="0")
        )
        for name in _SUMS:
            batch.add_column(
                sa.Column(name, sa.Float(), nullable=False, server_default="0")
            )
    op.create_table(
        "student_subject_stats",
        sa.Column("student_id", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        *(sa.Column(name, sa.Float(), nullable=False) for name in _SUMS),
        sa.Column("min_p", sa.Float(), nullable=False),
        sa.Column("max_p", sa.Float(), nullable=False),
        sa.Column("latest_p", sa.Float(), nullable=False),
        sa.Column("latest_at", sa.DateTime(), nullable=False),
        sa.Column("latest_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["student_id"],
            ["students.student_id"],
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("student_id", "subject"),
    )
    op.create_index(
        "ix_student_subject_stats_latest",
        "student_subject_stats",
        ["subject", "latest_at", "latest_id"],
    )
    op.create_table(
        "grade_value_counts",
        sa.Column("grade_level", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("p", sa.Float(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("grade_level", "subject", "p"),
    )
    _fill(op.get_bind().dialect.name)
    # ix_grades_student_id_subject serves every lookup by student: one index less
    # to keep up on each grade written.
    op.drop_index("ix_grades_student_id", "grades")


def _fill(dialect: str) -> None:
    x = _X[dialect]
    op.execute(
        f"""
        INSERT INTO student_subject_stats (
            student_id, subject, n, sum_p, sum_x, sum_xx, sum_xp,
            min_p, max_p, latest_p, latest_at, latest_id
        )
        SELECT student_id, subject, COUNT(*), SUM(p), SUM(x), SUM(x * x), SUM(x * p),
               MIN(p), MAX(p),
               MAX(CASE WHEN rn = 1 THEN p END),
               MAX(CASE WHEN rn = 1 THEN recorded_at END),
               MAX(CASE WHEN rn = 1 THEN id END)
        FROM (
            SELECT id, student_id, subject, recorded_at, {_p()} AS p, {x} AS x,
                   ROW_NUMBER() OVER (
                       PARTITION BY student_id, subject
                       ORDER BY recorded_at DESC, id DESC
                   ) AS rn
            FROM grades
        ) AS g
        GROUP BY student_id, subject
        """
    )
    totals = ", ".join(
        f"{column} = COALESCE((SELECT SUM({source}) FROM student_subject_stats AS ss "
        f"WHERE ss.student_id = students.student_id), 0)"
        for column, source in (("grade_count", "n"), *((s, s) for s in _SUMS))
    )
    op.execute(f"UPDATE students SET {totals}")
    op.execute(
        f"""
        INSERT INTO grade_value_counts (grade_level, subject, p, n)
        SELECT s.grade_level, g.subject, {_p("g.")}, COUNT(*)
        FROM grades AS g JOIN students AS s ON s.student_id = g.student_id
        GROUP BY s.grade_level, g.subject, {_p("g.")}
        """
    )


def downgrade() -> None:
    op.create_index("ix_grades_student_id", "grades", ["student_id"])
    op.drop_table("grade_value_counts")
    op.drop_index("ix_student_subject_stats_latest", "student_subject_stats")
    op.drop_table("student_subject_stats")
    with op.batch_alter_table("students") as batch:
        for name in (*reversed(_SUMS), "grade_count"):
            batch.drop_column(name)
