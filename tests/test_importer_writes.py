"""CSV import writes: import_rows all or nothing, and the command line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text
from sqlmodel import SQLModel

from db import models
from db.csvrows import RowProblem, parse_grades_csv, parse_students_csv
from db.engine import Database, create_database
from db.importer import ImportRejected, ImportSummary, import_rows
from db.migrations import create_at_head
from db.validation import (
    InputErrorCode,
    new_grade,
    new_student,
    utcnow,
)
from tests.factories.importer import BAD_GRADES, GOOD_GRADES, GOOD_STUDENTS, NOW

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STUDENTS = SQLModel.metadata.tables["students"]
GRADES = SQLModel.metadata.tables["grades"]
BAD_STUDENTS = (
    "student_id,name,email,grade_level\n"
    "S10001,Ada Lovelace,ada@school.example,9\n"
    "S10002,,grace@school.example,13\n"
    "S10001,Alan Turing,alan@school.example,10\n"
    "S10004,Bad Mail,not-an-email,7\n"
    "S00001,Existing Again,NEW@school.example,5\n"
    "S10006,Same Mail,s00001@school.example,x\n"
    "S10007,Taken Mail,S00001@School.Example,4\n"
)
EXPECTED_BAD_REPORT = [
    "students.csv line 3: name: REQUIRED: name is required",
    "students.csv line 3: gradeLevel: OUT_OF_RANGE: "
    "gradeLevel must be between 1 and 12",
    "students.csv line 4: studentId: DUPLICATE: "
    "studentId 'S10001' is already on line 2",
    "students.csv line 5: email: INVALID_EMAIL: 'not-an-email' is not an email address",
    "students.csv line 6: studentId: DUPLICATE: studentId 'S00001' already exists",
    "students.csv line 7: gradeLevel: INVALID_FORMAT: "
    "gradeLevel must be a whole number, not 'x'",
    "students.csv line 8: email: DUPLICATE: "
    "email 's00001@school.example' already exists",
    "grades.csv line 3: score: OUT_OF_RANGE: score must be between 0 and 100",
    "grades.csv line 4: score: INVALID_FORMAT: score must be a number, not 'abc'",
    "grades.csv line 6: studentId: NOT_FOUND: no student with studentId 'S99999'",
    "grades.csv line 7: maxScore: OUT_OF_RANGE: maxScore must be above 0",
    "grades.csv line 8: recordedAt: INVALID_FORMAT: "
    "recordedAt must be an ISO 8601 date and time, not 'yesterday'",
    "grades.csv line 10: row: INVALID_FORMAT: expected 5 values, found 3",
    "grades.csv line 11: studentId: REQUIRED: studentId is required",
    "grades.csv line 11: score: NOT_FINITE: score must be finite",
]


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'import.db'}"


@pytest.fixture
async def database(db_url: str) -> AsyncIterator[Database]:
    """A temp database holding student S00001 with one grade."""
    database = create_database(db_url)
    await create_at_head(database)
    async with database.writing() as session:
        await session.execute(
            insert(models.Student),
            [
                {
                    "student_id": "S00001",
                    "name": "Existing Student",
                    "email": "s00001@school.example",
                    "grade_level": 5,
                    "created_at": datetime(2025, 8, 25, 8, 0),
                }
            ],
        )
        await session.execute(
            insert(models.Grade),
            [
                {
                    "student_id": "S00001",
                    "subject": "Math",
                    "score": 60.0,
                    "max_score": 100.0,
                    "recorded_at": datetime(2025, 9, 15, 9, 0),
                }
            ],
        )
    yield database
    await database.dispose()


async def counts(database: Database) -> tuple[int, int]:
    async with database.sessions() as session:
        students = await session.scalar(
            select(func.count()).select_from(models.Student)
        )
        grades = await session.scalar(select(func.count()).select_from(models.Grade))
    return int(students or 0), int(grades or 0)


async def student_rows(database: Database) -> list[tuple[Any, ...]]:
    s = STUDENTS.c
    async with database.sessions() as session:
        result = await session.execute(
            select(s.student_id, s.name, s.email, s.grade_level).order_by(s.id)
        )
        return [tuple(row) for row in result]


async def grade_rows(database: Database) -> list[tuple[Any, ...]]:
    g = GRADES.c
    async with database.sessions() as session:
        result = await session.execute(
            select(
                g.student_id, g.subject, g.score, g.max_score, g.recorded_at
            ).order_by(g.id)
        )
        return [tuple(row) for row in result]


def run_cli(
    module: str, db_url: str, *args: str, cwd: Path = PROJECT_ROOT
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": db_url}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- import_rows -------------------------------------------------------------------


async def test_imports_students_then_grades(database: Database) -> None:
    students = parse_students_csv(GOOD_STUDENTS)
    grades = parse_grades_csv(GOOD_GRADES, now=NOW)
    chunks: list[int] = []

    summary = await import_rows(
        database,
        students.rows,
        grades.rows,
        student_lines=students.lines,
        grade_lines=grades.lines,
        progress=chunks.append,
        chunk_size=3,
    )

    assert summary == ImportSummary(students=2, grades=4)
    assert chunks == [2, 3, 1]
    assert await student_rows(database) == [
        ("S00001", "Existing Student", "s00001@school.example", 5),
        ("S10001", "Ada Lovelace", "ada@school.example", 9),
        ("S10002", "Hopper, Grace", "grace@school.example", 12),
    ]
    assert await grade_rows(database) == [
        ("S00001", "Math", 60.0, 100.0, datetime(2025, 9, 15, 9, 0)),
        ("S10001", "Math", 95.5, 100.0, datetime(2025, 10, 1, 8, 0)),
        ("S10002", "Science", 18.0, 20.0, datetime(2025, 10, 1, 8, 30)),
        ("S00001", "Art", 70.0, 100.0, datetime(2025, 10, 2, 9, 15)),
        ("S10001", "History", 88.0, 100.0, NOW),
    ]


async def test_stores_times_in_the_format_sqlalchemy_writes(
    database: Database,
) -> None:
    grades = parse_grades_csv(GOOD_GRADES, now=NOW)

    await import_rows(database, [], grades.rows[2:3])

    async with database.sessions() as session:
        stored = list(
            await session.scalars(text("SELECT recorded_at FROM grades ORDER BY id"))
        )
        later = await session.scalar(
            select(func.count()).where(
                GRADES.c.recorded_at >= datetime(2025, 10, 2, 9, 15)
            )
        )
    # The first row went through SQLAlchemy's DateTime type, the second did not.
    assert stored == ["2025-09-15 09:00:00.000000", "2025-10-02 09:15:00.000000"]
    assert later == 1


async def test_rejects_conflicts_with_the_database_and_writes_nothing(
    database: Database,
) -> None:
    students = [
        new_student("S00001", "Again", "again@school.example", 3),
        new_student("S10001", "New", "S00001@school.example", 3),
        new_student("S10001", "Twice", "twice@school.example", 3),
    ]
    grades = [
        new_grade("S10001", "Math", 50.0, recorded_at=NOW),
        new_grade("S77777", "Math", 50.0, recorded_at=NOW),
    ]

    with pytest.raises(ImportRejected) as caught:
        await import_rows(database, students, grades)

    assert [p.describe("s") for p in caught.value.student_problems] == [
        "s line 2: studentId: DUPLICATE: studentId 'S00001' already exists",
        "s line 3: email: DUPLICATE: email 's00001@school.example' already exists",
        "s line 4: studentId: DUPLICATE: studentId 'S10001' is already on line 3",
    ]
    assert caught.value.grade_problems == [
        RowProblem(
            1,
            3,
            "studentId",
            InputErrorCode.NOT_FOUND,
            "no student with studentId 'S77777'",
        )
    ]
    assert await counts(database) == (1, 1)


async def test_imports_many_grades_in_chunks(database: Database) -> None:
    lines = ["student_id,subject,score,max_score,recorded_at"]
    lines += [
        f"S00001,Math,{i % 101},100,2025-10-01T08:{i % 60:02d}:00Z"
        for i in range(25_000)
    ]
    grades = parse_grades_csv("\n".join(lines))
    chunks: list[int] = []

    summary = await import_rows(database, [], grades.rows, progress=chunks.append)

    assert summary == ImportSummary(students=0, grades=25_000)
    assert chunks == [10_000, 10_000, 5_000]
    assert await counts(database) == (1, 25_001)
    # A large import rebuilds the grade indexes: every one is back, and used.
    assert await grade_indexes(database) == [
        "ix_grades_recorded_at",
        "ix_grades_student_id_subject",
        "ix_grades_subject",
    ]
    async with database.sessions() as session:
        plan = (
            await session.execute(
                text("EXPLAIN QUERY PLAN SELECT id FROM grades WHERE subject = 'Math'")
            )
        ).all()
    assert "ix_grades_subject" in str(plan)


async def grade_indexes(database: Database) -> list[str]:
    async with database.sessions() as session:
        rows = await session.execute(
            text(
                "SELECT name FROM sqlite_master WHERE type = 'index' "
                "AND tbl_name = 'grades' AND sql IS NOT NULL ORDER BY name"
            )
        )
        return [row[0] for row in rows]


async def test_a_rejected_large_import_leaves_rows_and_indexes_as_they_were(
    database: Database,
) -> None:
    lines = ["student_id,subject,score,max_score,recorded_at"]
    lines += ["S00001,Math,50,100,2025-10-01T08:00:00Z" for _ in range(20_000)]
    lines.append("S99999,Math,50,100,2025-10-01T08:00:00Z")  # unknown student
    grades = parse_grades_csv("\n".join(lines))

    with pytest.raises(ImportRejected):
        await import_rows(database, [], grades.rows)

    assert await counts(database) == (1, 1)
    assert len(await grade_indexes(database)) == 3


# --- command line ------------------------------------------------------------------


async def test_cli_imports_good_files(
    database: Database, db_url: str, tmp_path: Path
) -> None:
    (tmp_path / "students.csv").write_text(GOOD_STUDENTS)
    (tmp_path / "grades.csv").write_text(GOOD_GRADES)
    before = utcnow()

    done = run_cli(
        "db.importer",
        db_url,
        "--students",
        str(tmp_path / "students.csv"),
        "--grades",
        str(tmp_path / "grades.csv"),
    )

    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        r"imported 2 students and 4 grades in \d+\.\d\d s\n", done.stdout
    ), done.stdout
    assert done.stderr == ""
    assert await counts(database) == (3, 5)
    last = (await grade_rows(database))[-1]
    assert last[:4] == ("S10001", "History", 88.0, 100.0)
    assert before <= last[4] <= utcnow()


async def test_cli_reports_every_bad_row_and_imports_nothing(
    database: Database, db_url: str, tmp_path: Path
) -> None:
    (tmp_path / "students.csv").write_text(BAD_STUDENTS)
    (tmp_path / "grades.csv").write_text(BAD_GRADES)

    done = run_cli(
        "db.importer",
        db_url,
        "--students",
        str(tmp_path / "students.csv"),
        "--grades",
        str(tmp_path / "grades.csv"),
    )

    assert done.returncode == 1
    assert done.stderr.splitlines() == EXPECTED_BAD_REPORT
    assert done.stdout == ""
    assert await counts(database) == (1, 1)


async def test_cli_rejects_grades_for_unknown_students(
    database: Database, db_url: str, tmp_path: Path
) -> None:
    (tmp_path / "grades.csv").write_text(
        "student_id,subject,score\nS00001,Art,90\nS00002,Art,80\n"
    )

    done = run_cli("db.importer", db_url, "--grades", str(tmp_path / "grades.csv"))

    assert done.returncode == 1
    assert done.stderr == (
        "grades.csv line 3: studentId: NOT_FOUND: no student with studentId 'S00002'\n"
    )
    assert await counts(database) == (1, 1)


async def test_cli_rejects_a_wrong_header(
    database: Database, db_url: str, tmp_path: Path
) -> None:
    (tmp_path / "grades.csv").write_text("student,subject,score\nS00001,Art,90\n")

    done = run_cli("db.importer", db_url, "--grades", str(tmp_path / "grades.csv"))

    assert done.returncode == 1
    assert done.stderr == (
        "grades.csv line 1: header: INVALID_FORMAT: unknown column 'student', "
        "missing column 'student_id'; "
        "expected student_id,subject,score,max_score,recorded_at\n"
    )
    assert await counts(database) == (1, 1)


async def test_cli_database_url_option_overrides_the_environment(
    tmp_path: Path,
) -> None:
    (tmp_path / "students.csv").write_text(GOOD_STUDENTS)
    other = tmp_path / "other.db"

    done = run_cli(
        "db.importer",
        f"sqlite:///{tmp_path / 'unused.db'}",
        "--students",
        str(tmp_path / "students.csv"),
        "--database-url",
        f"sqlite:///{other}",
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("imported 2 students and 0 grades in ")
    assert other.exists()
    assert not (tmp_path / "unused.db").exists()


async def test_cli_without_files_is_a_usage_error(db_url: str, tmp_path: Path) -> None:
    done = run_cli("db.importer", db_url)

    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "python -m db.importer: error: give --students, --grades or both"
    )
    assert not (tmp_path / "import.db").exists()


async def test_cli_reports_a_missing_file(db_url: str, tmp_path: Path) -> None:
    missing = tmp_path / "missing.csv"

    done = run_cli("db.importer", db_url, "--grades", str(missing))

    assert done.returncode == 2
    assert done.stderr == (f"error: cannot read {missing}: No such file or directory\n")
    assert not (tmp_path / "import.db").exists()


async def test_a_failure_while_rebuilding_indexes_rolls_everything_back(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    import db.importer

    def broken(index: Any) -> Any:
        raise RuntimeError("disk full while building an index")

    monkeypatch.setattr(db.importer, "CreateIndex", broken)
    lines = ["student_id,subject,score,max_score,recorded_at"]
    lines += ["S00001,Art,70,100,2025-10-01T08:00:00Z"] * 20_000
    grades = parse_grades_csv("\n".join(lines))

    with pytest.raises(RuntimeError, match="disk full"):
        await import_rows(database, [], grades.rows)

    assert await counts(database) == (1, 1)
    assert len(await grade_indexes(database)) == 3
