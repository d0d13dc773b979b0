"""build_schema(...): the root types with the scalars, the executor and the schema
extensions, in the order they must run."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from functools import partial
from typing import Any

import strawberry
from graphql import GraphQLObjectType
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.schema import StreamResult

from monitoring.monitor import Monitor
from monitoring.timing import OperationMonitor
from resolvers.context import Context
from resolvers.grades import NUMERIC_ID_USES
from schema.root import Mutation, Query, Subscription
from schema.scalars import SCALARS
from server.audit import AuditExtension
from server.errors import ErrorCodes
from server.execution import executor_class
from server.gate import DocumentGate, Documents, graphql_schema
from server.limits import QueryLimits
from server.pipeline import Pipeline
from server.usage import schema_fields, subscription_fields


class GradePulseSchema(strawberry.Schema):
    # The documents seen lately and their limits (the WebSocket handler asks them
    # an operation's type); set by build_schema.
    documents: Documents | None = None
    # The planned request path (compiled plans), when switched on.
    pipeline: Pipeline | None = None

    def process_errors(self, errors: list[Any], execution_context: Any = None) -> None:
        """Client errors are answers, not incidents: ErrorCodes logs the unexpected."""

    async def stream(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> StreamResult:
        """Each streamed operation (the WebSocket handlers stream every operation of
        a connection, concurrently) runs on a context of its own: fresh DataLoaders,
        its own rate budget and audit record, the connection's viewer."""
        if isinstance(context_value, Context):
            context_value = context_value.for_operation()
        return await super().stream(
            query, variable_values, context_value, *args, **kwargs
        )


def build_schema(
    *,
    expose_errors: bool = False,
    outer_extensions: Sequence[Any] = (),
    extra_extensions: Sequence[Any] = (),
    audit: bool = True,
    limits: QueryLimits | None = None,
    introspection: bool = True,
    suggestions: bool = True,
    resolver_only_extensions: tuple[type, ...] = (),
    monitor: Monitor | None = None,
    server_errors: Collection[str] = (),
    query_plans: bool = False,
) -> GradePulseSchema:
    """The schema with its extensions; `expose_errors` shows unexpected messages.
    `audit=False` (the bench's unaudited app only) leaves out the FERPA audit log.
    `limits` bound every document; `introspection=False` refuses __schema and
    __type, `suggestions=False` leaves "Did you mean" out of error messages.
    `resolver_only_extensions`: the types of extensions whose `resolve` hook ignores
    Strawberry's basic attribute fields, so that the executor may complete those
    fields without calling it (server/execution.py).
    `monitor` times and prices each operation (`server_errors`: the codes that count
    as the server's failures). `query_plans` runs queries the planner covers on
    their compiled plans (server/pipeline.py); only with no `outer_extensions` or
    `extra_extensions`, which must see every operation."""
    documents = Documents(
        limits or QueryLimits(),
        introspection=introspection,
        suggestions=suggestions,
        # Each operation admitted counts its fields (monitoring/usage.py).
        usage=monitor.usage if monitor is not None else None,
    )
    schema = GradePulseSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        scalar_overrides=SCALARS,
        # The monitor times real resolvers only: the fast path may skip basic fields.
        execution_context_class=executor_class(
            (*resolver_only_extensions, *([OperationMonitor] if monitor else []))
        ),
        config=StrawberryConfig(disable_field_suggestions=not suggestions),
        # Extensions exit in reverse order: `outer_extensions` (the monitor) see the
        # coded errors that ErrorCodes leaves.
        extensions=[
            *(
                [
                    partial(
                        OperationMonitor, monitor=monitor, server_errors=server_errors
                    )
                ]
                if monitor is not None
                else []
            ),
            *outer_extensions,
            partial(ErrorCodes, expose=expose_errors),
            partial(DocumentGate, documents=documents),
            # Inside ErrorCodes, which leaves a withheld response's coded error be.
            *([AuditExtension] if audit else []),
            *extra_extensions,
        ],
    )
    schema.documents = documents
    _drop_type_checks(schema)
    if query_plans and not outer_extensions and not extra_extensions:
        schema.pipeline = Pipeline(
            schema, monitor=monitor, audit=audit, server_errors=server_errors
        )
    return schema


def _drop_type_checks(schema: strawberry.Schema) -> None:
    """Strawberry gives each implementation of an interface an `is_type_of` check,
    which graphql-core calls for every object of the type, wherever it is returned.
    The Node interface resolves an object's type by its class (Strawberry's
    interface `resolve_type`), and each field returning Student or Grade returns
    one (Student.grades: the records, which have every attribute Grade reads): the
    check only cost a call per object and kept those types off the executor's
    fast path (server/execution.py), so it goes."""
    for graphql_type in schema._schema.type_map.values():
        if isinstance(graphql_type, GraphQLObjectType) and any(
            interface.name == "Node" for interface in graphql_type.interfaces
        ):
            graphql_type.is_type_of = None


def declare_usage(schema: strawberry.Schema, monitor: Monitor) -> None:
    """The schema's fields and subscription root fields to the monitor: their
    usage and subscription series exist from the start, at 0, and fieldUsage lists
    every field (with monitoring switched off too)."""
    core = graphql_schema(schema)
    monitor.usage.declare(schema_fields(core))
    # Deprecated forms of an argument's value, counted where they are read.
    monitor.usage.declare(NUMERIC_ID_USES.values())
    monitor.registry.subscriptions.declare(subscription_fields(core))
