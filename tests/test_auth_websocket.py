"""Authenticator on WebSockets: connection_init payload, credential re-checks."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from db.engine import Database
from db.keys import new_key
from resolvers import auth
from resolvers.auth import Authenticator
from resolvers.cache import LocalCache
from resolvers.context import Limits, Services
from resolvers.errors import Unauthenticated
from resolvers.loaders import CACHE_NAMES
from resolvers.ratelimit import MemoryRateStore
from resolvers.viewer import Viewer
from server.websocket import ConnectionGuard, ConnectionRefusal, authorization_param
from tests.factories import (
    add_key,
    jwt_token,
)
from tests.factories.auth import START, STUDENT, Clock, claims, make_auth

# --- the WebSocket connection_init payload ---------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (None, None),
        ({}, None),
        ({"other": "x"}, None),
        ({"Authorization": "Bearer abc"}, "Bearer abc"),
        ({"authorization": "Bearer abc"}, "Bearer abc"),
        ({"AUTHORIZATION": "Bearer abc"}, "Bearer abc"),
    ],
)
def test_authorization_param_reads_the_key_in_any_case(
    payload: dict[str, Any] | None, expected: str | None
) -> None:
    assert authorization_param(payload) == expected


@pytest.mark.parametrize(
    "payload",
    [
        {"Authorization": 17},
        {"Authorization": None},
        {"Authorization": ["Bearer abc"]},
        {"Authorization": "Bearer a", "authorization": "Bearer b"},
    ],
)
def test_authorization_param_that_is_not_one_string_is_malformed(
    payload: dict[str, Any],
) -> None:
    with pytest.raises(Unauthenticated) as caught:
        authorization_param(payload)

    assert str(caught.value) == auth.MALFORMED_HEADER


def _socket_context(database: Database, authenticator: Authenticator | None) -> Any:
    services = Services(
        database=database,
        cache=LocalCache(CACHE_NAMES, maxsize=10, ttl=60),
        limits=Limits(),
        authenticator=authenticator,
    )
    return services.context(over_http=False)


async def _never_refused(refusal: ConnectionRefusal) -> None:
    raise AssertionError(f"refused: {refusal}")


def _guard(context: Any, host: str | None = "198.51.100.7") -> ConnectionGuard:
    client = SimpleNamespace(host=host, port=5555) if host else None
    websocket = SimpleNamespace(ws=SimpleNamespace(client=client))
    return ConnectionGuard(context, websocket, _never_refused)


async def test_connection_init_sets_the_viewer_and_the_client_host(
    database: Database,
) -> None:
    key, key_id = await add_key(database, "student", student_id=STUDENT)
    context = _socket_context(database, make_auth(database))
    guard = _guard(context)

    refusal = await guard.admit({"authorization": f"Bearer {key}"})

    assert refusal is None
    assert guard.admitted
    assert context.client_host == "198.51.100.7"
    assert context.viewer == Viewer(
        identity=f"key:{key_id}", role="student", student_id=STUDENT, anonymous=False
    )


async def test_connection_init_refusal_leaves_the_default_viewer(
    offline_database: Database,
) -> None:
    context = _socket_context(offline_database, make_auth(offline_database))
    guard = _guard(context, host=None)

    refusal = await guard.admit(None)

    assert refusal == ConnectionRefusal(
        4403, "Forbidden", "missing credentials", {"code": "UNAUTHENTICATED"}
    )
    assert not guard.admitted
    assert context.client_host is None
    assert context.viewer == Viewer()


@pytest.mark.parametrize("aud", ["some-other-service", None])
async def test_connection_init_checks_the_audience_as_http_does(
    offline_database: Database, aud: str | None
) -> None:
    authenticator = make_auth(offline_database, jwt_audience="gradepulse")
    guard = _guard(_socket_context(offline_database, authenticator))

    refusal = await guard.admit(
        {"Authorization": f"Bearer {jwt_token(**claims(aud=aud))}"}
    )

    assert refusal == ConnectionRefusal(
        4403, "Forbidden", "token audience mismatch", {"code": "UNAUTHENTICATED"}
    )
    assert not guard.admitted


async def test_connection_without_an_authenticator_is_refused(
    offline_database: Database,
) -> None:
    context = _socket_context(offline_database, None)
    guard = _guard(context)

    refusal = await guard.admit({"Authorization": f"Bearer {jwt_token(**claims())}"})

    assert refusal == ConnectionRefusal(
        4403,
        "Forbidden",
        "authentication is not configured",
        {"code": "UNAUTHENTICATED"},
    )
    assert not guard.admitted
    assert context.viewer == Viewer()  # still nobody: nothing may run


async def test_connection_recheck_refuses_a_credential_that_expired(
    offline_database: Database,
) -> None:
    clock = Clock()
    context = _socket_context(
        offline_database, make_auth(offline_database, clock=clock)
    )
    guard = _guard(context)
    assert (
        await guard.admit({"Authorization": f"Bearer {jwt_token(**claims())}"}) is None
    )

    clock.now = START + 599
    assert await guard.recheck() is None
    clock.now = START + 600

    assert await guard.recheck() == ConnectionRefusal(
        4403, "Forbidden", "expired token", {"code": "UNAUTHENTICATED"}
    )


async def test_connection_from_a_spent_address_is_refused_with_4429(
    database: Database,
) -> None:
    clock = Clock()
    store = MemoryRateStore(clock=clock)
    authenticator = make_auth(
        database, clock=clock, max_failures=1, failure_store=store
    )
    await store.take("authfail:198.51.100.7", 1, 1)  # the address's one failure
    guard = _guard(_socket_context(database, authenticator))

    # An API key would need a lookup, which a spent address does not get (unless
    # its prefix is a live key's).
    refusal = await guard.admit({"Authorization": f"Bearer {new_key()}"})

    assert refusal == ConnectionRefusal(
        4429,
        "Too many requests",
        "too many failed authentications from this address: retry in 60 s",
        {"code": "RATE_LIMITED", "retryAfter": 60},
    )


# --- when a connection re-checks its credential ------------------------------------


async def test_recheck_in_follows_expiry_and_the_key_cache_ttl(
    offline_database: Database,
) -> None:
    clock = Clock()
    authenticator = make_auth(offline_database, clock=clock, key_cache_ttl_s=5)

    jwt_viewer = Viewer(identity="user:u", anonymous=False, expires_at=START + 60)
    key_viewer = Viewer(identity="key:1", anonymous=False)
    expiring_key = Viewer(identity="key:2", anonymous=False, expires_at=START + 2)

    assert authenticator.recheck_in(jwt_viewer) == 60
    assert authenticator.recheck_in(key_viewer) == 5
    assert authenticator.recheck_in(expiring_key) == 2
    assert authenticator.recheck_in(Viewer(identity="ip:127.0.0.1")) is None
    clock.now = START + 61
    assert authenticator.recheck_in(jwt_viewer) == 0


@pytest.mark.parametrize(("ttl", "every"), [(0, 1.0), (0.25, 1.0), (30, 30)])
def test_keys_are_rechecked_every_ttl_but_at_most_once_a_second(
    offline_database: Database, ttl: float, every: float
) -> None:
    authenticator = make_auth(offline_database, key_cache_ttl_s=ttl)

    assert authenticator.recheck_in(Viewer(identity="key:1")) == every
