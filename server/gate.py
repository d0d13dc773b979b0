"""The document gate: each document parsed, limited and validated once, each operation
costed and charged to the caller's rate budget, before anything runs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache
from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    NoSchemaIntrospectionCustomRule,
    OperationType,
    get_operation_ast,
    get_variable_values,
    parse,
)
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

from resolvers.context import Context
from resolvers.errors import ErrorCode
from schema.scalars import serialize_datetime
from server.cost import Price, check_cost, objects_in, price_operation
from server.envelope import operation_error
from server.limits import (
    QueryLimits,
    check_shape,
    check_source,
    measure,
    nesting_depth,
    nesting_error,
    placeholder_document,
)
from server.usage import count_once, operation_cells

if TYPE_CHECKING:
    from monitoring.usage import FieldCell, FieldUsageMeter
    from resolvers.ratelimit import RateLimiter, RateState

DOCUMENT_CACHE_SIZE = 1000
# graphql-core's execute() default: coercion stops after this many errors.
MAX_COERCION_ERRORS = 50


def graphql_schema(schema: Any) -> GraphQLSchema:
    """The graphql-core schema of a Strawberry schema. Strawberry 0.341.2 keeps it in
    `_schema` and has no public accessor: this is the one place that reads it."""
    core: GraphQLSchema = schema._schema
    return core


@dataclass(slots=True)
class Prepared:
    """One distinct document: parsed and measured once, validated once per rule set,
    costed once per operation unless the cost depends on variables. No document
    means it was refused before parsing, or does not parse."""

    document: DocumentNode | None
    refusal: GraphQLError | None = None
    rules: tuple[Any, ...] | None = None
    errors: list[GraphQLError] = field(default_factory=list)
    costs: dict[str | None, Price] = field(default_factory=dict)
    # The meter's cells of each operation's fields (server/usage.py), worked out once.
    fields: dict[str | None, tuple[FieldCell, ...]] = field(default_factory=dict)


class Documents:
    """The documents one schema has seen lately (an LRU by query text), with the
    limits and validation settings they are checked against."""

    def __init__(
        self,
        limits: QueryLimits,
        *,
        introspection: bool = True,
        suggestions: bool = True,
        maxsize: int = DOCUMENT_CACHE_SIZE,
        usage: FieldUsageMeter | None = None,
    ) -> None:
        self.limits = limits
        # Counts the fields of each operation admitted (monitoring/usage.py).
        self.usage = usage
        self.extra_rules: tuple[Any, ...] = (
            () if introspection else (NoSchemaIntrospectionCustomRule,)
        )
        self.hide_suggestions = not suggestions
        self._cache: LRUCache[Any, Prepared] = LRUCache(maxsize)

    def prepare(self, query: str, options: Mapping[str, Any] | None = None) -> Prepared:
        key: Any = (query, tuple(sorted(options.items()))) if options else query
        prepared = self._cache.get(key)
        if prepared is None:
            prepared = self._prepare(query, options or {})
            # An oversized document is refused on its length alone: never a key.
            if len(query) <= self.limits.max_document_chars:
                self._cache[key] = prepared
        return prepared

    def _prepare(self, query: str, options: Mapping[str, Any]) -> Prepared:
        refusal = check_source(query, self.limits)
        if refusal is not None:
            return Prepared(None, refusal)
        try:
            document = parse(query, **options)
        except GraphQLError:
            # Left to Strawberry, which reports it inside the operation.
            return Prepared(None)
        except RecursionError:
            # Only with a MAX_NESTING far above the default: refuse what the parser
            # could not hold, as too deep.
            return Prepared(None, nesting_error(nesting_depth(query), self.limits))
        return self.adopt(document)

    def admissible(self, query: str) -> bool:
        """Whether the document parses within the limits (what a client may
        register as a persisted query), by the preparation the gate caches."""
        prepared = self.prepare(query)
        return prepared.document is not None and prepared.refusal is None

    def adopt(self, document: DocumentNode) -> Prepared:
        """Depth, aliases and directives are checked before validation, whose cost
        grows with them."""
        return Prepared(document, check_shape(measure(document), self.limits))

    def validate(
        self, prepared: Prepared, schema: GraphQLSchema, rules: tuple[Any, ...]
    ) -> list[GraphQLError]:
        assert prepared.document is not None
        if prepared.rules != rules:
            # Strawberry's own validation (its rules added to ours); suggestions
            # are taken out of the messages by ErrorCodes when they are hidden.
            prepared.errors = (
                validate_document(
                    schema, prepared.document, (*rules, *self.extra_rules)
                )
                if rules  # Strawberry skips validation when given no rules
                else []
            )
            prepared.rules = rules
        return prepared.errors

    def cost(
        self,
        prepared: Prepared,
        schema: GraphQLSchema,
        operation_name: str | None,
        variables: Mapping[str, Any] | None,
    ) -> Price:
        assert prepared.document is not None
        cached = prepared.costs.get(operation_name)
        if cached is not None:
            return cached
        operation = get_operation_ast(prepared.document, operation_name)
        if operation is None:
            return Price(0, False, False)  # refused in on_parse: nothing runs
        price = price_operation(schema, prepared.document, operation, variables)
        if not price.varies:
            prepared.costs[operation_name] = price
        return price

    def variable_errors(
        self,
        prepared: Prepared,
        schema: GraphQLSchema,
        operation_name: str | None,
        variables: Mapping[str, Any] | None,
    ) -> list[GraphQLError]:
        """What graphql-core's variable coercion reports for the operation, with
        suggestions left out as configured (Strawberry does not pass that on)."""
        assert prepared.document is not None
        operation = get_operation_ast(prepared.document, operation_name)
        if operation is None:
            return []
        coerced = get_variable_values(
            schema,
            operation.variable_definitions or (),
            dict(variables or {}),
            max_errors=MAX_COERCION_ERRORS,
            hide_suggestions=self.hide_suggestions,
        )
        if not isinstance(coerced, list):
            return []
        return [
            GraphQLError(
                error.message,
                nodes=error.nodes,
                source=error.source,
                positions=error.positions,
                extensions={"code": ErrorCode.BAD_USER_INPUT},
            )
            for error in coerced
        ]

    def operation_type(
        self, query: str, operation_name: str | None
    ) -> OperationType | None:
        """The type of the operation that would run; None when there is none (the
        document is refused, does not parse or names no such operation)."""
        document = self.prepare(query).document
        operation = get_operation_ast(document, operation_name) if document else None
        return operation.operation if operation else None

    def timeout_for(self, query: str, operation_name: str | None) -> float | None:
        """OPERATION_TIMEOUT_S for a query or a mutation; None for a subscription,
        which runs until it ends."""
        if self.operation_type(query, operation_name) is OperationType.SUBSCRIPTION:
            return None
        return self.limits.operation_timeout_s


def rate_limited_error(rate: RateState) -> GraphQLError:
    return GraphQLError(
        f"the rate limit of {rate.limit} points per minute is spent: this operation "
        f"costs {rate.cost} and {rate.remaining} remain; retry in "
        f"{rate.retry_after_s} s",
        extensions={
            "code": ErrorCode.RATE_LIMITED,
            "limit": rate.limit,
            "remaining": rate.remaining,
            "retryAfter": rate.retry_after_s,
        },
    )


class DocumentGate(SchemaExtension):
    """Before anything runs: parse each distinct document once, refuse it over a
    limit, validate it once, cost the operation and charge the caller's rate budget.
    One extension for all of it, since each extension hook costs every request.

    A document refused before parsing is replaced by a placeholder that is never
    executed, and the refusal is returned from on_validate as Strawberry's own
    validation errors would be: an exception raised in on_parse would escape
    Strawberry's WebSocket path. A document that fails to parse is left to
    Strawberry, which then reports it inside the operation like any other error.
    An operationName that selects no operation (none given for a document with
    several, or one the document does not hold) is refused the same way: Strawberry
    would run the first operation, or raise before any extension could answer."""

    def __init__(self, *, documents: Documents) -> None:
        self.documents = documents
        self.prepared: Prepared | None = None
        self.rate: RateState | None = None
        # This request's refusal, where the document's own is in `prepared`.
        self.refusal: GraphQLError | None = None
        # The query's points when a list counted its estimate (settled after).
        self.estimated_cost: int | None = None

    async def on_parse(self) -> AsyncIterator[None]:
        context = self.execution_context
        if context.query is not None and context.graphql_document is None:
            prepared = self.prepared = self.documents.prepare(
                context.query, context.parse_options
            )
            # Without a document yet, this is the operationName the request gave.
            operation_name = context.operation_name
            if prepared.refusal is None and prepared.document is not None:
                self.refusal = operation_error(prepared.document, operation_name)
            if prepared.refusal is not None or self.refusal is not None:
                context.graphql_document = placeholder_document(
                    operation_name, context.allowed_operations
                )
            elif prepared.document is not None:
                context.graphql_document = prepared.document
            else:
                # A syntax error: Strawberry reports it and validation never runs,
                # but the response still shows the caller's budget.
                await self._peek()
        yield

    async def on_validate(self) -> AsyncIterator[None]:
        context = self.execution_context
        if context.graphql_document is not None:
            # Not None (even when empty): Strawberry's own validation is skipped.
            context.pre_execution_errors = await self._admit()
            if self.rate is None:
                await self._peek()  # refused before costing: nothing charged
        yield

    async def _peek(self) -> None:
        """The caller's budget without a charge (a cost of 0 always passes)."""
        app = self.execution_context.context
        limiter = _rate_limiter(app)
        if limiter is not None:
            self.rate = app.rate = await limiter.charge(app.viewer, app.client_host, 0)

    async def _admit(self) -> list[GraphQLError]:
        context = self.execution_context
        prepared = self.prepared
        if prepared is None:  # a document parsed elsewhere
            assert context.graphql_document is not None
            prepared = self.prepared = self.documents.adopt(context.graphql_document)
        if (refusal := prepared.refusal or self.refusal) is not None:
            return [refusal]
        schema = graphql_schema(context.schema)
        rules = context.validation_rules
        errors = self.documents.validate(prepared, schema, tuple(rules))
        if errors:
            return errors
        variables = context.variables  # an object or None: server/envelope.py
        operation_name = context.operation_name
        price = self.documents.cost(prepared, schema, operation_name, variables)
        if price.invalid_variables:
            # Execution would refuse them: say so now, and charge nothing.
            errors = self.documents.variable_errors(
                prepared, schema, operation_name, variables
            )
            if errors:
                return errors
        cost = price.cost
        if (refusal := check_cost(cost, self.documents.limits)) is not None:
            return [refusal]
        app = context.context
        limiter = _rate_limiter(app)
        if limiter is not None:
            # Charged once per operation: a subscription's events are not charged,
            # and an operation the planned path handed over was charged there.
            rate = app.precharged
            if rate is None:
                rate = await limiter.charge(app.viewer, app.client_host, price.charge)
            app.precharged = None
            self.rate = app.rate = rate
            if not rate.allowed:
                return [rate_limited_error(rate)]
            if price.estimated:
                self.estimated_cost = cost
        if (usage := self.documents.usage) is not None:
            cells = operation_cells(
                usage, prepared.fields, schema, prepared.document, operation_name
            )
            count_once(usage, cells, app)
        return []

    async def on_execute(self) -> AsyncIterator[None]:
        yield
        if self.estimated_cost is not None and self.rate is not None:
            result = self.execution_context.result
            app = self.execution_context.context
            self.rate = app.rate = await settle_cost(
                app, self.rate, self.estimated_cost, getattr(result, "data", None)
            )

    def get_results(self) -> dict[str, Any]:
        rate = self.rate
        return {"rateLimit": rate_limit_extension(rate)} if rate is not None else {}


async def settle_cost(
    context: Context, rate: RateState, estimated: int, data: Any
) -> RateState:
    """Charge what lists without a page size held beyond their estimates (say a
    student's 20,000 grades where `Student.grades` counts 20): the answer's
    objects, each a point, less the points the query was charged for. Taken
    however little remains: the work is done, the caller's next operations wait."""
    limiter = context.services.rate_limiter
    extra = objects_in(data) - estimated
    if limiter is None or extra <= 0:
        return rate
    after = await limiter.charge_after(context.viewer, context.client_host, extra)
    return after._replace(cost=rate.cost + extra)


def _rate_limiter(context: Any) -> RateLimiter | None:
    return context.services.rate_limiter if isinstance(context, Context) else None


def rate_limit_extension(rate: RateState) -> dict[str, Any]:
    """`extensions.rateLimit` of a response: the operation's points and the budget."""
    return {
        "cost": rate.cost,
        "limit": rate.limit,
        "remaining": rate.remaining,
        "resetAt": _reset_text(rate.reset_at),
    }


@lru_cache(maxsize=1)
def _reset_text(reset_at: datetime) -> str:
    # Whole seconds: most operations of a second share the text.
    return serialize_datetime(reset_at)
