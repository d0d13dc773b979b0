"""The reader (db/reader.py) runs the hot reads on the driver: every statement it
runs gives the same rows, value for value and type for type, as the same statement
run through a SQLAlchemy session; its driver errors are SQLAlchemy's; its
statements are observed (counted) like the engine's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Hashable
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Select, text
from sqlalchemy.exc import DBAPIError, OperationalError

from db import grades as db_grades
from db import students as db_students
from db.engine import Database, create_database
from db.reader import READER_NAME, Reader
from server.errors import DB_UNAVAILABLE_ERRORS


class CheckingReader(Reader):
    """Runs each statement on the driver and through a session, and compares."""

    def __init__(self, database: Database) -> None:
        super().__init__(database.engine, connections=2)
        self.database = database
        self.checked: list[tuple[Hashable, int]] = []

    async def fetch(
        self,
        key: Hashable,
        build: Callable[[str], Select[Any]],
        params: dict[str, Any],
    ) -> list[Any]:
        rows = [tuple(row) for row in await super().fetch(key, build, params)]
        async with self.database.sessions() as session:
            statement = build(self.dialect_name)
            expected = [tuple(row) for row in await session.execute(statement, params)]
        assert rows == expected, key
        assert [tuple(map(type, row)) for row in rows] == [
            tuple(map(type, row)) for row in expected
        ], key
        self.checked.append((key, len(rows)))
        return rows


@pytest.fixture
async def checking(seeded_url: str) -> AsyncIterator[CheckingReader]:
    database = create_database(seeded_url)
    reader = CheckingReader(database)
    yield reader
    await reader.close()
    await database.dispose()


async def test_each_statement_reads_what_a_session_reads(
    checking: CheckingReader,
) -> None:
    reader = checking
    filters = [
        db_students.StudentFilter(),
        db_students.StudentFilter(grade_level=9),
        db_students.StudentFilter(grade_levels=frozenset({9, 10})),
        db_students.StudentFilter(grade_levels=frozenset()),
        db_students.StudentFilter(student_ids=frozenset({"S00001", "S00003"})),
        db_students.StudentFilter(search="an_%"),
        db_students.StudentFilter(search="A", grade_level=10),
    ]
    for where in filters:
        await db_students.count_students(reader, where)
        for order_by in ("student_id", "name", "grade_level", "created_at"):
            for descending in (False, True):
                page, _ = await db_students.list_students(
                    reader,
                    first=7,
                    where=where,
                    order_by=order_by,
                    descending=descending,
                )
                if page:  # the next page, after the last row
                    last = page[-1]
                    value = {
                        "student_id": last.student_id,
                        "name": last.name,
                        "grade_level": last.grade_level,
                        "created_at": last.created_at,
                    }[order_by]
                    await db_students.list_students(
                        reader,
                        first=7,
                        where=where,
                        order_by=order_by,
                        descending=descending,
                        after=(value, last.student_id),
                    )
    ids = ["S00002", "S00001", "NOPE", "S00002"]
    found = await db_students.read_students_by_ids(reader, ids)
    assert [r.student_id if r else None for r in found] == [
        "S00002",
        "S00001",
        None,
        "S00002",
    ]
    assert isinstance(found[0].created_at, datetime) if found[0] else False

    keys = [("S00001", None), ("S00002", "Math"), ("S00003", None)]
    await db_grades.grades_by_student_ids(reader, keys)
    await db_grades.grades_by_student_ids(reader, [("S00001", "Math")])
    for subjects in (None, ["Math"], ["Math", "Science"], []):
        for columns in (("score",), ("subject", "score", "max_score", "recorded_at")):
            await db_grades.grade_columns_by_student_ids(
                reader, ["S00001", "S00004"], subjects, columns
            )
    grade_filters = [
        db_grades.GradeFilter(),
        db_grades.GradeFilter(student_id="S00001"),
        db_grades.GradeFilter(subject="Math", grade_levels=frozenset({9})),
        db_grades.GradeFilter(student_ids=frozenset({"S00002"})),
        db_grades.GradeFilter(
            recorded_since=datetime(2025, 1, 1), recorded_before=datetime(2026, 1, 1)
        ),
    ]
    for where in grade_filters:
        await db_grades.count_grades(reader, where)
        page, _ = await db_grades.list_grades(reader, first=5, where=where)
        if page:
            last = page[-1]
            await db_grades.list_grades(
                reader, first=5, where=where, after=(last.recorded_at, last.id)
            )
    # Every kind of statement ran and found rows to compare.
    kinds = {key if isinstance(key, str) else key[0] for key, n in reader.checked if n}
    assert kinds == {
        "students.page",
        "students.count",
        "students.by_ids",
        "grades.by_students",
        "grades.columns",
        "grades.page",
        "grades.count",
    }


async def test_observers_see_each_statement(seeded_url: str) -> None:
    database = create_database(seeded_url)
    seen: list[tuple[str, float]] = []
    database.observe(lambda sql, _params, duration: seen.append((sql, duration)))
    try:
        await db_students.count_students(database.reader, db_students.StudentFilter())
        await asyncio.gather(
            *(
                db_students.read_students_by_ids(database.reader, [f"S0000{i}"])
                for i in range(1, 6)
            )
        )
    finally:
        await database.dispose()
    assert len(seen) == 6
    assert seen[0][0].lstrip().upper().startswith("SELECT COUNT(*)")
    assert all(duration >= 0 for _, duration in seen)


async def test_driver_errors_are_sqlalchemy_errors(seeded_url: str) -> None:
    """A statement the database refuses is a DBAPIError (masked as an unexpected
    error); a database that cannot be reached is one the client may retry."""
    database = create_database(seeded_url)
    try:
        with pytest.raises(DBAPIError) as refused:
            await _no_such_table(database.reader)
        assert refused.value.hide_parameters
    finally:
        await database.dispose()
    if database.dialect == "postgresql":
        unreachable = create_database("postgresql+asyncpg://postgres@127.0.0.1:1/test")
    else:
        unreachable = create_database("sqlite+aiosqlite:////nonexistent/dir/x.db")
    try:
        with pytest.raises(OperationalError) as down:
            await db_students.count_students(
                unreachable.reader, db_students.StudentFilter()
            )
        assert isinstance(down.value, DB_UNAVAILABLE_ERRORS)
    finally:
        await unreachable.dispose()


async def _no_such_table(reader: Reader) -> None:
    from sqlalchemy import column, select, table

    await reader.fetch(
        "missing", lambda _dialect: select(column("x")).select_from(table("nope")), {}
    )


async def test_closed_reader_refuses(seeded_url: str) -> None:
    database = create_database(seeded_url)
    await database.dispose()
    with pytest.raises(DB_UNAVAILABLE_ERRORS):
        await db_students.count_students(database.reader, db_students.StudentFilter())


async def test_postgresql_reads_outlive_a_server_that_dropped_the_pool(
    seeded_url: str, backend: str
) -> None:
    """A restart closes every pooled connection: the next reads are answered (each
    dropped connection replaced), none fails."""
    if backend != "postgresql":
        pytest.skip("PostgreSQL's pool")
    database = create_database(seeded_url)
    where = db_students.StudentFilter()
    try:
        counts = await asyncio.gather(
            *(db_students.count_students(database.reader, where) for _ in range(6))
        )
        async with database.sessions() as session:
            dropped = (
                await session.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = :name AND datname = current_database()"
                    ),
                    {"name": READER_NAME},
                )
            ).scalar_one()
        assert dropped >= 1
        again = await asyncio.wait_for(
            asyncio.gather(
                *(db_students.count_students(database.reader, where) for _ in range(6))
            ),
            10,
        )
    finally:
        await database.dispose()
    assert again == counts
