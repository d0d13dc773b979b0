"""Deterministic demo data: students with a school year of grades, from one seed."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select
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
CHUNK_SIZE = 5_000

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

Row = dict[str, Any]


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
    rng = random.Random(seed)
    span_days = (SCHOOL_YEAR_END - SCHOOL_YEAR_START).days
    middle = span_days / 2
    student_rows: list[Row] = []
    grade_rows: list[Row] = []
    for number in range(1, students + 1):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        student_id = f"S{number:05d}"
        student_rows.append(
            {
                "student_id": student_id,
                "name": f"{first} {last}",
                "email": f"{first.lower()}.{last.lower()}.{number:05d}@school.example",
                "grade_level": rng.randint(1, 12),
                "created_at": CREATED_AT,
            }
        )
        ability = rng.gauss(78.0, 8.0)
        kind = rng.random()
        if kind < 0.06:
            trend = rng.gauss(-4.5, 1.0)
        elif kind < 0.18:
            trend = rng.gauss(3.0, 1.0)
        else:
            trend = rng.gauss(0.0, 0.6)
        for k in range(grades_per_student):
            # Spread evenly over the year (one slot each), at a random school hour.
            day = int((k + rng.random()) * span_days / grades_per_student)
            subject = SUBJECTS[(number + k) % len(SUBJECTS)]
            score = (
                ability
                + SUBJECT_DIFFICULTY[subject]
                + trend * (day - middle) / 30.0
                + rng.gauss(0.0, 6.0)
            )
            grade_rows.append(
                {
                    "student_id": student_id,
                    "subject": subject,
                    "score": round(min(100.0, max(0.0, score)), 1),
                    "max_score": 100.0,
                    "recorded_at": SCHOOL_YEAR_START
                    + timedelta(days=day, minutes=rng.randrange(7 * 60)),
                }
            )
    return student_rows, grade_rows


async def seed(
    database: Database,
    *,
    students: int = 1000,
    grades_per_student: int = 20,
    seed: int = 42,
    chunk_size: int = CHUNK_SIZE,
) -> tuple[int, int]:
    """Insert `generate(...)`'s rows in one write transaction; the tables must
    exist (`db.migrations.upgrade`). Returns (students, grades) inserted."""
    student_rows, grade_rows = generate(students, grades_per_student, seed)
    async with database.writing() as session:
        for table, rows in ((models.Student, student_rows), (models.Grade, grade_rows)):
            for chunk in chunks(rows, chunk_size):
                await session.execute(insert(table), chunk)
        await summaries.rebuild(session)
    return len(student_rows), len(grade_rows)


async def is_empty(database: Database) -> bool:
    """True when the students table has no rows."""
    async with database.sessions() as session:
        result = await session.execute(select(col(models.Student.id)).limit(1))
        return result.first() is None
