"""Analytics: per-student figures (percentile loaded lazily), class and at-risk views."""

from __future__ import annotations

from dataclasses import dataclass

from db import analytics as db_analytics
from db.analytics import ClassStats as ClassStats
from db.analytics import StudentAverage as StudentAverage
from db.analytics import StudentStats, letter
from db.analytics import SubjectStats as SubjectStats
from db.records import StudentRecord
from resolvers import audit
from resolvers.cache import MISSING
from resolvers.context import Context
from resolvers.errors import Forbidden
from resolvers.loaders import CLASS_ANALYTICS
from resolvers.pagination import (
    Page,
    check_first,
    decode_cursor,
    encode_cursor,
    text_part,
)
from resolvers.students import get_student, require_readable

# The fewest students whose class figures a student may read (figures over fewer
# describe individuals).
MIN_COHORT = 5


@dataclass(frozen=True, slots=True)
class StudentAnalytics:
    """One student's analytics; the percentile needs the level's ranking, loaded apart."""

    student: StudentRecord
    stats: StudentStats
    average_below: float
    trend_below: float

    @property
    def letter(self) -> str | None:
        return letter(self.stats.average) if self.stats.average is not None else None

    @property
    def risk_reasons(self) -> list[str]:
        return self.stats.risk_reasons(self.average_below, self.trend_below)

    @property
    def at_risk(self) -> bool:
        return bool(self.risk_reasons)


async def analytics_of(ctx: Context, student: StudentRecord) -> StudentAnalytics:
    require_readable(ctx, student)
    audit.note(ctx, student.student_id)
    stats = await ctx.loaders.stats_by_student_id.load(student.student_id)
    return StudentAnalytics(
        student,
        stats,
        ctx.services.limits.at_risk_average,
        ctx.services.limits.at_risk_trend,
    )


async def student_analytics(ctx: Context, student_id: str) -> StudentAnalytics | None:
    """None when the student is absent; Forbidden when the viewer may not read them."""
    student = await get_student(ctx, student_id)
    return await analytics_of(ctx, student) if student is not None else None


async def percentile_of(ctx: Context, student: StudentRecord) -> float | None:
    audit.note(ctx, student.student_id)
    ranking = await ctx.loaders.ranking_by_grade_level.load(student.grade_level)
    return ranking.percentile(student.student_id)


async def class_analytics(
    ctx: Context, *, grade_level: int | None = None, subject: str | None = None
) -> ClassStats:
    """A teacher of some levels: a level outside them is Forbidden, and without one
    the statistics cover their levels only. Students may read any level's figures
    over enough students (MIN_COHORT); the fields that name students are refused
    to them (`class_ranking`), and so is a subject's latest grade (`class_latest`)."""
    levels = ctx.viewer.readable_levels
    scope: tuple[int, ...] | None = None
    if levels is not None:
        if grade_level is not None and grade_level not in levels:
            raise Forbidden(f"you may not read grade level {grade_level}")
        if grade_level is None:
            scope = tuple(sorted(levels))
            if len(scope) == 1:  # the same figures as that level's: one cache entry
                grade_level, scope = scope[0], None
    # A scoped entry's key starts with None, so that every grade or student write
    # drops it (resolvers.loaders invalidates keys whose level is None), and its
    # third part keeps it apart from the whole school's figures.
    # A student reads figures without the subjects that fewer than MIN_COHORT of
    # the selection's students have (one student's mean is their grade): a cache
    # entry of its own.
    cohort = MIN_COHORT if ctx.viewer.role == "student" else 0
    key = (grade_level, subject) if scope is None else (None, subject, scope)
    if cohort:
        key = (*key, "cohort")
    stats = ctx.services.cache.get(CLASS_ANALYTICS, key)
    if stats is MISSING:
        generation = ctx.services.cache.generation()
        async with ctx.services.database.sessions() as session:
            stats = await db_analytics.class_stats(
                session,
                grade_level,
                subject,
                frozenset(scope) if scope is not None else None,
                min_students=cohort,
            )
        ctx.services.cache.put(CLASS_ANALYTICS, key, stats, generation)
    if cohort and (
        subject in stats.suppressed
        or 0 < stats.student_count < cohort
        or (stats.suppressed and not stats.student_count)  # all of it left out
    ):
        raise Forbidden(
            f"these figures cover fewer than {cohort} students: students read "
            f"class figures over at least {cohort}"
        )
    if 0 < stats.student_count < MIN_COHORT:
        # Figures over so few students describe each of them: audited as their
        # analytics would be (the ranking lists every one of them).
        audit.note_many(ctx, {row.student_id for row in (*stats.top, *stats.bottom)})
    return stats


def class_latest(ctx: Context, latest: float) -> float:
    """A class's latest grade is one student's grade: not for students."""
    if ctx.viewer.role == "student":
        raise Forbidden("a class's latest grade is one student's: not for students")
    return latest


def class_ranking(
    ctx: Context, rows: tuple[StudentAverage, ...]
) -> tuple[StudentAverage, ...]:
    """Top or bottom averages name students: admins and teachers only (a teacher's
    class analytics never reach beyond their levels)."""
    if ctx.viewer.role == "student":
        raise Forbidden("class analytics name students only to teachers and admins")
    audit.note_many(ctx, [row.student_id for row in rows])  # named averages
    return rows


async def at_risk_students(
    ctx: Context,
    *,
    grade_level: int | None = None,
    first: int = 20,
    after: str | None = None,
) -> Page[StudentRecord]:
    check_first(first)
    last = decode_cursor(after, "r", text_part)[0] if after is not None else None
    viewer = ctx.viewer
    async with ctx.services.database.sessions() as session:
        ids, has_next = await db_analytics.at_risk_student_ids(
            session,
            average_below=ctx.services.limits.at_risk_average,
            trend_below=ctx.services.limits.at_risk_trend,
            grade_level=grade_level,
            first=first,
            after=last,
            grade_levels=viewer.readable_levels,
            student_ids=viewer.readable_students,
        )
    records = await ctx.loaders.student_by_id.load_many(ids)
    rows = [record for record in records if record is not None]
    # Listing a student as at risk reveals their analytics.
    audit.note_many(ctx, [row.student_id for row in rows])

    async def count() -> int:
        async with ctx.services.database.sessions() as session:
            return await db_analytics.count_at_risk(
                session,
                average_below=ctx.services.limits.at_risk_average,
                trend_below=ctx.services.limits.at_risk_trend,
                grade_level=grade_level,
                grade_levels=viewer.readable_levels,
                student_ids=viewer.readable_students,
            )

    return Page(
        rows,
        [encode_cursor("r", r.student_id) for r in rows],
        has_next,
        count,
        has_previous=after is not None,
    )
