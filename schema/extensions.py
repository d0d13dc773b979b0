"""Schema extensions: every error a client sees carries extensions.code and requestId."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from graphql import DocumentNode, GraphQLError, GraphQLSyntaxError, parse
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from strawberry.extensions import SchemaExtension

from resolvers.errors import ClientError

log = logging.getLogger("gradepulse.errors")
MASKED_MESSAGE = "Unexpected error."
DB_UNAVAILABLE_MESSAGE = "The database is unavailable; try again shortly."
# Failures to reach the database, as opposed to bugs: the client may retry.
_UNAVAILABLE = (OperationalError, InterfaceError, ConnectionError, TimeoutError)


@lru_cache(maxsize=1000)
def _parse(query: str, **options: Any) -> DocumentNode:
    return parse(query, **options)


def _sqlstate(error: BaseException | None) -> str:
    """The SQLSTATE of a driver error ("" when unknown)."""
    if isinstance(error, DBAPIError):
        return str(getattr(error.orig, "sqlstate", None) or "")
    return ""


@lru_cache(maxsize=1000)
def _validate(
    schema: Any, document: DocumentNode, rules: tuple[Any, ...]
) -> list[GraphQLError]:
    from strawberry.schema.schema import validate_document

    return validate_document(schema, document, rules)


class DocumentCache(SchemaExtension):
    """Parse and validate each distinct document once (bounded LRUs shared by all
    requests): one extension for both, since each extension hook costs every request.

    Unlike Strawberry's ParserCache, a document that fails to parse is left to
    Strawberry, which then reports it inside the operation like any other error."""

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.query is not None and context.graphql_document is None:
            with contextlib.suppress(GraphQLError):
                context.graphql_document = _parse(
                    context.query, **context.parse_options
                )
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if context.graphql_document is not None:
            context.pre_execution_errors = _validate(
                context.schema._schema,
                context.graphql_document,
                tuple(context.validation_rules),
            )
        yield


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
        elif isinstance(original, _UNAVAILABLE):
            extensions["code"] = "DB_UNAVAILABLE"
            log.warning("database unavailable: %s", type(original).__name__)
            message = DB_UNAVAILABLE_MESSAGE
        elif original is None or isinstance(original, GraphQLError):
            # Raised by graphql-core while coercing variables or arguments.
            extensions["code"] = "BAD_USER_INPUT"
        else:
            extensions["code"] = "INTERNAL_SERVER_ERROR"
            log.error("unexpected error in %s", error.path, exc_info=original)
            if not self.expose:
                message = MASKED_MESSAGE
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
