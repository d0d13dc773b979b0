"""Imports on PostgreSQL COPY their rows (import_rows and a job's staged chunks), and a
failure part-way through writes nothing, on either database."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError

import db.importer
from db import models
from db.bulk import copy_records
from db.engine import Database
from db.importer import ImportSummary, import_rows
from db.validation import NewGrade, NewStudent
from tests.factories import DB_STUDENT, create_student
from tests.factories.imports import csv_of, start, wait_for_job

POSTGRESQL = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
G = models.Grade.__table__.c
WHEN = datetime(2025, 10, 1, 9, 0)


@dataclass
class CopySpy:
    """Every COPY sent through asyncpg: (table, rows); COPY number `fail_at` (from 1)
    fails as a full disk would."""

    calls: list[tuple[str, int]] = field(default_factory=list)
    fail_at: int | None = None


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> CopySpy:
    spy = CopySpy()
    original = asyncpg.Connection.copy_records_to_table

    async def copy(
        self: asyncpg.Connection,
        table_name: str,
        *,
        records: Iterable[Sequence[Any]],
        **kwargs: Any,
    ) -> str:
        rows = list(records)
        spy.calls.append((table_name, len(rows)))
        if len(spy.calls) == spy.fail_at:
            raise asyncpg.exceptions.DiskFullError("could not extend file")
        result: str = await original(self, table_name, records=rows, **kwargs)
        return result

    monkeypatch.setattr(asyncpg.Connection, "copy_records_to_table", copy)
    return spy


def statements_of(database: Database) -> list[str]:
    """The SQL statements the engine sends from now on (COPY is not one of them)."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(database.engine.sync_engine, "before_cursor_execute", record)
    return seen


def inserts_into(statements: list[str], table: str) -> list[str]:
    return [s for s in statements if re.match(rf"\s*INSERT INTO {table}\b", s, re.I)]


async def stored(database: Database) -> tuple[int, list[tuple[Any, ...]]]:
    async with database.sessions() as session:
        students = await session.scalar(
            select(func.count()).select_from(models.Student)
        )
        grades = await session.execute(
            select(
                G.student_id, G.subject, G.score, G.max_score, G.recorded_at
            ).order_by(G.id)
        )
        return int(students or 0), [tuple(row) for row in grades]


NEW_STUDENT = NewStudent("S-COPY-1", "Copy Student", "copy.student@school.example", 7)
GRADES = [
    NewGrade(DB_STUDENT, "Math", 91.5, 100.0, WHEN),
    NewGrade("S-COPY-1", "Art", 18.0, 20.0, datetime(2025, 10, 2, 8, 30, 15, 250)),
    NewGrade(DB_STUDENT, "History", 0.0, 100.0, WHEN),
    NewGrade("S-COPY-1", "Math", 100.0, 100.0, WHEN),
    NewGrade(DB_STUDENT, "Art", 64.25, 80.0, WHEN),
]


@POSTGRESQL
async def test_import_rows_copies_students_and_grades_on_postgresql(
    database: Database, copies: CopySpy
) -> None:
    statements = statements_of(database)
    progress: list[int] = []

    summary = await import_rows(
        database, [NEW_STUDENT], GRADES, chunk_size=2, progress=progress.append
    )

    assert summary == ImportSummary(students=1, grades=5)
    assert copies.calls == [
        ("students", 1),
        ("grades", 2),
        ("grades", 2),
        ("grades", 1),
    ]
    assert progress == [1, 2, 2, 1]
    assert inserts_into(statements, "students") == []
    assert inserts_into(statements, "grades") == []
    assert await stored(database) == (
        2,
        [
            (g.student_id, g.subject, g.score, g.max_score, g.recorded_at)
            for g in GRADES
        ],
    )
    async with database.sessions() as session:
        student = (
            await session.execute(
                select(models.Student.name, models.Student.email).where(
                    models.Student.student_id == "S-COPY-1"
                )
            )
        ).one()
    assert tuple(student) == ("Copy Student", "copy.student@school.example")


async def test_a_row_refused_part_way_through_writes_nothing(
    backend: str,
    database: Database,
    copies: CopySpy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The conflict check misses the unknown student (as a student deleted between
    # the check and the write would be): the database refuses the last chunk.
    async def no_conflicts(*args: Any, **kwargs: Any) -> tuple[list[Any], list[Any]]:
        return [], []

    monkeypatch.setattr(db.importer, "find_conflicts", no_conflicts)
    before = await stored(database)
    progress: list[int] = []
    grades = [*GRADES, NewGrade("S-NOBODY", "Math", 50.0, 100.0, WHEN)]

    with pytest.raises(IntegrityError):
        await import_rows(
            database, [NEW_STUDENT], grades, chunk_size=2, progress=progress.append
        )

    # Students and the first three chunks had been sent when the last one failed.
    assert progress == [1, 2, 2]
    if backend == "postgresql":
        assert copies.calls == [
            ("students", 1),
            ("grades", 2),
            ("grades", 2),
            ("grades", 2),
        ]
    assert await stored(database) == before == (1, [])


@POSTGRESQL
async def test_a_job_stages_its_chunks_by_copy_on_postgresql(
    make_api: Any, scratch_url: str, rows_in: Any, copies: CopySpy
) -> None:
    api = await make_api(scratch_url, import_chunk_size=2)
    await create_student(api, studentId="JOB-1", gradeLevel=7)
    api.counter.reset()

    started = await start(
        api,
        csv=csv_of(
            [("JOB-1", "Math", 71.0), ("JOB-1", "Art", 88.0), ("JOB-1", "Math", 64.5)]
        ),
    )
    job = await wait_for_job(api, started["job"]["id"])

    assert (job["status"], job["processed"], job["total"]) == ("SUCCEEDED", 3, 3)
    assert copies.calls == [("grade_import_rows", 2), ("grade_import_rows", 1)]
    assert inserts_into(api.counter.statements, "grade_import_rows") == []
    # The move is one INSERT ... SELECT from the staged rows.
    [move] = inserts_into(api.counter.statements, "grades")
    assert "SELECT" in move and "FROM grade_import_rows" in move
    assert await rows_in("grade_import_rows") == 0
    async with api.services.database.sessions() as session:
        grades = await session.execute(
            select(G.student_id, G.subject, G.score, G.recorded_at).order_by(G.id)
        )
        assert [tuple(row) for row in grades] == [
            ("JOB-1", "Math", 71.0, WHEN),
            ("JOB-1", "Art", 88.0, WHEN),
            ("JOB-1", "Math", 64.5, WHEN),
        ]


@POSTGRESQL
async def test_a_copy_failing_part_way_fails_the_job_and_writes_nothing(
    make_api: Any, scratch_url: str, rows_in: Any, copies: CopySpy
) -> None:
    api = await make_api(scratch_url, import_chunk_size=2)
    await create_student(api, studentId="JOB-1", gradeLevel=7)
    copies.fail_at = 2

    started = await start(
        api, csv=csv_of([("JOB-1", "Math", float(n)) for n in range(5)])
    )
    job = await wait_for_job(api, started["job"]["id"])

    assert (job["status"], job["failureCode"], job["errors"]) == (
        "FAILED",
        "DB_UNAVAILABLE",
        [],
    )
    assert copies.calls == [("grade_import_rows", 2), ("grade_import_rows", 2)]
    assert await rows_in("grade_import_rows") == 0
    assert await rows_in("grades") == 0


class _Abandon(Exception):
    pass


@POSTGRESQL
async def test_a_copy_first_in_its_transaction_rolls_back_with_it(
    database: Database,
) -> None:
    # SQLAlchemy's asyncpg adapter sends BEGIN with the first statement: a COPY
    # sent first must still be inside the transaction, not committed on its own.
    with pytest.raises(_Abandon):
        async with database.writing() as session:
            conn = await session.connection()
            copied = await copy_records(
                conn,
                models.Grade.__table__,
                ("student_id", "subject", "score", "max_score", "recorded_at"),
                [(DB_STUDENT, "Math", 50.0, 100.0, WHEN)],
            )
            assert copied == 1
            raise _Abandon

    assert await stored(database) == (1, [])
