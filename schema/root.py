"""The Query root and build_schema(...): types, scalars, extensions and caches."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Annotated, Any

import strawberry

from resolvers import analytics, grades, students
from schema.analytics import ClassAnalytics, StudentAnalytics
from schema.common import OrderDirection, ctx
from schema.execution import FastExecutor
from schema.extensions import DocumentCache, ErrorCodes
from schema.grades import GradeConnection
from schema.imports import ImportMutation, ImportQuery, ImportSubscription
from schema.monitoring import MonitoringMutation, MonitoringQuery
from schema.mutations import Mutation as DataMutation
from schema.scalars import SCALARS
from schema.students import Student, StudentConnection, StudentOrderField
from schema.subscriptions import Subscription as LiveSubscription

First = Annotated[int, strawberry.argument(description="Page size, 1 to 100.")]
After = Annotated[
    str | None, strawberry.argument(description="The endCursor of the previous page.")
]
GradeLevel = Annotated[
    int | None, strawberry.argument(description="Only this grade level.")
]


@strawberry.type(description="Reads.")
class Query(MonitoringQuery, ImportQuery):
    @strawberry.field(description="One student; null when absent.")
    async def student(self, info: strawberry.Info, student_id: str) -> Student | None:
        row = await students.get_student(ctx(info), student_id)
        return Student.from_model(row) if row else None

    @strawberry.field(description="Students, filtered, sorted and paged.")
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

    @strawberry.field(description="Grades, filtered and paged, oldest first.")
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
    ) -> GradeConnection:
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
        description="One student's analytics; null when the student is absent."
    )
    async def student_analytics(
        self, info: strawberry.Info, student_id: str
    ) -> StudentAnalytics | None:
        value = await analytics.student_analytics(ctx(info), student_id)
        return StudentAnalytics(_value=value) if value else None

    @strawberry.field(
        description="Statistics over the selected grades (all students without filters)."
    )
    async def class_analytics(
        self,
        info: strawberry.Info,
        grade_level: GradeLevel = None,
        subject: Annotated[
            str | None, strawberry.argument(description="Only this subject.")
        ] = None,
    ) -> ClassAnalytics:
        stats = await analytics.class_analytics(
            ctx(info), grade_level=grade_level, subject=subject
        )
        return ClassAnalytics.from_model(stats)

    @strawberry.field(description="Students whose analytics say atRisk, by studentId.")
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


class GradePulseSchema(strawberry.Schema):
    def process_errors(self, errors: list[Any], execution_context: Any = None) -> None:
        """Client errors are answers, not incidents: ErrorCodes logs the unexpected."""


def build_schema(
    *,
    expose_errors: bool = False,
    outer_extensions: Sequence[Any] = (),
    extra_extensions: Sequence[Any] = (),
) -> GradePulseSchema:
    """The schema with its extensions; `expose_errors` shows unexpected messages."""
    return GradePulseSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        scalar_overrides=SCALARS,
        execution_context_class=FastExecutor,
        # Extensions exit in reverse order: `outer_extensions` (the monitor) see the
        # coded errors that ErrorCodes leaves.
        extensions=[
            *outer_extensions,
            partial(ErrorCodes, expose=expose_errors),
            DocumentCache,
            *extra_extensions,
        ],
    )
