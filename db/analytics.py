"""Analytics: per student, subject, class and grade level, read from the summaries the
writes keep exact (db.summaries), and the math."""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Numeric, case, cast, func, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from db import models

S = models.Student.__table__.c
SS = models.StudentSubjectStats.__table__.c
V = models.GradeValueCount.__table__.c

LETTERS = (("A", 90.0, 4.0), ("B", 80.0, 3.0), ("C", 70.0, 2.0), ("D", 60.0, 1.0))
# An average summed in floating point can land an ulp off the value it has exactly
# (93.2, 98.0, 76.1, 92.7 sum to 359.99999999999994): letters, risk bounds and
# percentile ties compare with this much slack, so that 90 is an A and 65 not below 65.
_BOUND_SLACK = 1e-9
_DIGITS = 9  # averages equal to this many decimals are ties in the class rankings
DAYS_PER_MONTH = 30.0


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
            # A sum of floats lands an ulp off a midpoint (63.95 as 63.9499...):
            # printed from its value to 9 decimals, it rounds as the grades do.
            shown = round(self.average, 9)
            reasons.append(f"average {shown:.1f}% is below {average_below:g}%")
        trend = self.trend_per_month
        if trend is not None and trend < trend_below - _BOUND_SLACK:
            reasons.append(
                f"trend {trend:+.2f} points per month is below {trend_below:g}"
            )
        return reasons


async def student_stats_by_student_ids(
    session: AsyncSession, student_ids: Sequence[str]
) -> list[StudentStats]:
    """Aligned with `student_ids`; a student without grades gets empty stats. From
    the summaries the writes keep (db.summaries): a few rows per student."""
    query = select(
        SS.student_id,
        SS.subject,
        SS.n,
        SS.sum_p,
        SS.sum_x,
        SS.sum_xx,
        SS.sum_xp,
        SS.min_p,
        SS.max_p,
        SS.latest_p,
    ).where(SS.student_id.in_(set(student_ids)))
    sums: dict[str, Sums] = {}
    subjects: dict[str, list[SubjectStats]] = {}
    for row in await session.execute(query):
        student, subject, n, sy, sx, sxx, sxy, low, high, latest = row
        subject_sums = Sums(int(n), float(sy), float(sx), float(sxx), float(sxy))
        sums[student] = sums.get(student, EMPTY_SUMS) + subject_sums
        subjects.setdefault(student, []).append(
            SubjectStats(
                subject, int(n), float(sy) / n, float(low), float(high), float(latest)
            )
        )
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
    average = S.sum_p / S.grade_count
    query = select(S.grade_level, S.student_id, average).where(
        S.grade_level.in_(set(levels)), S.grade_count > 0
    )
    by_level: dict[int, dict[str, float]] = {}
    for level, student_id, value in await session.execute(query):
        by_level.setdefault(level, {})[student_id] = float(value)
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
    suppressed: tuple[str, ...] = ()  # subjects left out (class_stats' min_students)


TOP_N = 5
LATEST_PER_STATEMENT = 400


def _levels(
    column: Any, grade_level: int | None, grade_levels: frozenset[int] | None
) -> list[Any]:
    """One grade level, and only `grade_levels` (what the reader may see; None:
    every level)."""
    where: list[Any] = []
    if grade_level is not None:
        where.append(column == grade_level)
    if grade_levels is not None:
        where.append(column.in_(sorted(grade_levels)))
    return where


def _bucket(p: float) -> int:
    """The histogram bucket of a percentage: [10 i, 10 (i + 1)), the last one open."""
    for i in range(9, -1, -1):
        if p >= 10 * i:
            return i
    return -1  # below 0: in no bucket


def _letter_of(p: float) -> str:
    """The letter counted for one grade (bounds without slack, as grades are)."""
    for name, bound in (("a", 90), ("b", 80), ("c", 70), ("d", 60)):
        if p >= bound:
            return name
    return "f"


@dataclass(slots=True)
class _Values:
    """Percentages with their counts, for mean, spread, median and the rest."""

    counts: dict[float, int] = field(default_factory=dict)

    def add(self, p: float, n: int) -> None:
        self.counts[p] = self.counts.get(p, 0) + n

    @property
    def n(self) -> int:
        return sum(self.counts.values())

    @property
    def total(self) -> float:
        return math.fsum(p * n for p, n in self.counts.items())


async def class_stats(
    session: AsyncSession,
    grade_level: int | None,
    subject: str | None,
    grade_levels: frozenset[int] | None = None,
    *,
    min_students: int = 0,
) -> ClassStats:
    """Statistics over the percentages of the selected grades, from the summaries
    the writes keep (db.summaries): the value counts of the selected levels and
    subjects (a few thousand rows however many grades), the latest grade of each
    subject and the students' averages. `grade_levels` keeps only students of those
    levels (None: every level).

    `min_students`: the figures as someone may read them who may not see single
    students (a student): the subjects that fewer students of the selection have
    are left out of every figure (`suppressed` names them; their grades would show
    as the difference between the totals and the subjects listed), and there is no
    ranking."""
    where = _levels(V.grade_level, grade_level, grade_levels)
    if subject is not None:
        where.append(V.subject == subject)
    suppressed: tuple[str, ...] = ()
    if min_students:
        counts = await _students_per_subject(
            session, grade_level, subject, grade_levels
        )
        suppressed = tuple(sorted(s for s, n in counts.items() if n < min_students))
        if suppressed:
            where.append(V.subject.notin_(suppressed))
    by_subject: dict[str, _Values] = {}
    overall = _Values()
    for name, p, n in await session.execute(
        select(V.subject, V.p, func.sum(V.n))
        .where(*where, V.n > 0)
        .group_by(V.subject, V.p)
    ):
        by_subject.setdefault(name, _Values()).add(float(p), int(n))
        overall.add(float(p), int(n))
    letters = dict.fromkeys("abcdf", 0)
    buckets = [0] * 10
    for p, n in overall.counts.items():
        letters[_letter_of(p)] += n
        if (i := _bucket(p)) >= 0:
            buckets[i] += n
    histogram = tuple(Bucket(10 * i, 10 * (i + 1), c) for i, c in enumerate(buckets))
    n = overall.n
    if n == 0:
        return ClassStats(
            0,
            0,
            None,
            None,
            None,
            None,
            None,
            letters,
            histogram,
            (),
            (),
            (),
            suppressed,
        )
    mean = overall.total / n
    # Deviations from the mean, not sum(p*p) - n*mean^2: the one-pass formula
    # cancels to ~1e-6 for identical grades.
    variance = math.fsum(c * (p - mean) ** 2 for p, c in overall.counts.items()) / n
    ordered = sorted(overall.counts.items())
    latest = await _latest(session, sorted(by_subject), grade_level, grade_levels)
    subjects = [
        SubjectStats(
            name,
            values.n,
            values.total / values.n,
            min(values.counts),
            max(values.counts),
            latest[name],
        )
        for name, values in sorted(by_subject.items())
    ]
    if min_students:
        top = bottom = ()
        student_count = await _student_count(
            session, grade_level, subject, grade_levels, suppressed
        )
    else:
        top, bottom = await _ranked(session, grade_level, subject, grade_levels)
        student_count = await _student_count(
            session, grade_level, subject, grade_levels
        )
    return ClassStats(
        student_count=student_count,
        grade_count=n,
        mean=mean,
        median=_median(ordered, n),
        std_dev=math.sqrt(variance),
        min=ordered[0][0],
        max=ordered[-1][0],
        letters=letters,
        histogram=histogram,
        subjects=tuple(subjects),
        top=top,
        bottom=bottom,
        suppressed=suppressed,
    )


def _median(ordered: list[tuple[float, int]], n: int) -> float:
    """The middle value (the mean of the two middle ones for an even count)."""
    wanted = [(n - 1) // 2] if n % 2 else [n // 2 - 1, n // 2]
    found: list[float] = []
    seen = 0
    for p, count in ordered:
        seen += count
        while wanted and wanted[0] < seen:
            found.append(p)
            wanted.pop(0)
        if not wanted:
            break
    return sum(found) / len(found)


def _level_students(
    grade_level: int | None, grade_levels: frozenset[int] | None
) -> Any | None:
    where = _levels(S.grade_level, grade_level, grade_levels)
    return select(S.student_id).where(*where) if where else None


def _subject_rows(
    subject: str | None, grade_level: int | None, grade_levels: frozenset[int] | None
) -> list[Any]:
    """The conditions on student_subject_stats for the selection."""
    where = [] if subject is None else [SS.subject == subject]
    if (students := _level_students(grade_level, grade_levels)) is not None:
        where.append(SS.student_id.in_(students))
    return where


async def _latest(
    session: AsyncSession,
    subjects: list[str],
    grade_level: int | None,
    grade_levels: frozenset[int] | None,
) -> dict[str, float]:
    """The percentage of the selection's latest grade in each subject: the greatest
    (recorded_at, id), found by walking each subject's latest grades backwards (one
    statement per LATEST_PER_STATEMENT subjects: SQLite allows 500 terms in a
    compound SELECT)."""
    students = _level_students(grade_level, grade_levels)
    found: dict[str, float] = {}
    for start in range(0, len(subjects), LATEST_PER_STATEMENT):
        parts = []
        for name in subjects[start : start + LATEST_PER_STATEMENT]:
            query = select(SS.subject, SS.latest_p).where(SS.subject == name)
            if students is not None:
                query = query.where(SS.student_id.in_(students))
            query = query.order_by(SS.latest_at.desc(), SS.latest_id.desc()).limit(1)
            parts.append(select(*query.subquery().c))
        rows = await session.execute(union_all(*parts))
        found.update((name, float(p)) for name, p in rows)
    return found


async def _students_per_subject(
    session: AsyncSession,
    grade_level: int | None,
    subject: str | None,
    grade_levels: frozenset[int] | None,
) -> dict[str, int]:
    """How many of the selection's students have grades in each subject."""
    query = (
        select(SS.subject, func.count())
        .where(*_subject_rows(subject, grade_level, grade_levels))
        .group_by(SS.subject)
    )
    return {name: int(count) for name, count in await session.execute(query)}


async def _student_count(
    session: AsyncSession,
    grade_level: int | None,
    subject: str | None,
    grade_levels: frozenset[int] | None,
    suppressed: tuple[str, ...] = (),
) -> int:
    if suppressed:
        # The students with grades in the subjects that are not left out.
        query = select(func.count(func.distinct(SS.student_id))).where(
            SS.subject.notin_(suppressed),
            *_subject_rows(subject, grade_level, grade_levels),
        )
        return int((await session.execute(query)).scalar_one())
    if subject is None:
        query = select(func.count()).where(
            S.grade_count > 0, *_levels(S.grade_level, grade_level, grade_levels)
        )
    else:
        query = select(func.count()).where(
            *_subject_rows(subject, grade_level, grade_levels)
        )
    return int((await session.execute(query)).scalar_one())


async def _ranked(
    session: AsyncSession,
    grade_level: int | None,
    subject: str | None,
    grade_levels: frozenset[int] | None,
) -> tuple[tuple[StudentAverage, ...], tuple[StudentAverage, ...]]:
    """The TOP_N highest and lowest averages over the selection (ties by id)."""
    levels = _levels(S.grade_level, grade_level, grade_levels)
    if subject is None:
        average = (S.sum_p / S.grade_count).label("a")
        key = S.student_id
        base = select(S.student_id, S.name, average).where(S.grade_count > 0, *levels)
    else:
        average = (SS.sum_p / SS.n).label("a")
        key = SS.student_id
        base = (
            select(SS.student_id, S.name, average)
            .join(models.Student, S.student_id == SS.student_id)
            .where(SS.subject == subject, *levels)
        )
    # Averages equal to 9 decimals are ties (float sums differ in the last bits),
    # ordered by id.
    tied = func.round(cast(average, Numeric), _DIGITS)
    ends = [
        select(literal(end).label("end"), *ranked.c)
        for end, ranked in (
            (0, base.order_by(tied.desc(), key).limit(TOP_N).subquery()),
            (1, base.order_by(tied.asc(), key).limit(TOP_N).subquery()),
        )
    ]
    found: tuple[list[StudentAverage], list[StudentAverage]] = ([], [])
    for end, student_id, name, value in await session.execute(union_all(*ends)):
        found[end].append(StudentAverage(student_id, name, float(value)))
    order = (
        lambda a: (-round(a.average, _DIGITS), a.student_id),
        lambda a: (round(a.average, _DIGITS), a.student_id),
    )
    return (
        tuple(sorted(found[0], key=order[0])),
        tuple(sorted(found[1], key=order[1])),
    )


def _at_risk_query(
    average_below: float,
    trend_below: float,
    grade_level: int | None,
    grade_levels: frozenset[int] | None = None,
    student_ids: frozenset[str] | None = None,
) -> Any:
    """Student ids whose average or trend (from the sums the writes keep on each
    student) is below the bounds, among the students of `grade_levels` and
    `student_ids` (None: anyone)."""
    n, sy, sx = S.grade_count, S.sum_p, S.sum_x
    sxx, sxy = S.sum_xx, S.sum_xp
    denominator = n * sxx - sx * sx
    slope = case(
        (
            (n >= 3) & (denominator > 1e-9 * (n * sxx + 1.0)),
            (n * sxy - sx * sy) / denominator * DAYS_PER_MONTH,
        ),
        else_=None,
    )
    where = [n > 0, *_levels(S.grade_level, grade_level, grade_levels)]
    if student_ids is not None:
        where.append(S.student_id.in_(sorted(student_ids)))
    return select(S.student_id).where(
        *where,
        (sy / n < average_below - _BOUND_SLACK) | (slope < trend_below - _BOUND_SLACK),
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
        average_below, trend_below, grade_level, grade_levels, student_ids
    )
    if after is not None:
        query = query.where(S.student_id > after)
    query = query.order_by(S.student_id).limit(first + 1)
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
        average_below, trend_below, grade_level, grade_levels, student_ids
    )
    total = select(func.count()).select_from(query.subquery())
    return int((await session.execute(total)).scalar_one())
