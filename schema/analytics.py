"""Class analytics types and AnalyticsQuery (StudentAnalytics is in students.py)."""

from __future__ import annotations

import strawberry

from resolvers import analytics
from schema.common import After, First, GradeLevel, Subject, ctx
from schema.figures import figure
from schema.students import StudentAnalytics, StudentConnection, SubjectStats


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
    "field but top, bottom and a subject's latest is an aggregate that any role may "
    "read; students read them over at least 5 students (fewer: FORBIDDEN), and "
    "only the subjects that at least 5 of those students have."
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
    _stats: strawberry.Private[analytics.ClassStats]

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
    def from_model(cls, stats: analytics.ClassStats) -> ClassAnalytics:
        return cls(
            student_count=stats.student_count,
            grade_count=stats.grade_count,
            mean=figure(stats.mean),
            median=figure(stats.median),
            std_dev=figure(stats.std_dev),
            min=figure(stats.min),
            max=figure(stats.max),
            letters=LetterCounts(**stats.letters),
            histogram=[
                Bucket(from_=b.start, to=b.end, count=b.count) for b in stats.histogram
            ],
            subjects=[
                SubjectStats.from_model(s, of_class=True) for s in stats.subjects
            ],
            _stats=stats,
        )


def _averages(rows: tuple[analytics.StudentAverage, ...]) -> list[StudentAverage]:
    return [
        StudentAverage(student_id=r.student_id, name=r.name, average=figure(r.average))
        for r in rows
    ]


@strawberry.type
class AnalyticsQuery:
    @strawberry.field(
        description="One student's analytics; null when the student is absent. "
        "FORBIDDEN (and null) for a student the viewer may not read, as for student."
    )
    async def student_analytics(
        self, info: strawberry.Info, student_id: str
    ) -> StudentAnalytics | None:
        value = await analytics.student_analytics(ctx(info), student_id)
        return StudentAnalytics(_value=value) if value else None

    @strawberry.field(
        description="Statistics over the selected grades (all students without "
        "filters). Students may read any level's aggregates, but not the fields "
        "that name students (top, bottom: FORBIDDEN). A teacher of some levels: a "
        "gradeLevel outside them is FORBIDDEN (and null); without gradeLevel the "
        "figures cover their levels only."
    )
    async def class_analytics(
        self,
        info: strawberry.Info,
        grade_level: GradeLevel = None,
        subject: Subject = None,
    ) -> ClassAnalytics | None:
        stats = await analytics.class_analytics(
            ctx(info), grade_level=grade_level, subject=subject
        )
        return ClassAnalytics.from_model(stats)

    @strawberry.field(
        description="Students whose analytics say atRisk, by studentId; only those "
        "the viewer may read, as for students."
    )
    async def at_risk_students(
        self,
        info: strawberry.Info,
        grade_level: GradeLevel = None,
        first: First = 20,
        after: After = None,
    ) -> StudentConnection:
        page = await analytics.at_risk_students(
            ctx(info), grade_level=grade_level, first=first, after=after
        )
        return StudentConnection.from_page(page)
