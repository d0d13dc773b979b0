"""The hot statements' query plans (db/plans.py), per backend: each statement as the
app sends it reads its main table with the index named here, and none reads grades
whole. The database is seeded large enough (3,000 students, 60,000 grades, 2,000
audit records) that both planners choose as they do on the 50,000-student set (but
for PostgreSQL's class figures of a level and subject, which read that subject's
summary rows whole there: see the README's Query plans): on the 120-student demo data
PostgreSQL rightly reads small tables whole, which would prove nothing about the
indexes."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text

from db.audit import READ, NewAuditEntry, insert_entries
from db.engine import async_url, create_database
from db.migrations import upgrade
from db.plans import HotPlan, explain_hot_statements, index_used, whole_tables
from db.seed import seed
from tests.conftest import SEED, postgres_url

STUDENTS = 3_000
GRADES_PER_STUDENT = 20
AUDIT_RECORDS = 2_000
STUDENTS_PER_RECORD = 20  # each record a page of students read
PG_PLANNED = f"gradepulse_plans_{os.getpid()}"

# Each hot statement: its main table and the index SQLite and PostgreSQL read it
# with (None: the whole table, by design: figures over every row of a summary).
EXPECTED: dict[str, tuple[str, str | None, str | None]] = {
    "students by student_id": (
        "students",
        "sqlite_autoindex_students_2",
        "students_student_id_key",
    ),
    "students by student_id after a cursor": (
        "students",
        "sqlite_autoindex_students_2",
        "students_student_id_key",
    ),
    "students by name": ("students", "ix_students_name", "ix_students_name"),
    "students by name after a cursor": (
        "students",
        "ix_students_name",
        "ix_students_name",
    ),
    "students by grade_level": (
        "students",
        "ix_students_grade_level",
        "ix_students_grade_level",
    ),
    "students by grade_level after a cursor": (
        "students",
        "ix_students_grade_level",
        "ix_students_grade_level",
    ),
    "students by created_at": (
        "students",
        "ix_students_created_at",
        "ix_students_created_at",
    ),
    "students by created_at after a cursor": (
        "students",
        "ix_students_created_at",
        "ix_students_created_at",
    ),
    "grades by student": (
        "grades",
        "ix_grades_student_id_subject",
        "ix_grades_student_id_subject",
    ),
    "grades by student of a subject": (
        "grades",
        "ix_grades_student_id_subject",
        "ix_grades_student_id_subject",
    ),
    "grade columns by student": (
        "grades",
        "ix_grades_student_id_subject",
        "ix_grades_student_id_subject",
    ),
    "grades page": ("grades", "ix_grades_recorded_at", "ix_grades_recorded_at"),
    "grades page after a cursor": (
        "grades",
        "ix_grades_recorded_at",
        "ix_grades_recorded_at",
    ),
    "grades page of a student": (
        "grades",
        "ix_grades_student_id_subject",
        "ix_grades_student_id_subject",
    ),
    # The recorded_at order, each subject's grades spread along it.
    "grades page of a subject": (
        "grades",
        "ix_grades_recorded_at",
        "ix_grades_recorded_at",
    ),
    # The whole school's figures: every value count, every student's sums.
    "class analytics: value counts": ("grade_value_counts", None, None),
    "class analytics: latest grades": (
        "student_subject_stats",
        "ix_student_subject_stats_latest",
        "ix_student_subject_stats_latest",
    ),
    "class analytics: top and bottom": ("students", None, None),
    "class analytics: student count": ("students", None, None),
    "class analytics of a level and subject: value counts": (
        "grade_value_counts",
        "sqlite_autoindex_grade_value_counts_1",
        "grade_value_counts_pkey",
    ),
    "class analytics of a level and subject: latest grades": (
        "student_subject_stats",
        "ix_student_subject_stats_latest",
        "ix_student_subject_stats_latest",
    ),
    "class analytics of a level and subject: top and bottom": (
        "student_subject_stats",
        "ix_student_subject_stats_latest",
        "ix_student_subject_stats_latest",
    ),
    "class analytics of a level and subject: student count": (
        "student_subject_stats",
        "sqlite_autoindex_student_subject_stats_1",
        "ix_student_subject_stats_latest",
    ),
    "at-risk students": (
        "students",
        "sqlite_autoindex_students_2",
        "students_student_id_key",
    ),
    # PostgreSQL walks the id order (the rows lie in it) and skips other levels.
    "at-risk students of a level": (
        "students",
        "ix_students_grade_level",
        "students_student_id_key",
    ),
    "audit log by student": (
        "audit_students",
        "ix_audit_students_student_id",
        "ix_audit_students_student_id",
    ),
}


async def _pg_admin(statement: str) -> None:
    import asyncpg

    base = async_url(os.environ["TEST_DATABASE_URL"])
    conn = await asyncpg.connect(base.replace("+asyncpg", "", 1))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def _audit_records() -> list[NewAuditEntry]:
    """Reads of pages of students, a second apart: each student in ~13 records."""
    rng = random.Random(SEED)
    ids = [f"S{number:05d}" for number in range(1, STUDENTS + 1)]
    start = datetime(2026, 1, 5, 8, 0)
    return [
        NewAuditEntry(
            at=start + timedelta(seconds=number),
            actor="admin",
            role="admin",
            operation="Students",
            action=READ,
            request_id=None,
            student_ids=tuple(sorted(rng.sample(ids, STUDENTS_PER_RECORD))),
        )
        for number in range(AUDIT_RECORDS)
    ]


@pytest.fixture(scope="module")
async def plans(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, HotPlan]]:
    """explain_hot_statements on a database of this module's own, by name."""
    if backend == "sqlite":
        path = tmp_path_factory.mktemp("plans") / "plans.db"
        url = f"sqlite+aiosqlite:///{path}"
    else:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{PG_PLANNED}" WITH (FORCE)')
        await _pg_admin(f'CREATE DATABASE "{PG_PLANNED}"')
        url = postgres_url(PG_PLANNED)
    database = create_database(url)
    try:
        await upgrade(database)
        await seed(
            database,
            students=STUDENTS,
            grades_per_student=GRADES_PER_STUDENT,
            seed=SEED,
        )
        async with database.writing() as session:
            await insert_entries(session, _audit_records())
        if backend == "postgresql":
            # The seed analyzes students and grades; autovacuum would analyze the
            # other tables at a moment of its choosing, and plans with it.
            async with database.engine.begin() as conn:
                await conn.execute(text("ANALYZE"))
        found = await explain_hot_statements(database)
    finally:
        await database.dispose()
    yield {plan.name: plan for plan in found}
    if backend == "postgresql":
        await _pg_admin(f'DROP DATABASE IF EXISTS "{PG_PLANNED}" WITH (FORCE)')
    else:
        for leftover in path.parent.glob(path.name + "*"):  # -wal and -shm too
            leftover.unlink()


def _dialect(backend: str) -> str:
    return "sqlite" if backend == "sqlite" else "postgresql"


async def test_every_hot_statement_is_explained_once(plans: dict[str, HotPlan]):
    assert list(plans) == list(EXPECTED)
    assert all(plan.plan for plan in plans.values())


@pytest.mark.parametrize("name", list(EXPECTED))
async def test_hot_statement_reads_its_main_table_with_its_index(
    plans: dict[str, HotPlan], backend: str, name: str
):
    table, on_sqlite, on_postgresql = EXPECTED[name]
    plan = plans[name]
    expected = on_sqlite if backend == "sqlite" else on_postgresql

    assert plan.index == expected, "\n".join(plan.plan)
    assert index_used(_dialect(backend), plan.plan, table) == expected
    if expected is None:  # read whole, not left out
        assert table in whole_tables(_dialect(backend), plan.plan), plan.plan


async def test_only_the_whole_school_figures_read_a_table_whole(
    plans: dict[str, HotPlan], backend: str
):
    """No statement reads grades whole (a page of students reads its students'
    grades through the student index), nor any other table, but for the class
    figures over every student."""
    whole = {
        name: tables
        for name, plan in plans.items()
        if (tables := whole_tables(_dialect(backend), plan.plan))
    }

    assert whole == {
        "class analytics: value counts": {"grade_value_counts"},
        "class analytics: top and bottom": {"students"},
        "class analytics: student count": {"students"},
    }


# --- reading plans ------------------------------------------------------------------

SQLITE_PLAN = [
    "CO-ROUTINE anon_1",
    "  SEARCH students USING INDEX ix_students_name (name>?)",
    "SCAN anon_1",
    "SEARCH audit_log USING INTEGER PRIMARY KEY (rowid=?)",
    "LIST SUBQUERY 1",
    "  SEARCH audit_students USING COVERING INDEX ix_audit_students_student_id "
    "(student_id=?)",
    "  SCAN json_each VIRTUAL TABLE INDEX 1:",
    "SEARCH grades USING AUTOMATIC COVERING INDEX (student_id=?)",
    "USE TEMP B-TREE FOR ORDER BY",
]

PG_PLAN = [
    "Limit  (cost=131.09..131.12 rows=13 width=490)",
    "  ->  Nested Loop  (cost=4.67..130.85 rows=13 width=490)",
    "        ->  Bitmap Heap Scan on audit_students  (cost=4.39..47.01 rows=13)",
    "              Recheck Cond: ((student_id)::text = 'S00009'::text)",
    "              ->  BitmapOr  (cost=4.39..4.39 rows=13 width=0)",
    "                    ->  Bitmap Index Scan on ix_audit_students_student_id  "
    "(cost=0.00..4.39 rows=13 width=0)",
    "        ->  Index Scan Backward using audit_log_pkey on audit_log a  "
    "(cost=0.28..6.45 rows=1 width=490)",
    "  ->  Parallel Seq Scan on grades grades_1  (cost=0.00..5034.08 rows=21 width=7)",
    "  ->  Bitmap Heap Scan on students  (cost=4.39..47.01 rows=13 width=4)",
    "        ->  Bitmap Index Scan on ix_students_grade_level  (cost=0.00..4.39)",
]


@pytest.mark.parametrize(
    ("dialect", "plan", "table", "index"),
    [
        ("sqlite", SQLITE_PLAN, "audit_log", "INTEGER PRIMARY KEY"),
        ("sqlite", SQLITE_PLAN, "audit_students", "ix_audit_students_student_id"),
        ("sqlite", SQLITE_PLAN, "grades", None),  # an automatic index: read whole
        ("sqlite", SQLITE_PLAN, "json_each", None),  # a parameter, not a table
        ("sqlite", SQLITE_PLAN, "students", "ix_students_name"),
        ("sqlite", SQLITE_PLAN, "anon_1", None),  # a subquery, not a table
        ("sqlite", ["SCAN students"], "students", None),
        (
            "sqlite",
            ["SEARCH t USING INDEX a (x=?)", "SCAN t USING INDEX b"],
            "t",
            "a + b",
        ),
        ("postgresql", PG_PLAN, "audit_students", "ix_audit_students_student_id"),
        ("postgresql", PG_PLAN, "audit_log", "audit_log_pkey"),
        ("postgresql", PG_PLAN, "grades", None),
        ("postgresql", PG_PLAN, "students", "ix_students_grade_level"),
        ("postgresql", PG_PLAN, "api_keys", None),  # not read at all
    ],
)
def test_index_used_names_the_index_a_plan_reads_a_table_with(
    dialect: str, plan: list[str], table: str, index: str | None
):
    assert index_used(dialect, plan, table) == index


def test_whole_tables_are_those_a_plan_scans_or_indexes_on_the_fly():
    assert whole_tables("sqlite", SQLITE_PLAN) == {"grades"}
    assert whole_tables("postgresql", PG_PLAN) == {"grades"}
