"""Helpers of the test_ws_security_* modules: secured app, sessions."""

from __future__ import annotations

import time
from typing import Any

from tests.asgi_ws import AsgiWebSocket
from tests.factories import (
    TEST_JWT_SECRET,
    bearer_header,
)

TRANSPORT = "graphql-transport-ws"
LEGACY = "graphql-ws"
PROTOCOLS = [TRANSPORT, LEGACY]
REMOTE = ("198.51.100.40", 50000)  # not loopback: credentials are required anyway


async def secured_api(make_api: Any, url: str, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "jwt_secret": TEST_JWT_SECRET,
        "auth_required": True,
        "api_key_cache_ttl_s": 1.0,
        "sample_interval_ms": 100,  # metrics subscriptions get an event a second
    }
    values.update(overrides)
    return await make_api(url, **values)


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


async def http(api: Any, query: str, credential: str) -> Any:
    return await api.http.post(
        "/graphql", json={"query": query}, headers=bearer_header(credential)
    )


def connection_error(message: dict[str, Any]) -> tuple[str, str]:
    assert message["type"] == "connection_error", message
    payload = message["payload"]
    return payload["message"], payload["extensions"]["code"]
