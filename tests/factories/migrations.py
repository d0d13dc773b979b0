"""Databases at an older revision of the migration history, for the tests of what
later revisions do to them."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import column, insert, table
from sqlalchemy.engine import Connection

from db import models
from db.engine import Database
from db.migrations import HERE
from db.seed import generate


def upgrade_to(connection: Connection, target: str) -> None:
    """Upgrade the database on `connection` to revision `target` (not to head)."""
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["connection"] = connection
    command.upgrade(config, target)


# The students' columns of revision 0001 (later revisions add columns with defaults).
FIRST_COLUMNS = ("student_id", "name", "email", "grade_level", "created_at")


async def seed_old_schema(
    database: Database, *, students: int, grades_per_student: int, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The seed's rows written into a database at an older revision, through its
    first revision's student columns (the models' may have more); returns them."""
    student_rows, grade_rows = generate(students, grades_per_student, seed)
    old_students = table("students", *(column(name) for name in FIRST_COLUMNS))
    async with database.writing() as session:
        await session.execute(
            insert(old_students),
            [{k: row[k] for k in FIRST_COLUMNS} for row in student_rows],
        )
        await session.execute(insert(models.Grade.__table__), grade_rows)
    return student_rows, grade_rows
