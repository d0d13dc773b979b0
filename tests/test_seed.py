"""Seeding: deterministic rows (the same as they always were, stored as SQLAlchemy
would store them), realistic ranges, an at-risk minority, --if-empty, the time taken."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text
from sqlmodel import SQLModel

from db import models
from db.engine import Database, create_database
from db.migrations import create_at_head, upgrade
from db.seed import (
    CREATED_AT,
    SCHOOL_YEAR_END,
    SCHOOL_YEAR_START,
    SUBJECTS,
    generate,
    generate_tuples,
    is_empty,
    seed,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STUDENTS = SQLModel.metadata.tables["students"]
GRADES = SQLModel.metadata.tables["grades"]
AT_RISK_AVERAGE = 65.0  # the settings' defaults (AT_RISK_AVERAGE, AT_RISK_TREND)
AT_RISK_TREND = -2.0  # points per 30 days
# `python -m db.seed`'s line on success: what was seeded, the seed, and the seconds.
SEEDED_LINE = re.compile(
    r"seeded (\d+ students and \d+ grades) \(seed (-?\d+)\) in (\d+\.\d\d) s\n"
)
# sha256 of repr(generate(...)) as the generator made them before it was sped up:
# the data sets (and the tests and figures resting on them) never change.
DIGESTS = {
    (1000, 20, 42): "ec4d26efe4a813a0260bbeb45e45b5366ffd141f65164ecc80b8d70ba12d6623",
    (50000, 20, 42): "d4037a0d2e353ebb83030f10f33337b87641a4d576ee3c77b98a56539865f645",
}


async def open_database(path: Path) -> Database:
    database = create_database(f"sqlite+aiosqlite:///{path}")
    await create_at_head(database)
    return database


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(tmp_path / "seed.db")
    yield database
    await database.dispose()


async def all_rows(database: Database) -> tuple[list[tuple[Any, ...]], ...]:
    s, g = STUDENTS.c, GRADES.c
    async with database.sessions() as session:
        students = await session.execute(select(*s).order_by(s.id))
        grades = await session.execute(select(*g).order_by(g.id))
        return [tuple(r) for r in students], [tuple(r) for r in grades]


async def counts(database: Database) -> tuple[int, int]:
    async with database.sessions() as session:
        students = await session.scalar(
            select(func.count()).select_from(models.Student)
        )
        grades = await session.scalar(select(func.count()).select_from(models.Grade))
    return int(students or 0), int(grades or 0)


def run_seed(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "db.seed", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, "DATABASE_URL": db_url},
        capture_output=True,
        text=True,
        timeout=120,
    )


def at_risk(grades: list[dict[str, Any]]) -> tuple[float, float]:
    """(average percentage, least-squares slope in points per 30 days)."""
    start = min(g["recorded_at"] for g in grades)
    xs = [(g["recorded_at"] - start).total_seconds() / 86400 / 30 for g in grades]
    ys = [100 * g["score"] / g["max_score"] for g in grades]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    variance = sum((x - mean_x) ** 2 for x in xs)
    return mean_y, covariance / variance


async def test_seeds_the_requested_counts(database: Database) -> None:
    inserted = await seed(database, students=30, grades_per_student=4, seed=1)

    assert inserted == (30, 120)
    assert await counts(database) == (30, 120)
    assert not await is_empty(database)


async def test_is_empty_on_a_new_database(database: Database) -> None:
    assert await is_empty(database)


async def test_same_seed_gives_identical_databases(tmp_path: Path) -> None:
    first = await open_database(tmp_path / "a.db")
    second = await open_database(tmp_path / "b.db")
    try:
        await seed(first, students=50, grades_per_student=10, seed=7, chunk_size=64)
        await seed(second, students=50, grades_per_student=10, seed=7)

        rows_first, rows_second = await all_rows(first), await all_rows(second)
    finally:
        await first.dispose()
        await second.dispose()

    assert rows_first == rows_second
    assert len(rows_first[0]) == 50
    assert len(rows_first[1]) == 500


async def stored(database: Database) -> tuple[list[tuple[Any, ...]], ...]:
    """Every row as the database holds it (no SQLAlchemy types on the way back),
    with SQLite's storage class of each value."""
    async with database.sessions() as session:
        students = await session.execute(
            text(
                "SELECT id, student_id, name, email, grade_level, created_at, "
                "typeof(grade_level), typeof(created_at) FROM students ORDER BY id"
            )
        )
        grades = await session.execute(
            text(
                "SELECT id, student_id, subject, score, max_score, recorded_at, "
                "typeof(score), typeof(max_score), typeof(recorded_at) "
                "FROM grades ORDER BY id"
            )
        )
        return [tuple(r) for r in students], [tuple(r) for r in grades]


async def test_seed_stores_the_rows_as_sqlalchemy_inserts_them(tmp_path: Path) -> None:
    fast = await open_database(tmp_path / "fast.db")
    reference = await open_database(tmp_path / "reference.db")
    try:
        await seed(fast, students=40, grades_per_student=6, seed=11, chunk_size=50)
        student_rows, grade_rows = generate(40, 6, seed=11)
        async with reference.writing() as session:
            await session.execute(insert(models.Student), student_rows)
            await session.execute(insert(models.Grade), grade_rows)

        fast_rows, reference_rows = await stored(fast), await stored(reference)
    finally:
        await fast.dispose()
        await reference.dispose()

    assert fast_rows == reference_rows
    assert len(fast_rows[0]) == 40
    assert len(fast_rows[1]) == 240
    assert fast_rows[1][0][-3:] == ("real", "real", "text")


async def test_seed_ends_with_the_planner_statistics(database: Database) -> None:
    await seed(database, students=30, grades_per_student=4, seed=1)

    async with database.sessions() as session:
        stats = dict(
            (await session.execute(text("SELECT idx, stat FROM sqlite_stat1"))).all()
        )

    assert stats["ix_grades_student_id_subject"].split()[:2] == ["120", "4"]
    assert stats["ix_students_grade_level"].split()[0] == "30"


async def test_seed_on_each_backend_stores_the_generated_rows(
    scratch_url: str,
) -> None:
    database = create_database(scratch_url)
    try:
        await upgrade(database)
        inserted = await seed(
            database, students=25, grades_per_student=4, seed=5, chunk_size=30
        )
        students, grades = await all_rows(database)
    finally:
        await database.dispose()

    expected_students, expected_grades = generate(25, 4, seed=5)
    assert inserted == (25, 100)
    assert [row[:6] for row in students] == [  # the columns the seed fills
        (number, *s.values()) for number, s in enumerate(expected_students, start=1)
    ]
    assert grades == [
        (number, *g.values()) for number, g in enumerate(expected_grades, start=1)
    ]


@pytest.mark.parametrize("arguments", sorted(DIGESTS))
def test_rows_are_those_the_seed_always_made(arguments: tuple[int, int, int]) -> None:
    digest = hashlib.sha256(repr(generate(*arguments)).encode()).hexdigest()

    assert digest == DIGESTS[arguments]


def test_tuples_are_the_rows_in_column_order() -> None:
    students, grades = generate(30, 7, seed=8)

    student_tuples, grade_tuples = generate_tuples(30, 7, seed=8)
    stamped = generate_tuples(30, 7, seed=8, stamp=datetime.isoformat)

    assert student_tuples == [tuple(s.values()) for s in students]
    assert grade_tuples == [tuple(g.values()) for g in grades]
    assert stamped[0] == [(*s[:4], s[4].isoformat()) for s in student_tuples]
    assert stamped[1] == [(*g[:4], g[4].isoformat()) for g in grade_tuples]


def test_rows_depend_only_on_the_seed() -> None:
    assert generate(20, 5, seed=3) == generate(20, 5, seed=3)
    assert generate(20, 5, seed=3) != generate(20, 5, seed=4)
    students, grades = generate(2, 2, seed=42)
    assert [s["student_id"] for s in students] == ["S00001", "S00002"]
    assert [g["student_id"] for g in grades] == ["S00001", "S00001", "S00002", "S00002"]


def test_values_have_the_documented_shape() -> None:
    students, grades = generate(1000, 20, seed=42)

    assert len(students) == 1000
    assert len(grades) == 20_000
    assert [s["student_id"] for s in students[:2]] == ["S00001", "S00002"]
    assert students[-1]["student_id"] == "S01000"
    assert len({s["email"] for s in students}) == 1000
    for number, student in enumerate(students, start=1):
        first, last = student["name"].split(" ")
        assert student["email"] == (
            f"{first.lower()}.{last.lower()}.{number:05d}@school.example"
        )
        assert student["created_at"] == CREATED_AT
    assert {s["grade_level"] for s in students} == set(range(1, 13))
    assert {g["subject"] for g in grades} == set(SUBJECTS)
    assert all(0.0 <= g["score"] <= 100.0 for g in grades)
    assert all(g["score"] == round(g["score"], 1) for g in grades)
    assert {g["max_score"] for g in grades} == {100.0}
    assert all(SCHOOL_YEAR_START <= g["recorded_at"] < SCHOOL_YEAR_END for g in grades)
    assert min(g["recorded_at"] for g in grades) < datetime(2025, 9, 20)
    assert max(g["recorded_at"] for g in grades) > datetime(2026, 6, 10)
    scores = [g["score"] for g in grades]
    assert 70.0 < sum(scores) / len(scores) < 85.0
    assert any(score < 40.0 for score in scores)
    assert any(score == 100.0 for score in scores)
    per_student: dict[str, int] = defaultdict(int)
    for g in grades:
        per_student[g["student_id"]] += 1
    assert set(per_student.values()) == {20}
    email = re.compile(r"[a-z]+\.[a-z]+\.\d{5}@school\.example")
    assert all(email.fullmatch(s["email"]) for s in students)


@pytest.mark.parametrize("seed_value", [42, 1, 2024])
def test_flags_a_meaningful_minority_as_at_risk(seed_value: int) -> None:
    _, grades = generate(1000, 20, seed=seed_value)
    by_student: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for grade in grades:
        by_student[grade["student_id"]].append(grade)

    figures = [at_risk(rows) for rows in by_student.values()]
    low = sum(1 for average, _ in figures if average < AT_RISK_AVERAGE)
    declining = sum(1 for _, slope in figures if slope < AT_RISK_TREND)
    flagged = sum(
        1
        for average, slope in figures
        if average < AT_RISK_AVERAGE or slope < AT_RISK_TREND
    )
    improving = sum(1 for _, slope in figures if slope > 2.0)

    assert 50 <= flagged <= 200  # 5-20% of 1000 students
    assert low >= 20
    assert declining >= 20
    assert improving >= 50


async def test_cli_seeds_then_if_empty_does_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"

    first = run_seed(url, "--students", "5", "--grades-per-student", "2", "--if-empty")
    again = run_seed(url, "--students", "5", "--grades-per-student", "2", "--if-empty")
    refused = run_seed(url, "--students", "5")

    printed = SEEDED_LINE.fullmatch(first.stdout)
    assert (first.returncode, first.stderr) == (0, "")
    assert printed is not None, first.stdout
    assert printed.group(1, 2) == ("5 students and 10 grades", "42")
    assert 0.0 < float(printed.group(3)) < 120.0
    assert (again.returncode, again.stdout, again.stderr) == (
        0,
        "the database already has 5 students: nothing seeded\n",
        "",
    )
    assert (refused.returncode, refused.stdout, refused.stderr) == (
        1,
        "",
        "error: the database already has 5 students; seed an empty database, "
        "or pass --if-empty to skip\n",
    )
    database = await open_database(tmp_path / "cli.db")
    try:
        assert await counts(database) == (5, 10)
    finally:
        await database.dispose()


async def test_cli_is_deterministic_and_honours_database_url(tmp_path: Path) -> None:
    unused = tmp_path / "unused.db"
    args = ("--students", "20", "--grades-per-student", "3", "--seed", "9")

    one_url = f"sqlite:///{tmp_path / 'one.db'}"
    two_url = f"sqlite+aiosqlite:///{tmp_path / 'two.db'}"

    one = run_seed(f"sqlite:///{unused}", *args, "--database-url", one_url)
    two = run_seed(f"sqlite:///{unused}", *args, "--database-url", two_url)

    assert (one.returncode, two.returncode) == (0, 0)
    for done in (one, two):
        printed = SEEDED_LINE.fullmatch(done.stdout)
        assert printed is not None, done.stdout
        assert printed.group(1, 2) == ("20 students and 60 grades", "9")
    assert not unused.exists()
    first = await open_database(tmp_path / "one.db")
    second = await open_database(tmp_path / "two.db")
    try:
        assert await all_rows(first) == await all_rows(second)
        students, grades = await all_rows(first)
    finally:
        await first.dispose()
        await second.dispose()
    expected_students, expected_grades = generate(20, 3, seed=9)
    assert [row[1:6] for row in students] == [  # the columns the seed fills
        tuple(s.values()) for s in expected_students
    ]
    assert [row[1:] for row in grades] == [tuple(g.values()) for g in expected_grades]


def test_cli_rejects_a_bad_count(tmp_path: Path) -> None:
    done = run_seed(f"sqlite:///{tmp_path / 'x.db'}", "--students", "0")

    assert done.returncode == 2
    assert "argument --students: must be at least 1, not 0" in done.stderr
    assert not (tmp_path / "x.db").exists()
