"""Helpers of the test_auth_* modules: a clock, an Authenticator, claims."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from db.engine import Database
from resolvers.auth import Authenticator
from resolvers.errors import Unauthenticated
from tests.factories import (
    DB_STUDENT,
    TEST_JWT_SECRET,
)

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
STUDENT = DB_STUDENT  # the one student of the `database` fixture


class Clock:
    """Epoch seconds that only move when a test moves them."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def at(self, seconds: float = 0.0) -> datetime:
        """Naive UTC, as the database stores times."""
        moment = datetime.fromtimestamp(self.now + seconds, UTC)
        return moment.replace(tzinfo=None)


def make_auth(database: Database, **overrides: Any) -> Authenticator:
    values: dict[str, Any] = {
        "jwt_secret": TEST_JWT_SECRET,
        "jwt_audience": None,
        "auth_required": True,
        "key_cache_ttl_s": 5.0,
        "clock": Clock(),
    }
    values.update(overrides)
    return Authenticator(database, **values)


async def refused(
    authenticator: Authenticator, header: str | None, host: str | None = "127.0.0.1"
) -> str:
    """The refusal message; it must never repeat the credentials."""
    with pytest.raises(Unauthenticated) as caught:
        await authenticator.authenticate(header, host)
    assert caught.value.code == "UNAUTHENTICATED"
    message = str(caught.value)
    if header:
        token = header.partition(" ")[2].strip()
        assert not token or token not in message
    return message


def claims(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"sub": "u-17", "role": "admin", "exp": START + 600}
    values.update(overrides)
    return values  # jwt_token leaves out the claims given as None
