"""Analytics types: per student, per subject and per class."""

from __future__ import annotations

import strawberry

from db import analytics as db_analytics
from resolvers import analytics
from schema.common import ctx


@strawberry.type(description="Statistics of one subject's grades, as percentages.")
class SubjectStats:
    subject: str = strawberry.field(description="The subject.")
    count: int = strawberry.field(description="How many grades.")
    average: float = strawberry.field(description="Mean percentage.")
    min: float = strawberry.field(description="Lowest percentage.")
    max: float = strawberry.field(description="Highest percentage.")
    latest: float = strawberry.field(description="The most recent grade's percentage.")

    @classmethod
    def from_model(cls, row: db_analytics.SubjectStats) -> SubjectStats:
        return cls(
            subject=row.subject,
            count=row.count,
            average=row.average,
            min=row.min,
            max=row.max,
            latest=row.latest,
        )


@strawberry.type(description="One student's analytics.")
class StudentAnalytics:
    _value: strawberry.Private[analytics.StudentAnalytics]

    @strawberry.field(description="How many grades the student has.")
    def grade_count(self) -> int:
        return self._value.stats.grade_count

    @strawberry.field(description="Mean percentage of all grades; null without grades.")
    def average(self) -> float | None:
        return self._value.stats.average

    @strawberry.field(
        description="Letter of the average: A >= 90, B >= 80, C >= 70, D >= 60, F."
    )
    def letter(self) -> str | None:
        return self._value.letter

    @strawberry.field(
        description="Mean over subjects of each subject average's grade points (4.0 scale)."
    )
    def gpa(self) -> float | None:
        return self._value.stats.gpa

    @strawberry.field(
        description="Least-squares slope of percentage against time, points per 30 days; "
        "null with fewer than 3 grades."
    )
    def trend_per_month(self) -> float | None:
        return self._value.stats.trend_per_month

    @strawberry.field(
        description="Mid-rank percentile of the average among the students of the same "
        "grade level: 100 * (below + 0.5 * ties) / count."
    )
    async def percentile(self, info: strawberry.Info) -> float | None:
        return await analytics.percentile_of(ctx(info), self._value.student)

    @strawberry.field(
        description="Average below AT_RISK_AVERAGE or trend below AT_RISK_TREND."
    )
    def at_risk(self) -> bool:
        return self._value.at_risk

    @strawberry.field(description="Why the student is at risk; empty when not.")
    def risk_reasons(self) -> list[str]:
        return self._value.risk_reasons

    @strawberry.field(description="Statistics per subject, by subject name.")
    def subjects(self) -> list[SubjectStats]:
        return [SubjectStats.from_model(s) for s in self._value.stats.subjects]


@strawberry.type(description="How many grades fall on each letter.")
class LetterCounts:
    a: int = strawberry.field(description="90 and above.")
    b: int = strawberry.field(description="80 to below 90.")
    c: int = strawberry.field(description="70 to below 80.")
    d: int = strawberry.field(description="60 to below 70.")
    f: int = strawberry.field(description="Below 60.")


@strawberry.type(
    description="A histogram bucket of percentages: [from, to), the last [90, 100]."
)
class Bucket:
    from_: int = strawberry.field(name="from", description="Lower bound (inclusive).")
    to: int = strawberry.field(
        description="Upper bound (exclusive, but 100 inclusive)."
    )
    count: int = strawberry.field(description="Grades in the bucket.")


@strawberry.type(description="A student with their mean percentage.")
class StudentAverage:
    student_id: str = strawberry.field(description="The student's public id.")
    name: str = strawberry.field(description="The student's name.")
    average: float = strawberry.field(
        description="Mean percentage of the selected grades."
    )


@strawberry.type(
    description="Statistics over the percentages of the selected grades. Every "
    "field but top and bottom is an aggregate that any role may read."
)
class ClassAnalytics:
    student_count: int = strawberry.field(description="Students with selected grades.")
    grade_count: int = strawberry.field(description="Selected grades.")
    mean: float | None = strawberry.field(description="Mean percentage.")
    median: float | None = strawberry.field(description="Median percentage.")
    std_dev: float | None = strawberry.field(
        description="Population standard deviation."
    )
    min: float | None = strawberry.field(description="Lowest percentage.")
    max: float | None = strawberry.field(description="Highest percentage.")
    letters: LetterCounts = strawberry.field(description="Grades per letter.")
    histogram: list[Bucket] = strawberry.field(description="Ten buckets of 10 points.")
    subjects: list[SubjectStats] = strawberry.field(
        description="Statistics per subject."
    )
    _stats: strawberry.Private[db_analytics.ClassStats]

    # These two name students: FORBIDDEN (and null) for the student role.
    @strawberry.field(
        description="The 5 highest averages. Admins and teachers only: FORBIDDEN "
        "(and null) for students, since it names students."
    )
    def top(self, info: strawberry.Info) -> list[StudentAverage] | None:
        return _averages(analytics.class_ranking(ctx(info), self._stats.top))

    @strawberry.field(
        description="The 5 lowest averages. Admins and teachers only: FORBIDDEN "
        "(and null) for students, since it names students."
    )
    def bottom(self, info: strawberry.Info) -> list[StudentAverage] | None:
        return _averages(analytics.class_ranking(ctx(info), self._stats.bottom))

    @classmethod
    def from_model(cls, stats: db_analytics.ClassStats) -> ClassAnalytics:
        return cls(
            student_count=stats.student_count,
            grade_count=stats.grade_count,
            mean=stats.mean,
            median=stats.median,
            std_dev=stats.std_dev,
            min=stats.min,
            max=stats.max,
            letters=LetterCounts(**stats.letters),
            histogram=[
                Bucket(from_=b.start, to=b.end, count=b.count) for b in stats.histogram
            ],
            subjects=[SubjectStats.from_model(s) for s in stats.subjects],
            _stats=stats,
        )


def _averages(rows: tuple[db_analytics.StudentAverage, ...]) -> list[StudentAverage]:
    return [
        StudentAverage(student_id=r.student_id, name=r.name, average=r.average)
        for r in rows
    ]
