"""Analytics: per-student figures (percentile loaded lazily), class and at-risk views."""

from __future__ import annotations

from dataclasses import dataclass

from db import analytics as db_analytics
from db.analytics import ClassStats, StudentStats, letter
from db.records import StudentRecord
from resolvers.cache import MISSING
from resolvers.context import Context
from resolvers.loaders import CLASS_ANALYTICS
from resolvers.pagination import Page, check_first, decode_cursor, encode_cursor


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
    stats = await ctx.loaders.stats_by_student_id.load(student.student_id)
    return StudentAnalytics(
        student, stats, ctx.limits.at_risk_average, ctx.limits.at_risk_trend
    )


async def student_analytics(ctx: Context, student_id: str) -> StudentAnalytics | None:
    student = await ctx.loaders.student_by_id.load(student_id)
    return await analytics_of(ctx, student) if student is not None else None


async def percentile_of(ctx: Context, student: StudentRecord) -> float | None:
    ranking = await ctx.loaders.ranking_by_grade_level.load(student.grade_level)
    return ranking.percentile(student.student_id)


async def class_analytics(
    ctx: Context, *, grade_level: int | None = None, subject: str | None = None
) -> ClassStats:
    key = (grade_level, subject)
    cached = ctx.cache.get(CLASS_ANALYTICS, key)
    if cached is not MISSING:
        return cached
    generation = ctx.cache.generation()
    async with ctx.database.sessions() as session:
        stats = await db_analytics.class_stats(session, grade_level, subject)
    ctx.cache.put(CLASS_ANALYTICS, key, stats, generation)
    return stats


async def at_risk_students(
    ctx: Context,
    *,
    grade_level: int | None = None,
    first: int = 20,
    after: str | None = None,
) -> Page[StudentRecord]:
    check_first(first)
    last = decode_cursor(after, "r", 1)[0] if after is not None else None
    async with ctx.database.sessions() as session:
        ids, has_next = await db_analytics.at_risk_student_ids(
            session,
            average_below=ctx.limits.at_risk_average,
            trend_below=ctx.limits.at_risk_trend,
            grade_level=grade_level,
            first=first,
            after=str(last) if last is not None else None,
        )
    records = await ctx.loaders.student_by_id.load_many(ids)
    rows = [record for record in records if record is not None]

    async def count() -> int:
        async with ctx.database.sessions() as session:
            return await db_analytics.count_at_risk(
                session,
                average_below=ctx.limits.at_risk_average,
                trend_below=ctx.limits.at_risk_trend,
                grade_level=grade_level,
            )

    return Page(rows, [encode_cursor("r", r.student_id) for r in rows], has_next, count)
