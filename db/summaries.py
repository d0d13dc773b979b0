"""Summaries of the grades that every write keeps exact, in its own transaction, so
that analytics read a few rows instead of every grade:

- students.grade_count, sum_p, sum_x, sum_xx, sum_xp: each student's sums (average,
  trend, at-risk, the level ranking);
- student_subject_stats: the same per student and subject, with min, max and the
  latest grade (a student's analytics; class figures that name students);
- grade_value_counts: how many grades of a level and subject have each percentage
  (the class figures: mean, spread, median, letters, histogram).

Every write first locks the students whose grades it writes
(db.students.lock_for_write): nobody else writes their grades until it commits, so
what it reads of them is exact. Then, in a few statements however many rows the
write has (a batch or an import updates the summaries once, not row by row):

- an insert calls `added` (or `summarize`, then `add`): the summaries change by what
  its grades add, whatever the tables hold;
- any other write (an update, a delete, a new grade level) runs inside `kept`: its
  students' rows are computed anew from their grades, and the value counts change
  by the difference.

Value counts are shared by all students of a level: they only ever change by
differences, in key order, so two writes never wait on each other's rows in
opposite orders."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Collection, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Float,
    bindparam,
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
_EPOCH = datetime(2020, 1, 1)
_DAY = timedelta(days=1)
# latest_id while an insert that did not return its ids looks it up.
_UNKNOWN_ID = -1


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


# A grade just inserted, as the summaries need it: (student_id, grade_level, subject,
# score, max_score, recorded_at, id), the id None when the insert did not return it
# (it is found afterwards, for the latest grades only).
Inserted = tuple[str, int, str, float, float, datetime, int | None]


def inserted(grades: Iterable[Any], levels: Mapping[str, int]) -> Iterator[Inserted]:
    """`added`'s rows for grade records or new grades (those have no id yet), each
    with its student's level from `levels`."""
    for g in grades:
        yield (
            g.student_id,
            levels[g.student_id],
            g.subject,
            g.score,
            g.max_score,
            g.recorded_at,
            getattr(g, "id", None),
        )


@dataclass(slots=True)
class _Pair:
    n: int
    sum_p: float
    sum_x: float
    sum_xx: float
    sum_xp: float
    min_p: float
    max_p: float
    latest_p: float
    latest_at: datetime
    latest_id: int | None


@dataclass(slots=True)
class Additions:
    """What some new grades add to the summaries (`summarize`), to be applied in
    their transaction (`add`)."""

    pairs: dict[tuple[str, str], _Pair]
    values: dict[ValueKey, int]


async def added(session: AsyncSession, grades: Iterable[Inserted]) -> None:
    """After an insert of `grades` (nothing else, in this order) for locked students:
    the summaries change by what the new grades add, in a few statements whatever
    the tables hold."""
    await add(session, summarize(grades))


def summarize(grades: Iterable[Inserted]) -> Additions:
    """What `grades` (in insert order) add: plain Python, no database, so a large
    import computes it while the database stores the rows. New grades have greater
    ids than every earlier grade of their students (the students' lock is older
    than the insert), so one recorded at the same time as a student's latest grade
    is the new latest."""
    pairs: dict[tuple[str, str], _Pair] = {}
    values: dict[ValueKey, int] = {}
    days_of: dict[datetime, float] = {}
    # A tight loop (an import adds 100,000 grades): no calls it can do without.
    for student, level, subject, score, max_score, at, grade_id in grades:
        p = (100.0 * score) / max_score  # db.records.percentage, inlined
        x = days_of.get(at)
        if x is None:
            x = days_of[at] = (at - _EPOCH) / _DAY
        value = (level, subject, p)
        values[value] = values.get(value, 0) + 1
        key = (student, subject)
        pair = pairs.get(key)
        if pair is None:
            pairs[key] = _Pair(1, p, x, x * x, x * p, p, p, p, at, grade_id)
            continue
        pair.n += 1
        pair.sum_p += p
        pair.sum_x += x
        pair.sum_xx += x * x
        pair.sum_xp += x * p
        if p < pair.min_p:
            pair.min_p = p
        elif p > pair.max_p:
            pair.max_p = p
        if at >= pair.latest_at:  # later in the insert: a greater id
            pair.latest_p, pair.latest_at, pair.latest_id = p, at, grade_id
    return Additions(pairs, values)


async def add(session: AsyncSession, additions: Additions) -> None:
    """Apply `summarize`'s result, after the insert, in its transaction."""
    if additions.pairs:
        await _add_values(session, sorted(additions.values.items()))
        await _add_pairs(session, additions.pairs)
        await _add_totals(session, additions.pairs)


async def _add_pairs(
    session: AsyncSession, pairs: dict[tuple[str, str], _Pair]
) -> None:
    dialect = session.bind.dialect.name
    make = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = make(models.StudentSubjectStats)
    new = statement.excluded
    newer = new.latest_at >= SS.latest_at
    statement = statement.on_conflict_do_update(
        index_elements=["student_id", "subject"],
        set_={
            "n": SS.n + new.n,
            "sum_p": SS.sum_p + new.sum_p,
            "sum_x": SS.sum_x + new.sum_x,
            "sum_xx": SS.sum_xx + new.sum_xx,
            "sum_xp": SS.sum_xp + new.sum_xp,
            "min_p": case((new.min_p < SS.min_p, new.min_p), else_=SS.min_p),
            "max_p": case((new.max_p > SS.max_p, new.max_p), else_=SS.max_p),
            "latest_p": case((newer, new.latest_p), else_=SS.latest_p),
            "latest_at": case((newer, new.latest_at), else_=SS.latest_at),
            "latest_id": case((newer, new.latest_id), else_=SS.latest_id),
        },
    )
    rows = [
        {
            "student_id": student,
            "subject": subject,
            "n": pair.n,
            "sum_p": pair.sum_p,
            "sum_x": pair.sum_x,
            "sum_xx": pair.sum_xx,
            "sum_xp": pair.sum_xp,
            "min_p": pair.min_p,
            "max_p": pair.max_p,
            "latest_p": pair.latest_p,
            "latest_at": pair.latest_at,
            "latest_id": _UNKNOWN_ID if pair.latest_id is None else pair.latest_id,
        }
        for (student, subject), pair in sorted(pairs.items())
    ]
    conn = await session.connection()  # Core executemany, not the ORM's bulk path
    for start in range(0, len(rows), CHUNK):
        await conn.execute(statement, rows[start : start + CHUNK])
    unknown = sorted(
        {student for (student, _), p in pairs.items() if p.latest_id is None}
    )
    for start in range(0, len(unknown), CHUNK):
        # The latest grade's id: the greatest id recorded at the latest time.
        chunk = unknown[start : start + CHUNK]
        same = models.Grade.__table__.alias("same")
        found = (
            select(func.max(same.c.id))
            .where(
                same.c.student_id == SS.student_id,
                same.c.subject == SS.subject,
                same.c.recorded_at == SS.latest_at,
            )
            .correlate_except(same)  # the row being updated, at any depth
            .scalar_subquery()
        )
        await session.execute(
            update(models.StudentSubjectStats)
            .where(SS.student_id.in_(chunk), SS.latest_id == _UNKNOWN_ID)
            .values(
                latest_id=found,
                latest_p=select(percentage()).where(G.id == found).scalar_subquery(),
            )
        )


async def _add_totals(
    session: AsyncSession, pairs: dict[tuple[str, str], _Pair]
) -> None:
    totals: dict[str, list[float]] = {}
    for (student, _), pair in pairs.items():
        total = totals.setdefault(student, [0, 0.0, 0.0, 0.0, 0.0])
        total[0] += pair.n
        total[1] += pair.sum_p
        total[2] += pair.sum_x
        total[3] += pair.sum_xx
        total[4] += pair.sum_xp
    statement = (
        update(models.Student)
        .where(S.student_id == bindparam("key"))
        .values(
            grade_count=S.grade_count + bindparam("n"),
            sum_p=S.sum_p + bindparam("sp"),
            sum_x=S.sum_x + bindparam("sx"),
            sum_xx=S.sum_xx + bindparam("sxx"),
            sum_xp=S.sum_xp + bindparam("sxp"),
        )
    )
    rows = [
        {"key": student, "n": n, "sp": sp, "sx": sx, "sxx": sxx, "sxp": sxp}
        for student, (n, sp, sx, sxx, sxp) in sorted(totals.items())
    ]
    conn = await session.connection()
    for start in range(0, len(rows), CHUNK):
        await conn.execute(statement, rows[start : start + CHUNK])


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
    conn = await session.connection()  # Core executemany, not the ORM's bulk path
    for start in range(0, len(rows), CHUNK):
        await conn.execute(statement, rows[start : start + CHUNK])


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
