"""The query plans of the hot statements: each one run by its own db function with
parameters taken from the data, caught as it is sent, explained on the database
(EXPLAIN QUERY PLAN on SQLite, EXPLAIN on PostgreSQL), and the index it reads its
main table with."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event, func, select

from db import analytics, audit, grades, models, students
from db.engine import Database

S = models.Student.__table__.c
G = models.Grade.__table__.c
AS = models.AuditStudent.__table__.c

# The settings' defaults (AT_RISK_AVERAGE, AT_RISK_TREND); they are bound values,
# which the plans do not depend on.
AT_RISK_AVERAGE = 65.0
AT_RISK_TREND = -2.0
PAGE = 20  # the connections' default `first`
BATCH = 100  # students whose grades one batch loads: a page of `students(first: 100)`

# A statement as it was sent: its SQL and the driver's parameters.
Sent = tuple[str, tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class HotPlan:
    """One hot statement's plan, its lines as the backend prints them (SQLite: each
    node's detail, indented two spaces a level), and the index the plan reads the
    statement's main table with (None: it reads that table whole)."""

    name: str
    plan: list[str]
    index: str | None


# --- which index a plan uses --------------------------------------------------------

# SQLite: `SCAN t`, `SCAN t USING [COVERING] INDEX i`, `SEARCH t USING [COVERING]
# INDEX i (a=?)`, `SEARCH t USING INTEGER PRIMARY KEY (rowid=?)`. An AUTOMATIC index
# is built for the statement by reading the whole table.
_SQLITE_READ = re.compile(
    r"(?:SCAN|SEARCH) (?P<table>\S+)"
    r"(?: USING (?:(?P<automatic>AUTOMATIC )?(?:PARTIAL )?(?:COVERING )?INDEX"
    r"(?: (?P<index>\S+))?|(?P<key>INTEGER PRIMARY KEY|PRIMARY KEY)))?"
)
_SQLITE_SUBQUERY = re.compile(r"(?:CO-ROUTINE|MATERIALIZE) (\S+)")
# PostgreSQL: `Seq Scan on t`, `Index [Only] Scan [Backward] using i on t`, and
# `Bitmap Heap Scan on t` above its `Bitmap Index Scan on i` nodes.
_PG_SEQ = re.compile(r"(?:Parallel )?Seq Scan on (?P<table>\S+)")
_PG_INDEX = re.compile(
    r"(?:Parallel )?Index (?:Only )?Scan (?:Backward )?using (?P<index>\S+) "
    r"on (?P<table>\S+)"
)
_PG_BITMAP_HEAP = re.compile(r"(?:Parallel )?Bitmap Heap Scan on (?P<table>\S+)")
_PG_BITMAP_INDEX = re.compile(r"Bitmap Index Scan on (?P<index>\S+)")
_WHOLE = ""  # the index of a read that goes through the whole table


def reads(dialect: str, plan: Sequence[str]) -> list[tuple[str, str]]:
    """Each read of a table in the plan, in plan order: (table, index), the index ""
    for a read of the whole table (SQLite's rowid lookups as it prints them,
    INTEGER PRIMARY KEY)."""
    found: list[tuple[str, str]] = []
    if dialect == "sqlite":
        # Not tables: a subquery's rows (`SCAN anon_1` after `CO-ROUTINE anon_1`),
        # and json_each's (a list bound as one parameter).
        subqueries = {
            m[1] for line in plan if (m := _SQLITE_SUBQUERY.match(line.strip()))
        }
        for line in plan:
            match = _SQLITE_READ.match(line.strip())
            if match is None or match["table"] in subqueries or "VIRTUAL" in line:
                continue
            index = "" if match["automatic"] else match["index"] or match["key"]
            found.append((match["table"], index or _WHOLE))
        return found
    for number, line in enumerate(plan):
        node = line.strip().removeprefix("->").strip()
        if match := _PG_SEQ.match(node):
            found.append((match["table"], _WHOLE))
        elif match := _PG_INDEX.match(node):
            found.append((match["table"], match["index"]))
        elif match := _PG_BITMAP_HEAP.match(node):
            depth = _depth(line)
            for child in plan[number + 1 :]:
                if child.strip().startswith("->") and _depth(child) <= depth:
                    break  # past the heap scan's own nodes
                if bitmap := _PG_BITMAP_INDEX.search(child):
                    found.append((match["table"], bitmap["index"]))
    return found


def _depth(line: str) -> int:
    return len(line) - len(line.lstrip())


def index_used(dialect: str, plan: Sequence[str], table: str) -> str | None:
    """The index the plan reads `table` with; None when it reads the table whole
    (anywhere in the plan) or not at all. Reads of it through different indexes
    are named in plan order, joined with " + "."""
    indexes = [index for name, index in reads(dialect, plan) if name == table]
    if not indexes or _WHOLE in indexes:
        return None
    return " + ".join(dict.fromkeys(indexes))


def whole_tables(dialect: str, plan: Sequence[str]) -> set[str]:
    """The tables the plan reads whole."""
    return {name for name, index in reads(dialect, plan) if index == _WHOLE}


# --- the hot statements -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Sample:
    """Parameters from the data: the student in the middle of the id order, the
    first page of students, a subject and the first grade of that student's, and a
    student named in the audit log."""

    student_id: str
    name: str
    grade_level: int
    created_at: datetime
    page: tuple[str, ...]
    subject: str
    grade: tuple[datetime, int]  # recorded_at, id
    audited: str


# What the statements are explained with on a database without that data.
_NO_STUDENT = ("S00001", "", 1, datetime(2020, 1, 1))
_NO_GRADE = ("Math", datetime(2020, 1, 1), 0)


async def _sample(database: Database) -> _Sample:
    async with database.sessions() as session:
        count = (
            await session.execute(select(func.count()).select_from(models.Student))
        ).scalar_one()
        student = (
            await session.execute(
                select(S.student_id, S.name, S.grade_level, S.created_at)
                .order_by(S.student_id)
                .offset(count // 2)
                .limit(1)
            )
        ).first() or _NO_STUDENT
        page = (
            await session.execute(
                select(S.student_id).order_by(S.student_id).limit(BATCH)
            )
        ).scalars()
        grade = (
            await session.execute(
                select(G.subject, G.recorded_at, G.id)
                .where(G.student_id == student[0])
                .order_by(G.recorded_at, G.id)
                .limit(1)
            )
        ).first() or _NO_GRADE
        audited = (
            await session.execute(
                select(AS.student_id).order_by(AS.audit_id, AS.student_id).limit(1)
            )
        ).scalar()
        return _Sample(
            student_id=student[0],
            name=student[1],
            grade_level=student[2],
            created_at=student[3],
            page=tuple(page) or (student[0],),
            subject=grade[0],
            grade=(grade[1], grade[2]),
            audited=audited or student[0],
        )


Run = Callable[[Database, _Sample], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class _Hot:
    """A hot path: the db call that takes it, and each statement it sends, in order:
    the statement's name and its main table."""

    run: Run
    statements: tuple[tuple[str, str], ...]


def _students_page(order_by: str, cursor: bool) -> Run:
    async def run(database: Database, sample: _Sample) -> Any:
        after = (getattr(sample, order_by), sample.student_id) if cursor else None
        return await students.list_students(
            database.reader,
            first=PAGE,
            where=students.StudentFilter(),
            order_by=order_by,
            after=after,
        )

    return run


def _grades_by_students(subject: bool) -> Run:
    async def run(database: Database, sample: _Sample) -> Any:
        wanted = sample.subject if subject else None
        keys = [(student_id, wanted) for student_id in sample.page]
        return await grades.grades_by_student_ids(database.reader, keys)

    return run


async def _grade_columns_by_students(database: Database, sample: _Sample) -> Any:
    return await grades.grade_columns_by_student_ids(
        database.reader, sample.page, None, ("subject", "score")
    )


def _grades_page(
    where: Callable[[_Sample], grades.GradeFilter], cursor: bool = False
) -> Run:
    async def run(database: Database, sample: _Sample) -> Any:
        return await grades.list_grades(
            database.reader,
            first=PAGE,
            where=where(sample),
            after=sample.grade if cursor else None,
        )

    return run


def _class_analytics(filtered: bool) -> Run:
    async def run(database: Database, sample: _Sample) -> Any:
        level = sample.grade_level if filtered else None
        subject = sample.subject if filtered else None
        async with database.sessions() as session:
            return await analytics.class_stats(session, level, subject)

    return run


def _class_statements(name: str, filtered: bool) -> tuple[tuple[str, str], ...]:
    """class_stats' statements, in the order it sends them (only the first on a
    database without grades)."""
    by_subject = "student_subject_stats" if filtered else "students"
    return (
        (f"{name}: value counts", "grade_value_counts"),
        (f"{name}: latest grades", "student_subject_stats"),
        (f"{name}: top and bottom", by_subject),
        (f"{name}: student count", by_subject),
    )


def _at_risk(filtered: bool) -> Run:
    async def run(database: Database, sample: _Sample) -> Any:
        async with database.sessions() as session:
            return await analytics.at_risk_student_ids(
                session,
                average_below=AT_RISK_AVERAGE,
                trend_below=AT_RISK_TREND,
                grade_level=sample.grade_level if filtered else None,
                first=PAGE,
                after=None,
            )

    return run


async def _audit_by_student(database: Database, sample: _Sample) -> Any:
    async with database.sessions() as session:
        return await audit.list_entries(
            session, first=PAGE, where=audit.AuditFilter(student_id=sample.audited)
        )


_HOT: tuple[_Hot, ...] = (
    *(
        _Hot(
            _students_page(order_by, cursor),
            ((f"students by {order_by}{' after a cursor' * cursor}", "students"),),
        )
        for order_by in students.ORDER_COLUMNS
        for cursor in (False, True)
    ),
    _Hot(_grades_by_students(False), (("grades by student", "grades"),)),
    _Hot(_grades_by_students(True), (("grades by student of a subject", "grades"),)),
    _Hot(_grade_columns_by_students, (("grade columns by student", "grades"),)),
    _Hot(_grades_page(lambda s: grades.GradeFilter()), (("grades page", "grades"),)),
    _Hot(
        _grades_page(lambda s: grades.GradeFilter(), cursor=True),
        (("grades page after a cursor", "grades"),),
    ),
    _Hot(
        _grades_page(lambda s: grades.GradeFilter(student_id=s.student_id)),
        (("grades page of a student", "grades"),),
    ),
    _Hot(
        _grades_page(lambda s: grades.GradeFilter(subject=s.subject)),
        (("grades page of a subject", "grades"),),
    ),
    _Hot(_class_analytics(False), _class_statements("class analytics", False)),
    _Hot(
        _class_analytics(True),
        _class_statements("class analytics of a level and subject", True),
    ),
    _Hot(_at_risk(False), (("at-risk students", "students"),)),
    _Hot(_at_risk(True), (("at-risk students of a level", "students"),)),
    _Hot(_audit_by_student, (("audit log by student", "audit_students"),)),
)


@asynccontextmanager
async def _sending(database: Database) -> AsyncIterator[list[Sent]]:
    """The SELECTs sent while inside, through sessions and through the reader, as
    the driver got them."""
    sent: list[Sent] = []

    def engine_sent(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any
    ) -> None:
        sent.append((statement, tuple(parameters or ())))

    def reader_sent(statement: str, parameters: Sequence[Any], _: float) -> None:
        sent.append((statement, tuple(parameters)))

    engine = database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", engine_sent)
    database.observe(reader_sent)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", engine_sent)
        database.reader.observers.remove(reader_sent)
    sent[:] = [s for s in sent if s[0].lstrip().upper().startswith(("SELECT", "WITH"))]


async def _explain(database: Database, statement: Sent) -> list[str]:
    sql, parameters = statement
    async with database.engine.connect() as conn:
        if database.dialect != "sqlite":
            result = await conn.exec_driver_sql("EXPLAIN " + sql, parameters)
            return [row[0] for row in result]
        result = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, parameters)
        depth: dict[int, int] = {}
        lines = []
        for node, parent, _, detail in result:
            depth[node] = depth.get(parent, -1) + 1
            lines.append("  " * depth[node] + detail)
        return lines


async def explain_hot_statements(database: Database) -> list[HotPlan]:
    """The plan of every hot statement on this database, as each is sent: built by
    its db function, compiled for the dialect, with parameters from the data.

    The statements are caught on `database`'s engine and reader while each path
    runs: give it a Database that nothing else uses meanwhile. They are read-only.
    A path that sends fewer statements with this data (class analytics stops after
    the value counts on a database without grades) has only those explained."""
    sample = await _sample(database)
    plans: list[HotPlan] = []
    for hot in _HOT:
        async with _sending(database) as sent:
            await hot.run(database, sample)
        if len(sent) > len(hot.statements):
            names = ", ".join(name for name, _ in hot.statements)
            raise RuntimeError(
                f"{len(sent)} statements sent where {names} were expected"
            )
        for (name, table), statement in zip(hot.statements, sent, strict=False):
            plan = await _explain(database, statement)
            plans.append(HotPlan(name, plan, index_used(database.dialect, plan, table)))
    return plans
