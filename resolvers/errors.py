"""ErrorCode, every `extensions.code` the server sends, and the errors resolvers raise
to show one to the client as a top-level GraphQL error."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """Every `extensions.code` a client can see. `request_error` marks the codes of
    a request refused before execution: under application/graphql-response+json
    they answer 4xx with no `data` entry. `server_error` marks the server's own
    failures (the error rate of the monitor), as opposed to refused requests."""

    request_error: bool
    server_error: bool

    def __new__(
        cls, value: str, request_error: bool = False, server_error: bool = False
    ) -> ErrorCode:
        member = str.__new__(cls, value)
        member._value_ = value
        member.request_error = request_error
        member.server_error = server_error
        return member

    # The request (refused before anything runs)
    GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED", True
    GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED", True
    BAD_USER_INPUT = "BAD_USER_INPUT", True
    # Persisted operations: a hash the server does not know (send the document
    # with it), a document outside the trusted manifest (PERSISTED_OPERATIONS)
    PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND", True
    PERSISTED_QUERY_REQUIRED = "PERSISTED_QUERY_REQUIRED", True
    # Limits
    DOCUMENT_TOO_LARGE = "DOCUMENT_TOO_LARGE", True
    QUERY_TOO_DEEP = "QUERY_TOO_DEEP", True
    TOO_MANY_TOKENS = "TOO_MANY_TOKENS", True
    TOO_MANY_ALIASES = "TOO_MANY_ALIASES", True
    TOO_MANY_DIRECTIVES = "TOO_MANY_DIRECTIVES", True
    QUERY_TOO_COSTLY = "QUERY_TOO_COSTLY", True
    OPERATION_TIMEOUT = "OPERATION_TIMEOUT", True
    BODY_TOO_LARGE = "BODY_TOO_LARGE", True
    BATCH_TOO_LARGE = "BATCH_TOO_LARGE", True
    TOO_MANY_SUBSCRIPTIONS = "TOO_MANY_SUBSCRIPTIONS"
    SUBSCRIBER_TOO_SLOW = "SUBSCRIBER_TOO_SLOW"
    # Who is asking
    UNAUTHENTICATED = "UNAUTHENTICATED", True
    FORBIDDEN = "FORBIDDEN"
    RATE_LIMITED = "RATE_LIMITED", True
    # Data
    NOT_FOUND = "NOT_FOUND"
    # The server
    DB_UNAVAILABLE = "DB_UNAVAILABLE", False, True
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR", False, True


REQUEST_ERROR_CODES = frozenset(code for code in ErrorCode if code.request_error)
SERVER_ERROR_CODES = frozenset(code for code in ErrorCode if code.server_error)


class ClientError(Exception):
    """Bad input or a refused request: shown to the client with its code, never masked."""

    code: ErrorCode = ErrorCode.BAD_USER_INPUT

    def __init__(
        self, message: str, *, code: ErrorCode | None = None, **extensions: Any
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.extensions = extensions


class BadUserInput(ClientError):
    code = ErrorCode.BAD_USER_INPUT


class Forbidden(ClientError):
    code = ErrorCode.FORBIDDEN


class Unauthenticated(ClientError):
    """Missing or refused credentials; the message never repeats the token."""

    code = ErrorCode.UNAUTHENTICATED


class TooManyFailedAuthentications(ClientError):
    """Credentials refused before they are checked: the client's address spent its
    budget of failed attempts. `extensions["retryAfter"]`: whole seconds to wait."""

    code = ErrorCode.RATE_LIMITED


class TooManySubscriptions(ClientError):
    code = ErrorCode.TOO_MANY_SUBSCRIPTIONS


class SubscriberTooSlow(ClientError):
    code = ErrorCode.SUBSCRIBER_TOO_SLOW
