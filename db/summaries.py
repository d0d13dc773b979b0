"""Summaries of the grades that every write keeps exact, in its own transaction, so
that analytics read a few rows instead of every grade:

- students.grade_count, sum_p, sum_x, sum_xx, sum_xp: each student's sums (average,
  trend, at-risk, the level ranking);
- student_subject_stats: the same per student and subject, with min, max and the
  latest grade (a student's analytics; class figures that name students);
- grade_value_counts: how many grades of a level and subject have each percentage
  (the class figures: mean, spread, median, letters, histogram).

A write of some students' grades runs inside `kept(session, student_ids)`, after it
has locked those students (db.students.lock_for_write): nobody else writes their
grades until it commits, so what it reads of them is exact. Their rows are computed
anew from their grades (a few statements however many rows the write has: a batch
or an import updates the summaries once), and the value counts change by the
difference, so that writes of other students' grades never wait on them for long."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Collection, Iterable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import (
    Float,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement

from db import models

G = models.Grade.__table__.c
S = models.Student.__table__.c
SS = models.StudentSubjectStats.__table__.c
V = models.GradeValueCount.__table__.c

# x for the trend is days since 2020-01-01 (small numbers keep the sums exact enough).
_SQLITE_EPOCH_JULIANDAY = 2458849.5
_UNIX_DAYS_TO_EPOCH = 18262.0
# Students per statement: an IN list stays well inside SQLite's parameter limit.
CHUNK = 5_000

ValueKey = tuple[int, str, float]


def percentage() -> ColumnElement[float]:
    """A grade's percentage, computed the same way everywhere (it is a key of
    grade_value_counts: every path must reach the same float)."""
    return (literal(100.0, Float) * cast(G.score, Float)) / G.max_score


def days(dialect: str) -> ColumnElement[float]:
    if dialect == "sqlite":
        return func.julianday(G.recorded_at) - _SQLITE_EPOCH_JULIANDAY
    return func.extract("epoch", G.recorded_at) / 86400.0 - _UNIX_DAYS_TO_EPOCH


@asynccontextmanager
async def kept(
    session: AsyncSession, student_ids: Iterable[str]
) -> AsyncIterator[None]:
    """Wrap a write of these (locked) students' grades, levels or rows: afterwards
    their summaries are those of their grades as the write left them."""
    ids = sorted(set(student_ids))
    before = await _value_counts(session, ids)
    yield
    after = await _value_counts(session, ids)
    await _add_values(session, _difference(after, before))
    await _refresh_students(session, ids)


async def added(
    session: AsyncSession, student_ids: Iterable[str], values: Iterable[ValueKey]
) -> None:
    """After an insert of grades (nothing else) for these locked students: `values`
    holds (grade level, subject, percentage) of each new grade, the percentage from
    db.records.percentage (the same float as `percentage()` in SQL)."""
    await _add_values(session, sorted(Counter(values).items()))
    await _refresh_students(session, sorted(set(student_ids)))


async def rebuild(session: AsyncSession) -> None:
    """Every summary from every grade (a new database's seed, or a repair)."""
    await session.execute(delete(models.StudentSubjectStats))
    await session.execute(delete(models.GradeValueCount))
    dialect = session.bind.dialect.name
    await session.execute(_insert_subject_stats(dialect, None))
    await session.execute(_update_totals(None))
    counts = _value_count_query(None).subquery()
    await session.execute(
        insert(models.GradeValueCount).from_select(
            ["grade_level", "subject", "p", "n"], select(*counts.c)
        )
    )


# --- value counts ----------------------------------------------------------------------


def _value_count_query(student_ids: Collection[str] | None) -> Any:
    p = percentage().label("p")
    query = (
        select(S.grade_level, G.subject, p, func.count().label("n"))
        .join(models.Student, S.student_id == G.student_id)
        .group_by(S.grade_level, G.subject, p)
    )
    if student_ids is not None:
        query = query.where(G.student_id.in_(student_ids))
    return query


async def _value_counts(
    session: AsyncSession, student_ids: list[str]
) -> Counter[ValueKey]:
    counts: Counter[ValueKey] = Counter()
    for start in range(0, len(student_ids), CHUNK):
        chunk = student_ids[start : start + CHUNK]
        for level, subject, p, n in await session.execute(_value_count_query(chunk)):
            counts[(int(level), subject, float(p))] += int(n)
    return counts


def _difference(
    after: Counter[ValueKey], before: Counter[ValueKey]
) -> list[tuple[ValueKey, int]]:
    """The changed counts, in key order (two writes never wait on each other's rows
    in opposite orders)."""
    keys = sorted(set(after) | set(before))
    return [
        (key, after[key] - before[key]) for key in keys if after[key] != before[key]
    ]


async def _add_values(
    session: AsyncSession, changes: list[tuple[ValueKey, int]]
) -> None:
    if not changes:
        return
    dialect = session.bind.dialect.name
    make = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = make(models.GradeValueCount)
    statement = statement.on_conflict_do_update(
        index_elements=["grade_level", "subject", "p"],
        set_={"n": V.n + statement.excluded.n},
    )
    rows = [
        {"grade_level": level, "subject": subject, "p": p, "n": n}
        for (level, subject, p), n in changes
    ]
    for start in range(0, len(rows), CHUNK):
        await session.execute(statement, rows[start : start + CHUNK])


# --- per student ---------------------------------------------------------------------


def _subject_aggregate(dialect: str, student_ids: Collection[str] | None) -> Any:
    """Per (student, subject): count, sums, min, max and the latest grade."""
    rank = (
        func.row_number()
        .over(
            partition_by=(G.student_id, G.subject),
            order_by=(G.recorded_at.desc(), G.id.desc()),
        )
        .label("rn")
    )
    inner = select(
        G.id,
        G.student_id,
        G.subject,
        G.recorded_at,
        percentage().label("p"),
        days(dialect).label("x"),
        rank,
    )
    if student_ids is not None:
        inner = inner.where(G.student_id.in_(student_ids))
    c = inner.subquery().c
    latest = c.rn == 1
    return select(
        c.student_id,
        c.subject,
        func.count(),
        func.sum(c.p),
        func.sum(c.x),
        func.sum(c.x * c.x),
        func.sum(c.x * c.p),
        func.min(c.p),
        func.max(c.p),
        func.max(_when(latest, c.p)),
        func.max(_when(latest, c.recorded_at)),
        func.max(_when(latest, c.id)),
    ).group_by(c.student_id, c.subject)


def _when(condition: ColumnElement[bool], value: Any) -> Any:
    return case((condition, value))


def _insert_subject_stats(dialect: str, student_ids: Collection[str] | None) -> Any:
    return insert(models.StudentSubjectStats).from_select(
        [
            "student_id",
            "subject",
            "n",
            "sum_p",
            "sum_x",
            "sum_xx",
            "sum_xp",
            "min_p",
            "max_p",
            "latest_p",
            "latest_at",
            "latest_id",
        ],
        _subject_aggregate(dialect, student_ids),
    )


def _update_totals(student_ids: Collection[str] | None) -> Any:
    """Each student's sums, from their subjects' (0 for a student without grades)."""

    def total(column: Any) -> Any:
        return func.coalesce(
            select(func.sum(column))
            .where(SS.student_id == S.student_id)
            .scalar_subquery(),
            0,
        )

    statement = update(models.Student).values(
        grade_count=total(SS.n),
        sum_p=total(SS.sum_p),
        sum_x=total(SS.sum_x),
        sum_xx=total(SS.sum_xx),
        sum_xp=total(SS.sum_xp),
    )
    if student_ids is not None:
        statement = statement.where(S.student_id.in_(student_ids))
    return statement


async def _refresh_students(session: AsyncSession, student_ids: list[str]) -> None:
    dialect = session.bind.dialect.name
    for start in range(0, len(student_ids), CHUNK):
        chunk = student_ids[start : start + CHUNK]
        await session.execute(
            delete(models.StudentSubjectStats).where(SS.student_id.in_(chunk))
        )
        await session.execute(_insert_subject_stats(dialect, chunk))
        await session.execute(_update_totals(chunk))
