"""Analytics: SQL aggregates per student, subject, class and grade level, and the math."""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Float, and_, case, cast, func, literal, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement

from db import models

G = models.Grade.__table__.c
S = models.Student.__table__.c

LETTERS = (("A", 90.0, 4.0), ("B", 80.0, 3.0), ("C", 70.0, 2.0), ("D", 60.0, 1.0))
# An average summed in floating point can land an ulp off the value it has exactly
# (93.2, 98.0, 76.1, 92.7 sum to 359.99999999999994): letters, risk bounds and
# percentile ties compare with this much slack, so that 90 is an A and 65 not below 65.
_BOUND_SLACK = 1e-9
DAYS_PER_MONTH = 30.0
# x for the trend is days since 2020-01-01 (small numbers keep the sums exact enough).
_SQLITE_EPOCH_JULIANDAY = 2458849.5
_UNIX_DAYS_TO_EPOCH = 18262.0


def letter(percentage: float) -> str:
    for name, bound, _ in LETTERS:
        if percentage >= bound - _BOUND_SLACK:
            return name
    return "F"


def grade_points(percentage: float) -> float:
    for _, bound, points in LETTERS:
        if percentage >= bound - _BOUND_SLACK:
            return points
    return 0.0


def _pct() -> ColumnElement[float]:
    return (literal(100.0) * cast(G.score, Float)) / G.max_score


def _days(dialect: str) -> ColumnElement[float]:
    if dialect == "sqlite":
        return func.julianday(G.recorded_at) - _SQLITE_EPOCH_JULIANDAY
    return func.extract("epoch", G.recorded_at) / 86400.0 - _UNIX_DAYS_TO_EPOCH


@dataclass(frozen=True, slots=True)
class Sums:
    """Sufficient statistics of (x = days, y = percentage) for mean and slope."""

    n: int
    sy: float
    sx: float
    sxx: float
    sxy: float

    def __add__(self, other: Sums) -> Sums:
        return Sums(
            self.n + other.n,
            self.sy + other.sy,
            self.sx + other.sx,
            self.sxx + other.sxx,
            self.sxy + other.sxy,
        )

    @property
    def mean(self) -> float | None:
        return self.sy / self.n if self.n else None

    @property
    def slope_per_month(self) -> float | None:
        """Least-squares slope of percentage against time, points per 30 days."""
        if self.n < 3:
            return None
        denominator = self.n * self.sxx - self.sx * self.sx
        if denominator <= 1e-9 * max(1.0, self.n * self.sxx):
            return None
        return (self.n * self.sxy - self.sx * self.sy) / denominator * DAYS_PER_MONTH


EMPTY_SUMS = Sums(0, 0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class SubjectStats:
    subject: str
    count: int
    average: float
    min: float
    max: float
    latest: float


@dataclass(frozen=True, slots=True)
class StudentStats:
    """Everything about one student's grades that one aggregate statement yields."""

    student_id: str
    sums: Sums
    subjects: tuple[SubjectStats, ...]

    @property
    def grade_count(self) -> int:
        return self.sums.n

    @property
    def average(self) -> float | None:
        return self.sums.mean

    @property
    def gpa(self) -> float | None:
        if not self.subjects:
            return None
        return sum(grade_points(s.average) for s in self.subjects) / len(self.subjects)

    @property
    def trend_per_month(self) -> float | None:
        return self.sums.slope_per_month

    def risk_reasons(self, average_below: float, trend_below: float) -> list[str]:
        reasons = []
        if self.average is not None and self.average < average_below - _BOUND_SLACK:
            reasons.append(f"average {self.average:.1f}% is below {average_below:g}%")
        trend = self.trend_per_month
        if trend is not None and trend < trend_below - _BOUND_SLACK:
            reasons.append(
                f"trend {trend:+.2f} points per month is below {trend_below:g}"
            )
        return reasons


def _subject_aggregate(dialect: str, where: Sequence[Any]) -> Any:
    """Per (student, subject): count, sums for the trend, min, max and the latest."""
    pct = _pct().label("p")
    days = _days(dialect).label("x")
    rank = (
        func.row_number()
        .over(
            partition_by=(G.student_id, G.subject),
            order_by=(G.recorded_at.desc(), G.id.desc()),
        )
        .label("rn")
    )
    inner = select(G.student_id, G.subject, pct, days, rank).where(*where).subquery()
    c = inner.c
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
        func.max(case((c.rn == 1, c.p))),
    ).group_by(c.student_id, c.subject)


def _subject_stats(row: Sequence[Any]) -> tuple[Sums, SubjectStats]:
    _, subject, n, sy, sx, sxx, sxy, low, high, latest = row
    sums = Sums(int(n), float(sy), float(sx), float(sxx), float(sxy))
    stats = SubjectStats(
        subject, int(n), float(sy) / n, float(low), float(high), float(latest)
    )
    return sums, stats


async def student_stats_by_student_ids(
    session: AsyncSession, student_ids: Sequence[str]
) -> list[StudentStats]:
    """Aligned with `student_ids`; a student without grades gets empty stats."""
    dialect = session.bind.dialect.name
    query = _subject_aggregate(dialect, [G.student_id.in_(set(student_ids))])
    sums: dict[str, Sums] = {}
    subjects: dict[str, list[SubjectStats]] = {}
    for row in await session.execute(query):
        subject_sums, stats = _subject_stats(row)
        sums[row[0]] = sums.get(row[0], EMPTY_SUMS) + subject_sums
        subjects.setdefault(row[0], []).append(stats)
    return [
        StudentStats(
            key,
            sums.get(key, EMPTY_SUMS),
            tuple(sorted(subjects.get(key, []), key=lambda s: s.subject)),
        )
        for key in student_ids
    ]


@dataclass(frozen=True, slots=True)
class LevelRanking:
    """Every graded student's average in one grade level, for mid-rank percentiles."""

    averages: dict[str, float]
    ordered: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, averages: dict[str, float]) -> LevelRanking:
        return cls(averages, sorted(averages.values()))

    def percentile(self, student_id: str) -> float | None:
        value = self.averages.get(student_id)
        if value is None:
            return None
        # Averages summed in another order may differ by an ulp: still a tie.
        below = bisect_left(self.ordered, value - _BOUND_SLACK)
        ties = bisect_right(self.ordered, value + _BOUND_SLACK) - below - 1
        return 100.0 * (below + 0.5 * ties) / len(self.ordered)


async def rankings_by_grade_levels(
    session: AsyncSession, levels: Sequence[int]
) -> list[LevelRanking]:
    query = (
        select(S.grade_level, G.student_id, func.avg(_pct()))
        .join(models.Student, S.student_id == G.student_id)
        .where(S.grade_level.in_(set(levels)))
        .group_by(S.grade_level, G.student_id)
    )
    by_level: dict[int, dict[str, float]] = {}
    for level, student_id, average in await session.execute(query):
        by_level.setdefault(level, {})[student_id] = float(average)
    return [LevelRanking.of(by_level.get(level, {})) for level in levels]


@dataclass(frozen=True, slots=True)
class StudentAverage:
    student_id: str
    name: str
    average: float


@dataclass(frozen=True, slots=True)
class Bucket:
    start: int
    end: int
    count: int


@dataclass(frozen=True, slots=True)
class ClassStats:
    student_count: int
    grade_count: int
    mean: float | None
    median: float | None
    std_dev: float | None
    min: float | None
    max: float | None
    letters: dict[str, int]
    histogram: tuple[Bucket, ...]
    subjects: tuple[SubjectStats, ...]
    top: tuple[StudentAverage, ...]
    bottom: tuple[StudentAverage, ...]


TOP_N = 5


def _selection(
    grade_level: int | None,
    subject: str | None,
    grade_levels: frozenset[int] | None = None,
    student_ids: frozenset[str] | None = None,
) -> list[Any]:
    """Grades of one subject, of one grade level, and only of students in
    `grade_levels` or `student_ids` (what the reader may see; None: anyone)."""
    where: list[Any] = []
    if subject is not None:
        where.append(G.subject == subject)
    if grade_level is not None:
        where.append(
            G.student_id.in_(select(S.student_id).where(S.grade_level == grade_level))
        )
    if grade_levels is not None:
        where.append(
            G.student_id.in_(
                select(S.student_id).where(S.grade_level.in_(sorted(grade_levels)))
            )
        )
    if student_ids is not None:
        where.append(G.student_id.in_(sorted(student_ids)))
    return where


async def class_stats(
    session: AsyncSession,
    grade_level: int | None,
    subject: str | None,
    grade_levels: frozenset[int] | None = None,
) -> ClassStats:
    """Statistics over the percentages of the selected grades, in four statements;
    `grade_levels` keeps only students of those levels (None: every level)."""
    dialect = session.bind.dialect.name
    where = _selection(grade_level, subject, grade_levels)
    pct = _pct()
    # Deviations from the mean (a window over the selection), not sum(p*p) - n*mean^2:
    # the one-pass formula cancels to ~1e-6 for identical grades.
    graded = (
        select(G.student_id, pct.label("p"), func.avg(pct).over().label("m"))
        .where(*where)
        .subquery()
    )
    p, deviation = graded.c.p, graded.c.p - graded.c.m
    bucket_columns = [
        func.sum(case((and_range(p, 10 * i, 10 * (i + 1), i == 9), 1), else_=0))
        for i in range(10)
    ]
    letter_columns = [
        func.sum(case((and_range(p, low, high, high is None), 1), else_=0))
        for low, high in ((90, None), (80, 90), (70, 80), (60, 70), (None, 60))
    ]
    overall = (
        await session.execute(
            select(
                func.count(),
                func.count(graded.c.student_id.distinct()),
                func.sum(p),
                func.sum(deviation * deviation),
                func.min(p),
                func.max(p),
                *letter_columns,
                *bucket_columns,
            )
        )
    ).one()
    n = int(overall[0])
    letters = dict(zip("abcdf", (int(v or 0) for v in overall[6:11]), strict=True))
    histogram = tuple(
        Bucket(10 * i, 10 * (i + 1), int(v or 0)) for i, v in enumerate(overall[11:21])
    )
    if n == 0:
        return ClassStats(
            0, 0, None, None, None, None, None, letters, histogram, (), (), ()
        )
    mean = float(overall[2]) / n
    variance = float(overall[3]) / n
    middle = await session.execute(
        select(pct.label("p"))
        .where(*where)
        .order_by("p")
        .offset((n - 1) // 2)
        .limit(2 if n % 2 == 0 else 1)
    )
    middle_values = [float(row[0]) for row in middle]
    median = sum(middle_values) / len(middle_values)

    subjects = []
    for row in await session.execute(_subject_per_class(dialect, where)):
        n_s, sy, low, high, latest = row[1:]
        subjects.append(
            SubjectStats(
                row[0],
                int(n_s),
                float(sy) / n_s,
                float(low),
                float(high),
                float(latest),
            )
        )
    averages = [
        StudentAverage(student_id, name, float(average))
        for student_id, name, average in await session.execute(
            select(G.student_id, S.name, func.avg(pct))
            .join(models.Student, S.student_id == G.student_id)
            .where(*where)
            .group_by(G.student_id, S.name)
        )
    ]
    top = sorted(averages, key=lambda a: (-a.average, a.student_id))[:TOP_N]
    bottom = sorted(averages, key=lambda a: (a.average, a.student_id))[:TOP_N]
    return ClassStats(
        student_count=int(overall[1]),
        grade_count=n,
        mean=mean,
        median=median,
        std_dev=math.sqrt(variance),
        min=float(overall[4]),
        max=float(overall[5]),
        letters=letters,
        histogram=histogram,
        subjects=tuple(sorted(subjects, key=lambda s: s.subject)),
        top=tuple(top),
        bottom=tuple(bottom),
    )


def and_range(
    value: ColumnElement[float], low: float | None, high: float | None, closed: bool
) -> ColumnElement[bool]:
    """low <= value < high; with `closed` the top is open-ended (the last bucket)."""
    parts = []
    if low is not None:
        parts.append(value >= low)
    if high is not None and not closed:
        parts.append(value < high)
    return and_(true(), *parts)


def _subject_per_class(dialect: str, where: Sequence[Any]) -> Any:
    pct = _pct().label("p")
    rank = (
        func.row_number()
        .over(partition_by=G.subject, order_by=(G.recorded_at.desc(), G.id.desc()))
        .label("rn")
    )
    inner = select(G.subject, pct, rank).where(*where).subquery()
    c = inner.c
    return select(
        c.subject,
        func.count(),
        func.sum(c.p),
        func.min(c.p),
        func.max(c.p),
        func.max(case((c.rn == 1, c.p))),
    ).group_by(c.subject)


def _at_risk_query(
    dialect: str,
    average_below: float,
    trend_below: float,
    grade_level: int | None,
    grade_levels: frozenset[int] | None = None,
    student_ids: frozenset[str] | None = None,
) -> Any:
    """Student ids whose average or trend (both from SQL sums) is below the bounds,
    among the students of `grade_levels` and `student_ids` (None: anyone)."""
    pct = _pct()
    x = _days(dialect)
    n = func.count()
    sy, sx, sxx, sxy = func.sum(pct), func.sum(x), func.sum(x * x), func.sum(x * pct)
    denominator = n * sxx - sx * sx
    slope = case(
        (
            (n >= 3) & (denominator > 1e-9 * (n * sxx + 1.0)),
            (n * sxy - sx * sy) / denominator * DAYS_PER_MONTH,
        ),
        else_=None,
    )
    query = select(G.student_id).group_by(G.student_id)
    where = _selection(grade_level, None, grade_levels, student_ids)
    if where:
        query = query.where(*where)
    return query.having(
        (sy / n < average_below - _BOUND_SLACK) | (slope < trend_below - _BOUND_SLACK)
    )


async def at_risk_student_ids(
    session: AsyncSession,
    *,
    average_below: float,
    trend_below: float,
    grade_level: int | None,
    first: int,
    after: str | None,
    grade_levels: frozenset[int] | None = None,
    student_ids: frozenset[str] | None = None,
) -> tuple[list[str], bool]:
    """One page of at-risk student ids in id order."""
    query = _at_risk_query(
        session.bind.dialect.name,
        average_below,
        trend_below,
        grade_level,
        grade_levels,
        student_ids,
    )
    if after is not None:
        query = query.where(G.student_id > after)
    query = query.order_by(G.student_id).limit(first + 1)
    ids = [row[0] for row in await session.execute(query)]
    return ids[:first], len(ids) > first


async def count_at_risk(
    session: AsyncSession,
    *,
    average_below: float,
    trend_below: float,
    grade_level: int | None,
    grade_levels: frozenset[int] | None = None,
    student_ids: frozenset[str] | None = None,
) -> int:
    query = _at_risk_query(
        session.bind.dialect.name,
        average_below,
        trend_below,
        grade_level,
        grade_levels,
        student_ids,
    )
    total = select(func.count()).select_from(query.subquery())
    return int((await session.execute(total)).scalar_one())
