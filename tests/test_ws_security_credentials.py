"""WebSocket security: credentials that expire or are revoked mid-connection."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from db.keys import revoke_key
from server.websocket import ConnectionGuard
from tests.asgi_ws import AsgiWebSocket
from tests.factories import (
    add_key,
    bearer_header,
    jwt_token,
    wait_until,
)
from tests.factories.ws_security import (
    LEGACY,
    PROTOCOLS,
    REMOTE,
    TRANSPORT,
    connect,
    connection_error,
    http,
    secured_api,
    start,
    until_closed,
)

METRICS = "subscription { metrics(intervalMs: 1000) { uptimeSeconds } }"
GRADES = "{ grades { edges { node { score } } } }"


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


async def revoke(api: Any, key_id: int) -> None:
    async with api.services.database.writing() as session:
        await revoke_key(session, key_id, utcnow())


async def active_subscriptions_drop_to_zero(api: Any, timeout: float = 10.0) -> bool:
    """The server ended the subscriptions itself: the test client never sent a
    disconnect (it does on leaving the `async with`)."""
    registry = api.app.state.monitor.registry
    deadline = time.monotonic() + timeout
    while registry.active_subscriptions > 0:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def data_of(message: dict[str, Any], protocol: str) -> Any:
    assert message["type"] == ("next" if protocol == TRANSPORT else "data"), message
    return message["payload"]["data"]


def no_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the re-check before each operation is left to refuse."""
    monkeypatch.setattr(ConnectionGuard, "watch", lambda self: None)


# --- credentials that end while the connection is open ---------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_subscribe_after_the_jwt_expired_closes_with_4403(
    make_api: Any, seeded_url: str, protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_watch(monkeypatch)
    api = await secured_api(make_api, seeded_url)
    teacher = jwt_token("teacher", lifetime_s=1.0)

    async with AsgiWebSocket(api.app, subprotocol=protocol, client=REMOTE) as ws:
        assert await connect(ws, bearer_header(teacher)) == {"type": "connection_ack"}
        await start(ws, protocol, "before", "{ __typename }")
        before = await ws.receive_json()
        assert await ws.receive_json() == {"id": "before", "type": "complete"}
        await asyncio.sleep(1.1)
        over_http = await http(api, GRADES, teacher)
        api.counter.reset()
        await start(ws, protocol, "after", GRADES)
        after = await until_closed(ws)
        statements = list(api.counter.statements)

    assert data_of(before, protocol) == {"__typename": "Query"}
    assert over_http.status_code == 401
    assert over_http.json()["errors"][0]["message"] == "expired token"
    assert ws.close_code == 4403
    assert statements == []  # the grades query never ran
    if protocol == TRANSPORT:
        assert after == []
    else:
        assert [connection_error(m) for m in after] == [
            ("expired token", "UNAUTHENTICATED")
        ]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_running_subscription_ends_with_4403_when_the_jwt_expires(
    make_api: Any, seeded_url: str, protocol: str
) -> None:
    api = await secured_api(make_api, seeded_url)
    expires_at = time.time() + 1.5
    teacher = jwt_token("teacher", exp=expires_at)

    async with AsgiWebSocket(api.app, subprotocol=protocol, client=REMOTE) as ws:
        assert await connect(ws, bearer_header(teacher)) == {"type": "connection_ack"}
        await start(ws, protocol, "m", METRICS)
        first = await ws.receive_json()
        rest = await until_closed(ws)
        closed_at = time.time()
        ended = await active_subscriptions_drop_to_zero(api)

    assert first["id"] == "m"  # the subscription was running before the end
    assert data_of(first, protocol)["metrics"]["uptimeSeconds"] > 0
    assert ws.close_code == 4403
    # (Never before it; the slack is for a busy 2-core CI.)
    assert expires_at <= closed_at < expires_at + 2.5
    assert ended
    events = [m for m in rest if m["type"] != "connection_error"]
    assert all(m["id"] == "m" and m["type"] in ("next", "data") for m in events)
    if protocol == LEGACY:
        assert connection_error(rest[-1]) == ("expired token", "UNAUTHENTICATED")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_revoked_key_ends_a_running_subscription_within_twice_the_ttl(
    make_api: Any, scratch_url: str, protocol: str
) -> None:
    ttl = 1.0
    api = await secured_api(make_api, scratch_url, api_key_cache_ttl_s=ttl)
    key, key_id = await add_key(api.services.database)

    async with AsgiWebSocket(api.app, subprotocol=protocol, client=REMOTE) as ws:
        assert await connect(ws, bearer_header(key)) == {"type": "connection_ack"}
        await start(ws, protocol, "m", METRICS)
        first = await ws.receive_json()
        await revoke(api, key_id)
        revoked_at = time.monotonic()
        rest = await until_closed(ws)
        elapsed = time.monotonic() - revoked_at
        ended = await active_subscriptions_drop_to_zero(api)

    assert first["id"] == "m"  # the subscription was running before the end
    assert data_of(first, protocol)["metrics"]["uptimeSeconds"] > 0
    assert ws.close_code == 4403
    # Within two cache TTLs; the rest is slack for a busy 2-core CI.
    assert elapsed <= 2 * ttl + 2.0
    assert ended
    if protocol == LEGACY:
        assert connection_error(rest[-1]) == (
            "unknown or revoked API key",
            "UNAUTHENTICATED",
        )


async def test_a_key_that_expires_ends_its_connection_at_its_expiry(
    make_api: Any, scratch_url: str
) -> None:
    api = await secured_api(make_api, scratch_url, api_key_cache_ttl_s=60)
    expires_at = time.time() + 1.5
    key, _ = await add_key(
        api.services.database,
        "teacher",
        name="short",
        expires_at=datetime.fromtimestamp(expires_at, UTC).replace(tzinfo=None),
    )

    async with AsgiWebSocket(api.app, subprotocol=LEGACY, client=REMOTE) as ws:
        assert await connect(ws, bearer_header(key)) == {"type": "connection_ack"}
        await start(ws, LEGACY, "m", METRICS)
        rest = await until_closed(ws)
        closed_at = time.time()
        ended = await active_subscriptions_drop_to_zero(api)

    # Long before the key cache's TTL of 60 s: the expiry is known in advance.
    # (Never before it; the slack is for a busy 2-core CI.)
    assert expires_at <= closed_at < expires_at + 2.5
    assert ws.close_code == 4403
    assert ended
    assert connection_error(rest[-1]) == ("expired API key", "UNAUTHENTICATED")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_operation_after_the_key_was_revoked_closes_with_4403(
    make_api: Any, scratch_url: str, protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_watch(monkeypatch)
    # No key cache: the revocation counts from the next check on.
    api = await secured_api(make_api, scratch_url, api_key_cache_ttl_s=0)
    key, key_id = await add_key(api.services.database)

    async with AsgiWebSocket(api.app, subprotocol=protocol, client=REMOTE) as ws:
        assert await connect(ws, bearer_header(key)) == {"type": "connection_ack"}
        await start(ws, protocol, "m", METRICS)
        registry = api.app.state.monitor.registry
        await wait_until(lambda: registry.active_subscriptions >= 1)
        await revoke(api, key_id)
        await start(ws, protocol, "q", "{ __typename }")
        after = await until_closed(ws)
        ended = await active_subscriptions_drop_to_zero(api)

    assert ws.close_code == 4403
    assert ended  # the running subscription ended with the connection
    assert not any(m.get("id") == "q" for m in after)
    if protocol == LEGACY:
        assert connection_error(after[-1]) == (
            "unknown or revoked API key",
            "UNAUTHENTICATED",
        )


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_key_that_stays_valid_keeps_its_subscription(
    make_api: Any, scratch_url: str, protocol: str
) -> None:
    api = await secured_api(make_api, scratch_url, api_key_cache_ttl_s=0)
    key, _ = await add_key(api.services.database, "teacher")

    async with AsgiWebSocket(api.app, subprotocol=protocol, client=REMOTE) as ws:
        assert await connect(ws, bearer_header(key)) == {"type": "connection_ack"}
        await start(ws, protocol, "m", METRICS)
        # Re-checks (one a second) pass; an event a second keeps coming.
        events = [await ws.receive_json() for _ in range(3)]
        await start(ws, protocol, "q", "{ __typename }")
        answer = await ws.receive_json()
        while answer.get("id") != "q":
            answer = await ws.receive_json()

    assert [m["id"] for m in events] == ["m"] * 3
    assert data_of(answer, protocol) == {"__typename": "Query"}
    assert ws.close_code is None
