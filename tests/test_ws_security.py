"""WebSocket security: credentials re-checked before every operation and while a
connection is open (expiry, revocation), queries and mutations over the legacy
graphql-ws protocol with the HTTP path's limits and audit, no viewer without an
authenticator, and the failure budget per client address. In process, through
tests/asgi_ws.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from starlette.routing import WebSocketRoute

from db.keys import new_key, revoke_key
from resolvers import students
from resolvers.auth import Authenticator
from server.websocket import ConnectionGuard
from tests.asgi_ws import AsgiWebSocket
from tests.factories import (
    TEST_JWT_SECRET,
    add_key,
    bearer_header,
    jwt_token,
    wait_until,
)

TRANSPORT = "graphql-transport-ws"
LEGACY = "graphql-ws"
PROTOCOLS = [TRANSPORT, LEGACY]
REMOTE = ("198.51.100.40", 50000)  # not loopback: credentials are required anyway
METRICS = "subscription { metrics(intervalMs: 1000) { uptimeSeconds } }"
GRADES = "{ grades { edges { node { score } } } }"
STUDENT_CREATE = (
    'mutation { studentCreate(input: {studentId: "{id}", name: "WS Student", '
    'email: "{id}@school.example", gradeLevel: 9}) { __typename '
    "... on StudentCreateSuccess { student { studentId gradeLevel } } } }"
)
GRADE_ADD = (
    'mutation { gradeAdd(input: {studentId: "{id}", subject: "Math", score: 71.5}) '
    "{ __typename } }"
)


async def secured_api(make_api: Any, url: str, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "jwt_secret": TEST_JWT_SECRET,
        "auth_required": True,
        "api_key_cache_ttl_s": 1.0,
        "sample_interval_ms": 100,  # metrics subscriptions get an event a second
    }
    values.update(overrides)
    return await make_api(url, **values)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


async def revoke(api: Any, key_id: int) -> None:
    async with api.services.database.writing() as session:
        await revoke_key(session, key_id, utcnow())


async def connect(ws: AsgiWebSocket, payload: dict[str, Any] | None) -> dict[str, Any]:
    """connection_init; the answer (ConnectionError when the server closes)."""
    await ws.send_json({"type": "connection_init", "payload": payload})
    return await ws.receive_json()


async def start(ws: AsgiWebSocket, protocol: str, id: str, query: str) -> None:
    kind = "subscribe" if protocol == TRANSPORT else "start"
    await ws.send_json({"id": id, "type": kind, "payload": {"query": query}})


async def until_closed(ws: AsgiWebSocket, within: float = 5.0) -> list[Any]:
    """The messages before the server closes the socket (ws.close_code then);
    AssertionError when it stays open longer than `within` seconds."""
    received = []
    deadline = time.monotonic() + within
    try:
        while (left := deadline - time.monotonic()) > 0:
            received.append(await ws.receive_json(left))
    except ConnectionError:
        return received
    except TimeoutError:
        pass
    raise AssertionError(f"still open after {within} s; received {received}")


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


async def http(api: Any, query: str, credential: str) -> Any:
    return await api.http.post(
        "/graphql", json={"query": query}, headers=bearer_header(credential)
    )


def connection_error(message: dict[str, Any]) -> tuple[str, str]:
    assert message["type"] == "connection_error", message
    payload = message["payload"]
    return payload["message"], payload["extensions"]["code"]


def replace_services(api: Any, **changes: Any) -> None:
    """What the WebSocket view builds each connection's context from."""
    endpoint = next(r.endpoint for r in api.app.routes if isinstance(r, WebSocketRoute))
    view = endpoint.websocket
    view.services = dataclasses.replace(view.services, **changes)


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


# --- queries and mutations over the legacy protocol ------------------------------


async def legacy_run(ws: AsgiWebSocket, id: str, query: str) -> list[dict[str, Any]]:
    """start, then every message of that operation up to its complete or error."""
    await start(ws, LEGACY, id, query)
    messages = []
    while True:
        message = await ws.receive_json()
        assert message["id"] == id, message
        messages.append(message)
        if message["type"] in ("complete", "error"):
            return messages


async def test_legacy_queries_answer_data_then_complete(
    make_api: Any, seeded_url: str
) -> None:
    api = await secured_api(make_api, seeded_url)
    admin = jwt_token()
    over_http = (await http(api, "{ subjects }", admin)).json()["data"]

    async with AsgiWebSocket(api.app, subprotocol=LEGACY, client=REMOTE) as ws:
        assert await connect(ws, bearer_header(admin)) == {"type": "connection_ack"}
        subjects = await legacy_run(ws, "1", "{ subjects }")
        total = await legacy_run(ws, "2", "{ students(first: 2) { totalCount } }")

    assert len(over_http["subjects"]) > 1
    data, complete = subjects
    assert data == {"id": "1", "type": "data", "payload": data["payload"]}
    assert data["payload"]["data"] == over_http
    assert complete == {"id": "1", "type": "complete"}
    assert total[0]["payload"]["data"] == {"students": {"totalCount": 120}}
    # The operation was costed and charged like one over HTTP.
    assert total[0]["payload"]["extensions"]["rateLimit"]["cost"] == 1
    assert total[1] == {"id": "2", "type": "complete"}


async def test_legacy_mutations_run_with_the_viewer_of_the_connection(
    make_api: Any, scratch_url: str
) -> None:
    api = await secured_api(make_api, scratch_url)
    admin, _ = await add_key(api.services.database, "admin")
    teacher, _ = await add_key(api.services.database, "teacher")

    async with AsgiWebSocket(api.app, subprotocol=LEGACY, client=REMOTE) as ws:
        assert await connect(ws, bearer_header(admin)) == {"type": "connection_ack"}
        created = await legacy_run(ws, "1", STUDENT_CREATE.replace("{id}", "WS-9"))
    async with AsgiWebSocket(api.app, subprotocol=LEGACY, client=REMOTE) as ws:
        assert await connect(ws, bearer_header(teacher)) == {"type": "connection_ack"}
        refused = await legacy_run(ws, "1", STUDENT_CREATE.replace("{id}", "WS-10"))

    assert [m["type"] for m in created] == ["data", "complete"]
    assert created[0]["payload"]["data"] == {
        "studentCreate": {
            "__typename": "StudentCreateSuccess",
            "student": {"studentId": "WS-9", "gradeLevel": 9},
        }
    }
    # A teacher may not create students: FORBIDDEN, as over HTTP, and no row.
    assert refused[0]["type"] == "data"
    assert refused[0]["payload"]["data"] is None
    assert [e["extensions"]["code"] for e in refused[0]["payload"]["errors"]] == [
        "FORBIDDEN"
    ]
    async with api.services.database.sessions() as session:
        count = await session.execute(text("SELECT count(*) FROM students"))
    assert count.scalar_one() == 1


async def test_legacy_queries_are_refused_by_the_limits_with_a_code(
    make_api: Any, seeded_url: str
) -> None:
    api = await secured_api(make_api, seeded_url, max_depth=4)

    async with AsgiWebSocket(api.app, subprotocol=LEGACY, client=REMOTE) as ws:
        assert await connect(ws, bearer_header(jwt_token())) == {
            "type": "connection_ack"
        }
        api.counter.reset()
        [deep] = await legacy_run(
            ws, "deep", "{ students { edges { node { grades { score } } } } }"
        )
        statements = list(api.counter.statements)
        ok = await legacy_run(ws, "ok", "{ __typename }")

    assert deep["type"] == "error"
    extensions = deep["payload"]["extensions"]
    assert (extensions["code"], extensions["limit"], extensions["actual"]) == (
        "QUERY_TOO_DEEP",
        4,
        5,
    )
    assert statements == []
    assert ok[0]["payload"]["data"] == {"__typename": "Query"}


async def test_legacy_queries_stop_at_the_operation_timeout(
    make_api: Any, seeded_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = await secured_api(make_api, seeded_url, operation_timeout_s=0.2)
    list_students = students.list_students

    async def slow(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(5)
        return await list_students(*args, **kwargs)

    monkeypatch.setattr(students, "list_students", slow)

    async with AsgiWebSocket(api.app, subprotocol=LEGACY, client=REMOTE) as ws:
        assert await connect(ws, bearer_header(jwt_token())) == {
            "type": "connection_ack"
        }
        started = time.perf_counter()
        [error] = await legacy_run(ws, "slow", "{ students(first: 1) { totalCount } }")
        elapsed = time.perf_counter() - started
        fast = await legacy_run(ws, "fast", "{ __typename }")

    assert error["type"] == "error"
    extensions = error["payload"]["extensions"]
    assert extensions.pop("actual") >= 0.2
    assert len(extensions.pop("requestId")) == 32
    assert extensions == {"code": "OPERATION_TIMEOUT", "limit": 0.2}
    assert elapsed < 2.0
    assert fast[0]["payload"]["data"] == {"__typename": "Query"}


async def test_legacy_queries_returning_grades_are_audited(
    make_api: Any, scratch_url: str
) -> None:
    api = await secured_api(make_api, scratch_url)
    admin, key_id = await add_key(api.services.database, "admin")
    for mutation in (STUDENT_CREATE, GRADE_ADD):
        response = await http(api, mutation.replace("{id}", "WS-A"), admin)
        assert response.status_code == 200, response.text

    async with AsgiWebSocket(api.app, subprotocol=LEGACY, client=REMOTE) as ws:
        assert await connect(ws, bearer_header(admin)) == {"type": "connection_ack"}
        data, complete = await legacy_run(
            ws, "1", '{ student(studentId: "WS-A") { grades { score } } }'
        )
    async with api.services.database.sessions() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT actor, operation, action, student_ids FROM audit_log "
                    "ORDER BY id"
                )
            )
        ).all()

    assert data["payload"]["data"] == {"student": {"grades": [{"score": 71.5}]}}
    assert complete["type"] == "complete"
    assert [(r[0], r[1], r[2], json.loads(r[3])) for r in rows] == [
        (f"key:{key_id}", "mutation:gradeAdd", "write", ["WS-A"]),
        (f"key:{key_id}", "query:student", "read", ["WS-A"]),
    ]


# --- no authenticator: nobody ----------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_without_an_authenticator_connections_are_refused(
    make_api: Any, scratch_url: str, protocol: str
) -> None:
    # Development, where an anonymous loopback client would be the admin.
    api = await make_api(scratch_url, environment="development", auth_required=False)
    replace_services(api, authenticator=None)

    async with AsgiWebSocket(api.app, subprotocol=protocol) as ws:
        await ws.send_json({"type": "connection_init", "payload": {}})
        await start(ws, protocol, "1", "{ __typename }")
        received = await until_closed(ws)

    assert ws.close_code == 4403
    if protocol == TRANSPORT:
        assert received == []
    else:
        assert [connection_error(m) for m in received] == [
            ("authentication is not configured", "UNAUTHENTICATED")
        ]


# --- the failure budget per client address --------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_address_that_spent_its_failures_is_refused_with_4429(
    make_api: Any, seeded_url: str, protocol: str
) -> None:
    api = await secured_api(make_api, seeded_url)
    now = [time.time()]
    authenticator = Authenticator(
        api.services.database,
        jwt_secret=TEST_JWT_SECRET,
        auth_required=True,
        max_failures=3,
        clock=lambda: now[0],
    )
    replace_services(api, authenticator=authenticator)

    def unknown_key() -> str:
        return new_key()  # never stored: each one costs a lookup and is refused

    client = ("198.51.100.77", 50000)

    async def init(credential: str, address: tuple[str, int] = client) -> Any:
        async with AsgiWebSocket(api.app, subprotocol=protocol, client=address) as ws:
            await ws.send_json(
                {"type": "connection_init", "payload": bearer_header(credential)}
            )
            try:
                answer = [await ws.receive_json()]
            except ConnectionError:
                answer = []
            if answer and answer[0]["type"] == "connection_error":
                answer += await until_closed(ws)
            return answer, ws.close_code

    failures = [await init(unknown_key()) for _ in range(3)]
    spent, spent_code = await init(unknown_key())
    # A token is checked by its signature, without a lookup: never locked out.
    token_meanwhile = await init(jwt_token())
    other = await init(jwt_token(), ("198.51.100.78", 50000))
    now[0] += 20  # 3 failures a minute: one is allowed again after 20 s
    refilled, refilled_code = await init(unknown_key())

    assert [code for _, code in failures] == [4403] * 3
    assert spent_code == 4429
    if protocol == LEGACY:
        [message] = spent
        assert message["type"] == "connection_error"
        assert message["payload"]["message"] == (
            "too many failed authentications from this address: retry in 20 s"
        )
        extensions = message["payload"]["extensions"]
        assert (extensions["code"], extensions["retryAfter"]) == ("RATE_LIMITED", 20)
    else:
        assert spent == []
    assert token_meanwhile == ([{"type": "connection_ack"}], None)
    assert other == ([{"type": "connection_ack"}], None)
    assert refilled_code == 4403  # looked up again, and refused as unknown


# --- malformed operations and database outages --------------------------------------


async def send_start(
    ws: AsgiWebSocket, protocol: str, op_id: str, payload: Any
) -> None:
    kind = "subscribe" if protocol == TRANSPORT else "start"
    message: dict[str, Any] = {"id": op_id, "type": kind}
    if payload is not None:
        message["payload"] = payload
    await ws.send_json(message)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_malformed_operation_gets_an_error_and_the_connection_goes_on(
    make_api: Any, seeded_url: str, protocol: str
) -> None:
    api = await secured_api(make_api, seeded_url)

    async with AsgiWebSocket(api.app, subprotocol=protocol, client=REMOTE) as ws:
        await ws.send_json(
            {"type": "connection_init", "payload": bearer_header(jwt_token())}
        )
        assert (await ws.receive_json())["type"] == "connection_ack"
        await send_start(ws, protocol, "1", {"query": 123})
        refused = await ws.receive_json()
        if protocol == LEGACY:
            await send_start(ws, protocol, "2", None)  # no payload at all
            no_payload = await ws.receive_json()
            assert no_payload["type"] == "error" and no_payload["id"] == "2"
        await send_start(ws, protocol, "1", {"query": "{ subjects }"})  # id free
        answer = await ws.receive_json()

    assert refused["id"] == "1" and refused["type"] == "error"
    assert answer["id"] == "1" and answer["type"] in ("next", "data")
    assert answer["payload"]["data"]["subjects"] == [
        "Art",
        "English",
        "History",
        "Math",
        "Science",
    ]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_database_outage_at_init_closes_with_1013(
    make_api: Any, scratch_url: str, protocol: str, monkeypatch: Any
) -> None:
    from sqlalchemy.exc import OperationalError

    from resolvers import auth

    api = await secured_api(make_api, scratch_url)

    async def unreachable(session: Any, digest: str) -> None:
        raise OperationalError("SELECT", {}, ConnectionRefusedError())

    monkeypatch.setattr(auth, "find_active_key", unreachable)
    async with AsgiWebSocket(api.app, subprotocol=protocol, client=REMOTE) as ws:
        await ws.send_json(
            {"type": "connection_init", "payload": bearer_header(new_key())}
        )
        messages = await until_closed(ws)

    assert ws.close_code == 1013
    if protocol == LEGACY:
        assert messages[0]["payload"]["extensions"]["code"] == "DB_UNAVAILABLE"


# --- the handshake's Origin ---------------------------------------------------------


async def test_a_handshake_from_a_foreign_origin_is_refused(
    make_api: Any, scratch_url: str
) -> None:
    api = await make_api(scratch_url, cors_origins="https://app.example.org")

    def origin(value: str) -> list[tuple[bytes, bytes]]:
        return [(b"origin", value.encode())]

    for foreign in ("https://evil.example", "http://app.example.org", "null"):
        with pytest.raises(ConnectionError, match="handshake refused"):
            async with AsgiWebSocket(api.app, headers=origin(foreign)):
                pass
    # The listed origin, and a client that sends none (not a browser), are served.
    for headers in (origin("https://app.example.org"), None):
        async with AsgiWebSocket(api.app, headers=headers) as ws:
            assert await connect(ws, {}) == {"type": "connection_ack"}


async def test_without_an_allow_list_a_browser_origin_is_refused(
    make_api: Any, scratch_url: str
) -> None:
    api = await make_api(scratch_url)

    with pytest.raises(ConnectionError, match="handshake refused"):
        async with AsgiWebSocket(
            api.app, headers=[(b"origin", b"https://evil.example")]
        ):
            pass
