"""Query, Mutation and Subscription, composed of each domain's root fields."""

from __future__ import annotations

import strawberry

from schema.analytics import AnalyticsQuery
from schema.audit import AuditQuery
from schema.grades import GradeMutation, GradeQuery, GradeSubscription
from schema.imports import ImportMutation, ImportQuery, ImportSubscription
from schema.monitoring import (
    MonitoringMutation,
    MonitoringQuery,
    MonitoringSubscription,
)
from schema.nodes import NodeQuery
from schema.students import StudentMutation, StudentQuery
from schema.usage import UsageQuery

# The order of the bases is the order of the fields in the schema.


@strawberry.type(
    description="Reads. Who sees what: admins everything; teachers the students of "
    "their grade levels (every level when their credentials list none) and the "
    "monitoring reads; students only their own record, grades and analytics, and "
    "class analytics as aggregates. Lists are filtered to what the viewer may read; "
    "a direct lookup of someone the viewer may not read is a FORBIDDEN error and "
    "null."
)
class Query(
    MonitoringQuery,
    ImportQuery,
    AuditQuery,
    UsageQuery,
    StudentQuery,
    GradeQuery,
    AnalyticsQuery,
    NodeQuery,
):
    pass


@strawberry.type(description="Writes. Expected failures come back as typed results.")
class Mutation(StudentMutation, GradeMutation, MonitoringMutation, ImportMutation):
    pass


@strawberry.type(
    description="Live streams over WebSocket (graphql-transport-ws or graphql-ws)."
)
class Subscription(MonitoringSubscription, GradeSubscription, ImportSubscription):
    pass
