"""Deterministic demo data: students with a school year of grades, from one seed."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Column, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from db import models, summaries
from db.engine import Database
from db.records import chunks

SUBJECTS = ("Math", "Science", "English", "History", "Art")
# Points added to a student's ability in each subject: Math is the hardest here.
SUBJECT_DIFFICULTY = {
    "Math": -4.0,
    "Science": -2.0,
    "English": 1.0,
    "History": 0.0,
    "Art": 5.0,
}
# A fixed school year, never "now": the same seed gives the same rows on any day.
SCHOOL_YEAR_START = datetime(2025, 9, 1, 8, 0)
SCHOOL_YEAR_END = datetime(2026, 6, 30, 8, 0)
CREATED_AT = datetime(2025, 8, 25, 8, 0)
# Grades are recorded at a random minute of the first seven school hours.
SCHOOL_MINUTES = 7 * 60
# Rows per executemany (SQLite) or COPY (PostgreSQL) call.
CHUNK_SIZE = 50_000

FIRST_NAMES = (
    "Ava", "Ben", "Chloe", "Daniel", "Emma", "Felix", "Grace", "Hugo", "Isla",
    "Jack", "Kai", "Lena", "Mason", "Nora", "Oscar", "Priya", "Quinn", "Ruby",
    "Sam", "Tara", "Umar", "Vera", "Wes", "Xena", "Yusuf", "Zoe", "Aiden", "Mia",
    "Leo", "Sofia",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "Johnson", "Garcia", "Brown", "Miller", "Davis", "Martinez", "Lopez",
    "Wilson", "Anderson", "Thomas", "Moore", "Jackson", "Lee", "Walker", "Hall",
    "Young", "King", "Wright", "Scott", "Green", "Baker", "Adams", "Nelson", "Hill",
    "Nguyen", "Patel", "Kim", "Cohen", "Novak",
)  # fmt: skip

# The inserted columns, in the order of the tuples `generate_tuples` makes.
STUDENT_COLUMNS = ("student_id", "name", "email", "grade_level", "created_at")
GRADE_COLUMNS = ("student_id", "subject", "score", "max_score", "recorded_at")

Row = dict[str, Any]
Rows = list[tuple[Any, ...]]


def generate(
    students: int = 1000, grades_per_student: int = 20, seed: int = 42
) -> tuple[list[Row], list[Row]]:
    """Student and grade rows as dicts for `insert(models.Student)` and
    `insert(models.Grade)`; the same arguments always give the same rows.

    A score is the student's ability, plus the subject's difficulty, plus the
    student's trend (points per 30 days, centred on mid-year), plus noise. Most
    trends are flat; about one student in sixteen declines clearly and about one in
    eight improves.
    """
    student_rows, grade_rows = generate_tuples(students, grades_per_student, seed)
    return (
        [dict(zip(STUDENT_COLUMNS, row, strict=True)) for row in student_rows],
        [dict(zip(GRADE_COLUMNS, row, strict=True)) for row in grade_rows],
    )


def generate_tuples(
    students: int,
    grades_per_student: int,
    seed: int,
    stamp: Callable[[datetime], Any] | None = None,
) -> tuple[Rows, Rows]:
    """`generate`'s rows as tuples in STUDENT_COLUMNS and GRADE_COLUMNS order, the
    fast way (a million grades are made in about a second and a half): the random
    draws and the arithmetic are exactly `generate`'s. `stamp` maps each datetime
    to the value a driver is given for it, once per distinct value."""
    rng = random.Random(seed)
    # Bound once: a million grades make three million draws.
    draw, gauss, randrange = rng.random, rng.gauss, rng.randrange
    span_days = (SCHOOL_YEAR_END - SCHOOL_YEAR_START).days
    middle = span_days / 2
    convert = stamp if stamp is not None else _same
    created_at = convert(CREATED_AT)
    # A grade's time is one of span_days x SCHOOL_MINUTES values: made once each.
    times: dict[int, Any] = {}
    per_subject = [(s, SUBJECT_DIFFICULTY[s]) for s in SUBJECTS]
    student_rows: Rows = []
    grade_rows: Rows = []
    add_student, add_grade = student_rows.append, grade_rows.append
    for number in range(1, students + 1):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        student_id = f"S{number:05d}"
        add_student(
            (
                student_id,
                f"{first} {last}",
                f"{first.lower()}.{last.lower()}.{number:05d}@school.example",
                rng.randint(1, 12),
                created_at,
            )
        )
        ability = rng.gauss(78.0, 8.0)
        kind = draw()
        if kind < 0.06:
            trend = gauss(-4.5, 1.0)
        elif kind < 0.18:
            trend = gauss(3.0, 1.0)
        else:
            trend = gauss(0.0, 0.6)
        for k in range(grades_per_student):
            # Spread evenly over the year (one slot each), at a random school hour.
            day = int((k + draw()) * span_days / grades_per_student)
            subject, difficulty = per_subject[(number + k) % len(SUBJECTS)]
            score = (
                ability + difficulty + trend * (day - middle) / 30.0 + gauss(0.0, 6.0)
            )
            # min(100.0, max(0.0, score)), spelt out: it runs a million times.
            if score >= 100.0:
                score = 100.0
            elif score <= 0.0:
                score = 0.0
            key = day * SCHOOL_MINUTES + randrange(SCHOOL_MINUTES)
            recorded_at = times.get(key)
            if recorded_at is None:
                day_of, minute = divmod(key, SCHOOL_MINUTES)
                recorded_at = times[key] = convert(
                    SCHOOL_YEAR_START + timedelta(days=day_of, minutes=minute)
                )
            add_grade((student_id, subject, round(score, 1), 100.0, recorded_at))
    return student_rows, grade_rows


async def seed(
    database: Database,
    *,
    students: int = 1000,
    grades_per_student: int = 20,
    seed: int = 42,
    chunk_size: int = CHUNK_SIZE,
) -> tuple[int, int]:
    """Insert `generate(...)`'s rows in one write transaction, then `after_rows`;
    the tables must exist (`db.migrations.upgrade`). Returns (students, grades)
    inserted.

    The rows go straight to the driver, as SQLAlchemy would have stored them:
    executemany of plain tuples on SQLite (a million grades in about four seconds
    instead of twelve), COPY on PostgreSQL."""
    async with database.writing() as session:
        connection = await session.connection()
        dialect = connection.dialect
        driver = (await connection.get_raw_connection()).driver_connection
        if dialect.name == "sqlite":
            stamp = _bind_processor(models.Grade.__table__.c.recorded_at, dialect)
            student_rows, grade_rows = generate_tuples(
                students, grades_per_student, seed, stamp
            )
            # Index pages of a million rows stay in memory until the commit.
            await session.execute(text("PRAGMA cache_size = -262144"))
            for table, columns, rows in (
                ("students", STUDENT_COLUMNS, student_rows),
                ("grades", GRADE_COLUMNS, grade_rows),
            ):
                statement = _sqlite_insert(table, columns)
                for chunk in chunks(rows, chunk_size):
                    await driver.executemany(statement, chunk)
        else:
            student_rows, grade_rows = generate_tuples(
                students, grades_per_student, seed
            )
            # Through SQLAlchemy, so that the driver's transaction is open before
            # COPY runs on the driver connection: no other writer adds rows
            # between the seed's.
            await session.execute(
                text("LOCK TABLE students, grades IN SHARE ROW EXCLUSIVE MODE")
            )
            if not driver.is_in_transaction():
                raise RuntimeError("the seed's COPY would run outside its transaction")
            for table, columns, rows in (
                ("students", STUDENT_COLUMNS, student_rows),
                ("grades", GRADE_COLUMNS, grade_rows),
            ):
                for chunk in chunks(rows, chunk_size):
                    await driver.copy_records_to_table(
                        table, records=chunk, columns=columns
                    )
        await after_rows(session)
    return len(student_rows), len(grade_rows)


async def after_rows(session: AsyncSession) -> None:
    """The seed's step once its students and grades are in, in the same
    transaction: whatever is derived from those rows is brought up to date here.
    That is the summaries the analytics read (db.summaries), then the planner's
    statistics (ANALYZE), which a million new rows change."""
    await summaries.rebuild(session)
    await session.execute(text("ANALYZE students"))
    await session.execute(text("ANALYZE grades"))


async def is_empty(database: Database) -> bool:
    """True when the students table has no rows."""
    async with database.sessions() as session:
        result = await session.execute(select(col(models.Student.id)).limit(1))
        return result.first() is None


def _same(value: datetime) -> datetime:
    return value


def _bind_processor(column: Column[Any], dialect: Any) -> Callable[[Any], Any]:
    """What SQLAlchemy turns a value of `column` into before the driver sees it."""
    processor = column.type.dialect_impl(dialect).bind_processor(dialect)
    return processor if processor is not None else _same


def _sqlite_insert(table: str, columns: Sequence[str]) -> str:
    names = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    return f"INSERT INTO {table} ({names}) VALUES ({marks})"
