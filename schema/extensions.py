"""Schema extensions: each document parsed, limited and validated once, each operation
costed and charged to the caller's rate budget, and every error coded."""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache
from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    GraphQLSyntaxError,
    NoSchemaIntrospectionCustomRule,
    OperationType,
    get_variable_values,
    parse,
    validate,
)
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from strawberry.extensions import SchemaExtension
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

from resolvers.errors import ClientError
from schema.limits import (
    Price,
    QueryLimits,
    check_cost,
    check_shape,
    check_source,
    measure,
    nesting_depth,
    nesting_error,
    operation_error,
    placeholder_document,
    price_operation,
    select_operation,
)
from schema.scalars import serialize_datetime

if TYPE_CHECKING:
    from resolvers.ratelimit import RateState

log = logging.getLogger("gradepulse.errors")
MASKED_MESSAGE = "Unexpected error."
DB_UNAVAILABLE_MESSAGE = "The database is unavailable; try again shortly."
# Failures to reach the database, as opposed to bugs: the client may retry.
DB_UNAVAILABLE_ERRORS = (
    OperationalError,
    InterfaceError,
    ConnectionError,
    TimeoutError,
)
DOCUMENT_CACHE_SIZE = 1000
# Strawberry's validate_document adds these to the rules it is given.
_STRAWBERRY_RULES = (MaybeNullValidationRule, OneOfInputValidationRule)
# graphql-core's execute() default: coercion stops after this many errors.
MAX_COERCION_ERRORS = 50
# graphql-core's did_you_mean(): " Did you mean 'a', 'b', or 'c'?", and for enum
# values " Did you mean the enum value 'A' or 'B'?" (suggestions are names).
_SUGGESTION = re.compile(
    r" Did you mean (?:the enum value )?'[^']*'(?:,? (?:or )?'[^']*')*\?"
)


def _sqlstate(error: BaseException | None) -> str:
    """The SQLSTATE of a driver error ("" when unknown)."""
    if isinstance(error, DBAPIError):
        return str(getattr(error.orig, "sqlstate", None) or "")
    return ""


def _database_error(error: BaseException | None) -> DBAPIError | None:
    """The driver error in an exception or the chain it was raised from."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, DBAPIError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _log_unexpected(error: GraphQLError, original: BaseException) -> None:
    database = _database_error(original)
    if database is None:
        log.error("unexpected error in %s", error.path, exc_info=original)
        return
    # The driver's message and the statement's parameters hold row values
    # (PostgreSQL: "DETAIL: Key (email)=(...) already exists"): log the types, the
    # SQLSTATE and where it was raised, never the messages.
    log.error(
        "unexpected database error in %s: %s from %s (SQLSTATE %s)\n%s",
        error.path,
        type(original).__name__,
        type(database.orig).__name__,
        _sqlstate(database) or "unknown",
        "".join(traceback.format_tb(original.__traceback__)).rstrip(),
    )


@dataclass(slots=True)
class Prepared:
    """One distinct document: parsed and measured once, validated once per rule set,
    costed once per operation unless the cost depends on variables. No document
    means it was refused before parsing, or does not parse."""

    document: DocumentNode | None
    refusal: GraphQLError | None = None
    rules: tuple[Any, ...] | None = None
    errors: list[GraphQLError] = field(default_factory=list)
    costs: dict[str | None, int] = field(default_factory=dict)


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
    ) -> None:
        self.limits = limits
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

    def adopt(self, document: DocumentNode) -> Prepared:
        """Depth, aliases and directives are checked before validation, whose cost
        grows with them."""
        return Prepared(document, check_shape(measure(document), self.limits))

    def validate(
        self, prepared: Prepared, schema: GraphQLSchema, rules: tuple[Any, ...]
    ) -> list[GraphQLError]:
        assert prepared.document is not None
        if prepared.rules != rules:
            prepared.errors = (
                validate(
                    schema,
                    prepared.document,
                    (*rules, *self.extra_rules, *_STRAWBERRY_RULES),
                    hide_suggestions=self.hide_suggestions,
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
            return Price(cached, False, False)
        operation = select_operation(prepared.document, operation_name)
        if operation is None:
            return Price(0, False, False)  # refused in on_parse: nothing runs
        price = price_operation(schema, prepared.document, operation, variables)
        if not price.varies:
            prepared.costs[operation_name] = price.cost
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
        operation = select_operation(prepared.document, operation_name)
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
                extensions={"code": "BAD_USER_INPUT"},
            )
            for error in coerced
        ]

    def operation_type(
        self, query: str, operation_name: str | None
    ) -> OperationType | None:
        """The type of the operation that would run; None when there is none (the
        document is refused, does not parse or names no such operation)."""
        document = self.prepare(query).document
        operation = select_operation(document, operation_name) if document else None
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
            "code": "RATE_LIMITED",
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
        limiter = getattr(app, "rate_limiter", None)
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
        schema = context.schema._schema
        rules = context.validation_rules
        errors = self.documents.validate(prepared, schema, tuple(rules))
        if errors:
            return errors
        variables = context.variables
        if variables is not None and not isinstance(variables, Mapping):
            return [
                GraphQLError(
                    "variables must be an object (or null)",
                    extensions={"code": "BAD_USER_INPUT"},
                )
            ]
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
        limiter = getattr(app, "rate_limiter", None)
        if limiter is not None:
            # Charged once per operation: a subscription's events are not charged.
            rate = self.rate = await limiter.charge(app.viewer, app.client_host, cost)
            app.rate = rate
            if not rate.allowed:
                return [rate_limited_error(rate)]
        return []

    def get_results(self) -> dict[str, Any]:
        rate = self.rate
        return {"rateLimit": rate_limit_extension(rate)} if rate is not None else {}


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


class ErrorCodes(SchemaExtension):
    """Give each error a code; mask unexpected exceptions unless `expose` is set."""

    def __init__(self, *, expose: bool = False) -> None:
        self.expose = expose
        self._validation_errors: set[int] = set()

    def on_validate(self) -> Iterator[None]:
        yield
        for error in self.execution_context.pre_execution_errors or ():
            self._validation_errors.add(id(error))

    def on_operation(self) -> Iterator[None]:
        self._validation_errors = set()
        yield
        result = self.execution_context.result
        if result is not None and getattr(result, "errors", None):
            result.errors = [self.coded(error) for error in result.errors]

    def on_stream_result(self, result: Any) -> None:
        """Results over a WebSocket go out one by one, before on_operation ends."""
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = [self.coded(error) for error in errors]

    def _request_id(self) -> str | None:
        return getattr(self.execution_context.context, "request_id", None)

    def _hide_suggestions(self) -> bool:
        config = getattr(self.execution_context.schema, "config", None)
        return bool(getattr(config, "disable_field_suggestions", False))

    def coded(self, error: GraphQLError) -> GraphQLError:
        original = error.original_error
        extensions: dict[str, Any] = dict(error.extensions or {})
        message = error.message
        if isinstance(original, ClientError):
            extensions.setdefault("code", original.code)
            extensions.update(original.extensions)
        elif "code" in extensions:
            pass
        elif isinstance(error, GraphQLSyntaxError):
            extensions["code"] = "GRAPHQL_PARSE_FAILED"
        elif id(error) in self._validation_errors:
            extensions["code"] = "GRAPHQL_VALIDATION_FAILED"
        elif isinstance(original, DataError) or _sqlstate(original).startswith("22"):
            # The database refused a value taken from the request (SQLSTATE class 22,
            # e.g. a NUL character in a text argument on PostgreSQL).
            extensions["code"] = "BAD_USER_INPUT"
            message = "An argument holds a value the database cannot use."
        elif isinstance(original, DB_UNAVAILABLE_ERRORS):
            extensions["code"] = "DB_UNAVAILABLE"
            log.warning("database unavailable: %s", type(original).__name__)
            message = DB_UNAVAILABLE_MESSAGE
        elif original is None or isinstance(original, GraphQLError):
            # Raised by graphql-core while coercing variables or arguments.
            extensions["code"] = "BAD_USER_INPUT"
        else:
            extensions["code"] = "INTERNAL_SERVER_ERROR"
            _log_unexpected(error, original)
            if not self.expose:
                message = MASKED_MESSAGE
        if "Did you mean" in message and self._hide_suggestions():
            # graphql-core coerces variables during execution, where Strawberry
            # does not pass hide_suggestions on.
            message = _SUGGESTION.sub("", message)
        if request_id := self._request_id():
            extensions["requestId"] = request_id
        return GraphQLError(
            message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            original_error=None,
            extensions=extensions,
        )
