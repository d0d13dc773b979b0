"""Errors a client sees as top-level GraphQL errors, each with an `extensions.code`."""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Bad input or a refused request: shown to the client with its code, never masked."""

    code = "BAD_USER_INPUT"

    def __init__(
        self, message: str, *, code: str | None = None, **extensions: Any
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.extensions = extensions


class BadUserInput(ClientError):
    code = "BAD_USER_INPUT"


class Forbidden(ClientError):
    code = "FORBIDDEN"


class Unauthenticated(ClientError):
    """Missing or refused credentials; the message never repeats the token."""

    code = "UNAUTHENTICATED"


class TooManyFailedAuthentications(ClientError):
    """Credentials refused before they are checked: the client's address spent its
    budget of failed attempts. `extensions["retryAfter"]`: whole seconds to wait."""

    code = "RATE_LIMITED"


class TooManySubscriptions(ClientError):
    code = "TOO_MANY_SUBSCRIPTIONS"
