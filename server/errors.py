"""The mapping of exceptions to `extensions.code` (ErrorCode): the ErrorCodes schema
extension, the masking of unexpected errors, and the coded errors the endpoint
sends outside GraphQL execution."""

from __future__ import annotations

import logging
import re
import time
import traceback
from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError, GraphQLSyntaxError
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from strawberry.extensions import SchemaExtension

from resolvers.errors import ClientError, ErrorCode
from server.limits import limit_error

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
# graphql-core's did_you_mean(): " Did you mean 'a', 'b', or 'c'?", for enum values
# " Did you mean the enum value 'A' or 'B'?", and for fields of an abstract type
# " Did you mean to use an inline fragment on 'A'?" (suggestions are names).
_NAMES = r"(?:the enum value |to use an inline fragment on )?'[^']*'(?:,? (?:or )?'[^']*')*\?"
_SUGGESTION = re.compile(r" Did you mean " + _NAMES)
# An unknown input field reads "... field 'x'. Did you mean 'y'? Found: ..." with a
# suggestion and "... field 'x', found: ..." without one.
_SUGGESTION_FOUND = re.compile(r"\. Did you mean " + _NAMES + r" Found:")


def without_suggestions(message: str) -> str:
    """The message as graphql-core words it when told to hide suggestions (Strawberry
    0.341.2 does not pass that on to validation or to variable coercion)."""
    return _SUGGESTION.sub("", _SUGGESTION_FOUND.sub(", found:", message))


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


def coded_error(
    code: ErrorCode, message: str, request_id: str | None, **extensions: Any
) -> dict[str, Any]:
    """A formatted GraphQL error for a refusal outside execution (the envelope, the
    credentials), with its code and the request id."""
    coded: dict[str, Any] = {"code": code, **extensions}
    if request_id:
        coded["requestId"] = request_id
    return {"message": message, "extensions": coded}


def timeout_error(limit: float, started: float, request_id: str | None) -> GraphQLError:
    """An operation stopped after OPERATION_TIMEOUT_S (`started`: perf_counter)."""
    return limit_error(
        ErrorCode.OPERATION_TIMEOUT,
        f"the operation ran longer than {limit:g} s and was stopped",
        limit=limit,
        actual=round(time.perf_counter() - started, 3),
        **({"requestId": request_id} if request_id else {}),
    )


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
            extensions["code"] = ErrorCode.GRAPHQL_PARSE_FAILED
        elif id(error) in self._validation_errors:
            extensions["code"] = ErrorCode.GRAPHQL_VALIDATION_FAILED
        elif isinstance(original, DataError) or _sqlstate(original).startswith("22"):
            # The database refused a value taken from the request (SQLSTATE class 22,
            # e.g. a NUL character in a text argument on PostgreSQL).
            extensions["code"] = ErrorCode.BAD_USER_INPUT
            message = "An argument holds a value the database cannot use."
        elif isinstance(original, DB_UNAVAILABLE_ERRORS):
            extensions["code"] = ErrorCode.DB_UNAVAILABLE
            log.warning("database unavailable: %s", type(original).__name__)
            message = DB_UNAVAILABLE_MESSAGE
        elif original is None or isinstance(original, GraphQLError):
            # Raised by graphql-core while coercing variables or arguments.
            extensions["code"] = ErrorCode.BAD_USER_INPUT
        else:
            extensions["code"] = ErrorCode.INTERNAL_SERVER_ERROR
            _log_unexpected(error, original)
            if not self.expose:
                message = MASKED_MESSAGE
        if "Did you mean" in message and self._hide_suggestions():
            message = without_suggestions(message)
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
