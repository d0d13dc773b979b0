"""The root types, composed of each domain's root fields (server/build.py makes the
schema of them)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from resolvers import analytics, grades, students
from schema.analytics import ClassAnalytics, StudentAnalytics
from schema.audit import AuditQuery
from schema.common import OrderDirection, ctx
from schema.grades import GradeConnection
from schema.imports import ImportMutation, ImportQuery, ImportSubscription
from schema.monitoring import MonitoringMutation, MonitoringQuery
from schema.mutations import Mutation as DataMutation
from schema.students import Student, StudentConnection, StudentOrderField
from schema.subscriptions import Subscription as LiveSubscription

First = Annotated[int, strawberry.argument(description="Page size, 1 to 100.")]
After = Annotated[
    str | None, strawberry.argument(description="The endCursor of the previous page.")
]
GradeLevel = Annotated[
    int | None, strawberry.argument(description="Only this grade level.")
]


@strawberry.type(
    description="Reads. Who sees what: admins everything; teachers the students of "
    "their grade levels (every level when their credentials list none) and the "
    "monitoring reads; students only their own record, grades and analytics, and "
    "class analytics as aggregates. Lists are filtered to what the viewer may read; "
    "a direct lookup of someone the viewer may not read is a FORBIDDEN error and "
    "null."
)
class Query(MonitoringQuery, ImportQuery, AuditQuery):
    @strawberry.field(
        description="One student; null when absent. FORBIDDEN (and null) for a "
        "student the viewer may not read: a student asking for anyone else (whether "
        "or not that id exists), a teacher for a student outside their levels."
    )
    async def student(self, info: strawberry.Info, student_id: str) -> Student | None:
        row = await students.get_student(ctx(info), student_id)
        return Student.from_model(row) if row else None

    @strawberry.field(
        description="Students, filtered, sorted and paged; only those the viewer "
        "may read (a teacher: their grade levels; a student: themselves), never "
        "FORBIDDEN. totalCount counts the same students."
    )
    async def students(
        self,
        info: strawberry.Info,
        first: First = 20,
        after: After = None,
        grade_level: GradeLevel = None,
        search: Annotated[
            str | None,
            strawberry.argument(
                description="Case-insensitive match on name, studentId or email."
            ),
        ] = None,
        order_by: Annotated[
            StudentOrderField, strawberry.argument(description="Sort key.")
        ] = StudentOrderField.STUDENT_ID,
        direction: Annotated[
            OrderDirection, strawberry.argument(description="Sort direction.")
        ] = OrderDirection.ASC,
    ) -> StudentConnection:
        page = await students.list_students(
            ctx(info),
            first=first,
            after=after,
            grade_level=grade_level,
            search=search,
            order_by=order_by.value,
            descending=direction is OrderDirection.DESC,
        )
        return StudentConnection.from_page(page)

    @strawberry.field(
        description="Grades, filtered and paged, oldest first; only grades of "
        "students the viewer may read. With studentId of a student the viewer may "
        "not read: FORBIDDEN and null."
    )
    async def grades(
        self,
        info: strawberry.Info,
        student_id: Annotated[
            str | None, strawberry.argument(description="Only this student's grades.")
        ] = None,
        subject: Annotated[
            str | None, strawberry.argument(description="Only this subject.")
        ] = None,
        recorded_since: Annotated[
            datetime | None, strawberry.argument(description="Recorded at or after.")
        ] = None,
        recorded_before: Annotated[
            datetime | None, strawberry.argument(description="Recorded before.")
        ] = None,
        first: First = 20,
        after: After = None,
    ) -> GradeConnection | None:
        page = await grades.list_grades(
            ctx(info),
            student_id=student_id,
            subject=subject,
            recorded_since=recorded_since,
            recorded_before=recorded_before,
            first=first,
            after=after,
        )
        return GradeConnection.from_page(page)

    @strawberry.field(description="Every subject that has grades, alphabetically.")
    async def subjects(self, info: strawberry.Info) -> list[str]:
        return await grades.list_subjects(ctx(info))

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
        subject: Annotated[
            str | None, strawberry.argument(description="Only this subject.")
        ] = None,
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


@strawberry.type(description="Writes. Expected failures come back as typed results.")
class Mutation(DataMutation, MonitoringMutation, ImportMutation):
    pass


@strawberry.type(
    description="Live streams over WebSocket (graphql-transport-ws or graphql-ws)."
)
class Subscription(LiveSubscription, ImportSubscription):
    pass
