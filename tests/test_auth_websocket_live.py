"""Authentication of WebSockets against a live server, both protocols."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport
from websockets.asyncio.client import connect

from db.engine import create_database
from db.keys import new_key
from db.migrations import create_at_head
from tests.factories import (
    LEGACY_WS,
    METRICS_QUERY,
    METRICS_SUBSCRIPTION,
    TEST_JWT_SECRET,
    TRANSPORT_WS,
    Server,
    add_key,
    frames_until_closed,
    jwt_token,
    live_server,
    subscribe_frame,
)
from tests.factories.auth import Clock, claims

# --- WebSockets against a live server ---------------------------------------------


def _key_in_file(path: Path, role: str = "admin") -> str:
    """A key stored in the server's SQLite file before it starts (in a thread: the
    test's event loop must not be replaced)."""

    async def create() -> str:
        database = create_database(f"sqlite:///{path}")
        try:
            await create_at_head(database)
            key, _ = await add_key(database, role, name=role, created_at=Clock().at())
            return key
        finally:
            await database.dispose()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, create()).result()


@dataclass(frozen=True)
class AuthServer:
    server: Server
    admin_key: str


@pytest.fixture(scope="module")
def required_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    workdir = tmp_path_factory.mktemp("auth-required")
    key = _key_in_file(workdir / "live.db")
    with live_server(
        workdir,
        AUTH_REQUIRED="true",
        JWT_SECRET=TEST_JWT_SECRET,
        API_KEY_CACHE_TTL_S="0",
    ) as server:
        yield AuthServer(server, key)


@pytest.fixture(scope="module")
def optional_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """The development profile, where credentials are optional; no JWT_SECRET."""
    workdir = tmp_path_factory.mktemp("auth-optional")
    key = _key_in_file(workdir / "live.db")
    with live_server(
        workdir, ENVIRONMENT="development", AUTH_REQUIRED="false", JWT_SECRET=""
    ) as server:
        yield AuthServer(server, key)


def _init_frame(payload: Any = ..., **fields: Any) -> str:
    message: dict[str, Any] = {"type": "connection_init", **fields}
    if payload is not ...:
        message["payload"] = payload
    return json.dumps(message)


async def _answer(url: str, protocol: str, *frames: str) -> tuple[list[Any], Any]:
    """Send the frames, then read until the server closes: (frames, close frame)."""
    async with connect(url, subprotocols=[protocol]) as ws:
        for frame in frames:
            await ws.send(frame)
        received = await frames_until_closed(ws)
    close = SimpleNamespace(code=ws.close_code, reason=ws.close_reason)
    return [json.loads(frame) for frame in received], close


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_ws_api_key_is_acknowledged_and_metrics_flow(
    required_server: AuthServer, protocol: str
) -> None:
    transport = WebsocketsTransport(
        url=required_server.server.ws_url,
        subprotocols=[protocol],
        init_payload={"Authorization": f"Bearer {required_server.admin_key}"},
    )
    async with Client(transport=transport) as session:
        request = GraphQLRequest(
            METRICS_SUBSCRIPTION, variable_values={"intervalMs": 1000}
        )
        stream = session.subscribe(request)
        event = await asyncio.wait_for(anext(stream), 10)
        await stream.aclose()

    assert event["metrics"]["activeSubscriptions"] >= 1
    assert event["metrics"]["at"].endswith("Z")


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_ws_jwt_under_a_lower_case_key_is_acknowledged(
    required_server: AuthServer, protocol: str
) -> None:
    teacher = jwt_token(
        **claims(role="teacher", grade_levels=[9], exp=time.time() + 60)
    )

    async with connect(required_server.server.ws_url, subprotocols=[protocol]) as ws:
        await ws.send(_init_frame({"authorization": f"Bearer {teacher}"}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), 5))

    assert ack == {"type": "connection_ack"}


REFUSED = [
    pytest.param({"Authorization": f"Bearer {new_key()}"}, id="unknown-key"),
    pytest.param(
        {"Authorization": "Bearer " + jwt_token(**claims(), secret="x" * 64)},
        id="forged-jwt",
    ),
    pytest.param({"Authorization": 17}, id="not-a-string"),
    pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="basic"),
    pytest.param({}, id="empty-payload"),
    pytest.param(None, id="null-payload"),
    pytest.param(..., id="no-payload"),
]


@pytest.mark.parametrize("payload", REFUSED)
async def test_ws_refused_credentials_close_with_4403(
    required_server: AuthServer, payload: Any
) -> None:
    frames, close = await _answer(
        required_server.server.ws_url,
        TRANSPORT_WS,
        _init_frame(payload),
        # Pipelined: a refused connection must not run it.
        subscribe_frame(TRANSPORT_WS, "1", METRICS_QUERY),
    )

    assert frames == []
    assert (close.code, close.reason) == (4403, "Forbidden")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"Authorization": f"Bearer {new_key()}"}, "unknown or revoked API key"),
        ({"authorization": "Bearer not-a-jwt"}, "malformed token"),
        (..., "missing credentials"),
    ],
)
async def test_ws_legacy_refusal_is_a_connection_error_then_4403(
    required_server: AuthServer, payload: Any, message: str
) -> None:
    frames, close = await _answer(
        required_server.server.ws_url,
        LEGACY_WS,
        _init_frame(payload),
        subscribe_frame(LEGACY_WS, "1", METRICS_QUERY),
    )

    [error] = frames
    assert error["type"] == "connection_error"
    assert error["payload"]["message"] == message
    assert error["payload"]["extensions"]["code"] == "UNAUTHENTICATED"
    assert re.fullmatch(r"[0-9a-f]{32}", error["payload"]["extensions"]["requestId"])
    assert close.code == 4403


async def test_ws_legacy_second_connection_init_closes_with_4429(
    required_server: AuthServer,
) -> None:
    good = _init_frame({"Authorization": f"Bearer {required_server.admin_key}"})

    frames, close = await _answer(
        required_server.server.ws_url, LEGACY_WS, good, _init_frame(None)
    )

    assert frames[0] == {"type": "connection_ack"}
    assert all(frame == {"type": "ka"} for frame in frames[1:])
    assert (close.code, close.reason) == (4429, "Too many initialisation requests")


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_ws_anonymous_loopback_is_acknowledged_where_auth_is_optional(
    optional_server: AuthServer, protocol: str
) -> None:
    async with connect(optional_server.server.ws_url, subprotocols=[protocol]) as ws:
        await ws.send(_init_frame())
        ack = json.loads(await asyncio.wait_for(ws.recv(), 5))
        await ws.send(subscribe_frame(protocol, "1", METRICS_QUERY))
        data = json.loads(await asyncio.wait_for(ws.recv(), 5))
        while data["type"] == "ka":
            data = json.loads(await asyncio.wait_for(ws.recv(), 5))

    assert ack == {"type": "connection_ack"}
    assert data["type"] == ("next" if protocol == TRANSPORT_WS else "data")
    assert data["id"] == "1"
    assert type(data["payload"]["data"]["metrics"]["requestsTotal"]) is int


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"Authorization": f"Bearer {new_key()}"}, "unknown or revoked API key"),
        (
            {"Authorization": "Bearer " + jwt_token(**claims())},
            "JWTs are not accepted: no JWT_SECRET is configured",
        ),
    ],
)
async def test_ws_bad_credentials_are_refused_where_auth_is_optional(
    optional_server: AuthServer, payload: Any, message: str
) -> None:
    url = optional_server.server.ws_url
    frames, close = await _answer(url, TRANSPORT_WS, _init_frame(payload))
    assert (frames, close.code) == ([], 4403)

    frames, close = await _answer(url, LEGACY_WS, _init_frame(payload))
    assert [frame["payload"]["message"] for frame in frames] == [message]
    assert close.code == 4403
