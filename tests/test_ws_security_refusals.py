"""WebSocket security: no authenticator, failure budget, bad input, Origin."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest
from starlette.routing import WebSocketRoute

from db.keys import new_key
from resolvers.auth import Authenticator
from tests.asgi_ws import AsgiWebSocket
from tests.factories import (
    TEST_JWT_SECRET,
    bearer_header,
    jwt_token,
)
from tests.factories.ws_security import (
    LEGACY,
    PROTOCOLS,
    REMOTE,
    TRANSPORT,
    connect,
    connection_error,
    secured_api,
    start,
    until_closed,
)

# The HTTP and WebSocket layers: the same on either backend (conftest.py).
pytestmark = pytest.mark.sqlite_only


def replace_services(api: Any, **changes: Any) -> None:
    """What the WebSocket view builds each connection's context from."""
    endpoint = next(r.endpoint for r in api.app.routes if isinstance(r, WebSocketRoute))
    view = endpoint.websocket
    view.services = dataclasses.replace(view.services, **changes)


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
