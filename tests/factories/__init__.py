"""Plain helpers for tests: inputs for mutations, rows through the API, API keys and
JWTs, requests and WebSocket messages, bounded waits, servers on 127.0.0.1. The
modules beside this one hold the helpers of one area's test modules each."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import jwt
import uvicorn
from gql import Client, GraphQLRequest, gql
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport
from sqlalchemy import insert
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from db import models
from db.engine import Database, create_database
from db.keys import insert_key, new_key
from db.migrations import create_at_head
from resolvers.ratelimit import MemoryRateStore

ROOT = Path(__file__).resolve().parents[2]

_numbers = count(1)

# 64 characters: long enough for HS512 too, which a test signs with to be refused.
TEST_JWT_SECRET = "gradepulse-test-jwt-secret-" + "x" * 37

STUDENT_CREATE = gql(
    """
    mutation Create($input: StudentCreateInput!) {
      studentCreate(input: $input) {
        __typename
        ... on StudentCreateSuccess { student { studentId name email gradeLevel } }
        ... on InvalidInputError { message field code }
        ... on ConflictError { message field code }
      }
    }
    """
)

GRADE_ADD = gql(
    """
    mutation Add($input: GradeAddInput!) {
      gradeAdd(input: $input) {
        __typename
        ... on GradeAddSuccess { grade { id studentId subject score maxScore percentage recordedAt } }
        ... on InvalidInputError { message field code }
        ... on NotFoundError { message }
      }
    }
    """
)


def student_input(**overrides: Any) -> dict[str, Any]:
    number = next(_numbers)
    values: dict[str, Any] = {
        "studentId": f"T{number:05d}",
        "name": f"Test Student {number}",
        "email": f"test.{number}@school.example",
        "gradeLevel": 7,
    }
    values.update(overrides)
    return values


def grade_input(student_id: str, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "studentId": student_id,
        "subject": "Math",
        "score": 80.0,
        "maxScore": 100.0,
        "recordedAt": "2025-10-01T09:00:00Z",
    }
    values.update(overrides)
    return values


async def create_student(api: Any, **overrides: Any) -> dict[str, Any]:
    result = await api.execute(STUDENT_CREATE, input=student_input(**overrides))
    payload: dict[str, Any] = result["studentCreate"]
    assert payload["__typename"] == "StudentCreateSuccess", payload
    return payload["student"]


async def add_grade(api: Any, student_id: str, **overrides: Any) -> dict[str, Any]:
    result = await api.execute(GRADE_ADD, input=grade_input(student_id, **overrides))
    payload: dict[str, Any] = result["gradeAdd"]
    assert payload["__typename"] == "GradeAddSuccess", payload
    return payload["grade"]


DB_STUDENT = "S-DB-1"  # the one student of conftest's `database` fixture


async def database_with_student(url: str, student_id: str, name: str) -> Database:
    """A database with its tables and one grade-9 student, for db-level tests."""
    database = create_database(url)
    await create_at_head(database)
    async with database.writing() as session:
        await session.execute(
            insert(models.Student).values(
                student_id=student_id,
                name=name,
                email=f"{name.lower().replace(' ', '.')}@school.example",
                grade_level=9,
                created_at=datetime(2025, 8, 25, 8, 0),
            )
        )
    return database


def jwt_token(
    role: str | None = "admin",
    *,
    secret: str = TEST_JWT_SECRET,
    lifetime_s: float = 600,
    algorithm: str = "HS256",
    **claims: Any,
) -> str:
    """A JWT: sub `<role>-1`, exp `lifetime_s` from now; None claims are left out."""
    payload: dict[str, Any] = {
        "sub": f"{role}-1",
        "role": role,
        "exp": time.time() + lifetime_s,
    }
    payload.update(claims)
    present = {name: value for name, value in payload.items() if value is not None}
    return jwt.encode(present, secret, algorithm=algorithm)


def bearer_header(token: str) -> dict[str, str]:
    """The Authorization header that carries `token` (an API key or a JWT)."""
    return {"Authorization": f"Bearer {token}"}


async def add_key(
    database: Database, role: str = "admin", **fields: Any
) -> tuple[str, int]:
    """A new API key for `role` stored through insert_key: (the key, its row id)."""
    values: dict[str, Any] = {
        "name": f"{role} key",
        "created_at": datetime.now(UTC).replace(tzinfo=None),
    }
    values.update(fields)
    key = new_key()
    async with database.writing() as session:
        record = await insert_key(session, key=key, role=role, **values)
    return key, record.id


# --- requests through the app -------------------------------------------------------


async def post(
    api: Any,
    document: str | dict[str, Any] | list[Any],
    variables: dict[str, Any] | None = None,
    *,
    operation_name: str | None = None,
    accept: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST to /graphql: a query (with its variables and operation name, each sent
    when given) or a whole JSON body as it is (a batch, a malformed request)."""
    body: Any = document
    if isinstance(document, str):
        body = {"query": document}
        if variables is not None:
            body["variables"] = variables
        if operation_name is not None:
            body["operationName"] = operation_name
    sent = dict(headers or {})
    if accept is not None:
        sent["Accept"] = accept
    response: httpx.Response = await api.http.post("/graphql", json=body, headers=sent)
    return response


def refusal(body: dict[str, Any]) -> dict[str, Any]:
    """The single error's extensions, without the per-request id (checked present)."""
    assert body.get("data") is None, body
    [error] = body["errors"]
    extensions = dict(error["extensions"])
    assert len(extensions.pop("requestId")) == 32
    return extensions


async def refused(
    api: Any, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    """POST a document that must be refused before anything runs: no SQL at all."""
    api.counter.reset()
    response = await post(api, query, variables)
    assert response.status_code == 200, response.text
    assert api.counter.statements == []
    return refusal(response.json())


async def cost_of(api: Any, query: str, **variables: Any) -> int:
    response = await post(api, query, variables or None)
    body = response.json()
    assert response.status_code == 200 and "errors" not in body, body
    cost: int = body["extensions"]["rateLimit"]["cost"]
    return cost


def rate_limit(body: dict[str, Any]) -> Any:
    return body["extensions"]["rateLimit"]


class Clock:
    """Epoch seconds that only move when a test moves them."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def budgeted_api(
    make_api: Any, url: str, capacity: int = 50, *, now: float = 1_800_000_000.0
) -> tuple[Any, Clock]:
    """The app with RATE_LIMIT_ADMIN = capacity (anonymous development callers are
    admins) and its store on a clock the test moves (from `now`)."""
    api = await make_api(url, rate_limit_admin=capacity, max_cost=capacity)
    clock = Clock(now)
    api.services.rate_limiter.store = MemoryRateStore(clock=clock)
    return api, clock


# --- WebSocket messages (graphql-transport-ws and the legacy graphql-ws) -----------


async def ws_init(ws: Any) -> None:
    await ws.send_json({"type": "connection_init", "payload": {}})
    assert await ws.receive_json() == {"type": "connection_ack"}


async def ws_start(ws: Any, id: str, query: str, *, legacy: bool = False) -> None:
    """subscribe (graphql-transport-ws) or start (legacy graphql-ws) an operation."""
    kind = "start" if legacy else "subscribe"
    await ws.send_json({"id": id, "type": kind, "payload": {"query": query}})


# --- bounded waits and servers on 127.0.0.1 -----------------------------------------


async def wait_until(condition: Callable[[], Any], timeout: float = 10.0) -> None:
    """Poll `condition` (run in a thread: it may block on HTTP) until it holds;
    AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(
    port: int, process: subprocess.Popen[bytes], timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}")
        try:
            if (
                httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1).status_code
                == 200
            ):
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"server did not start within {timeout} s")


@contextlib.contextmanager
def serve(command: list[str], workdir: Path, **env: str) -> Iterator[int]:
    """Run `command` (python app.py, or uvicorn, which is given `--port`) in `workdir`
    on a free port of 127.0.0.1 until the block ends; its output goes to
    workdir/server.log, which must hold no traceback."""
    port = free_port()
    if "uvicorn" in command:
        command = [*command, "--host", "127.0.0.1", "--port", str(port)]
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "HOST": "127.0.0.1",
                "PORT": str(port),
                **env,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_up(port, process)
            yield port
        finally:
            process.terminate()
            process.wait(timeout=15)
    output = log_path.read_text()
    assert "Traceback" not in output, output


@contextlib.asynccontextmanager
async def serve_in_process(app: Any) -> AsyncIterator[int]:
    """The app under uvicorn in this event loop (so that a test can reach into its
    services while a client talks to it over TCP): the port, until the block ends."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            ws="websockets-sansio",
            log_level="warning",
            lifespan="on",
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert not task.done(), "uvicorn stopped before it started"
            assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
            await asyncio.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


# --- a live server: uvicorn in a subprocess, and clients of it ----------------------

TRANSPORT_WS = WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL  # graphql-transport-ws
LEGACY_WS = WebsocketsTransport.APOLLO_SUBPROTOCOL  # graphql-ws
PROTOCOLS = [TRANSPORT_WS, LEGACY_WS]
# The subscription limits of live_server().
LIVE_PER_CONNECTION = 3
LIVE_PER_SERVER = 5

METRICS_QUERY = "subscription { metrics { requestsTotal } }"
METRICS_SUBSCRIPTION = gql(
    """
    subscription Metrics($intervalMs: Int!) {
      metrics(intervalMs: $intervalMs) { at requestsTotal activeSubscriptions }
    }
    """
)
GRADE_EVENTS = gql(
    """
    subscription Grades($studentId: String, $gradeLevel: Int) {
      gradeEvents(studentId: $studentId, gradeLevel: $gradeLevel) {
        studentId gradeLevel grades { id studentId subject score }
      }
    }
    """
)


@dataclass(frozen=True)
class Server:
    port: int
    workdir: Path

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    def post(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        response = httpx.post(
            f"http://127.0.0.1:{self.port}/graphql",
            json={"query": query, "variables": variables},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def execute(self, document: Any, **variables: Any) -> dict[str, Any]:
        """A gql document over HTTP (as Api.execute in process)."""
        transport = HTTPXAsyncTransport(
            url=f"http://127.0.0.1:{self.port}/graphql", timeout=10
        )
        async with Client(transport=transport) as session:
            request = GraphQLRequest(document, variable_values=variables or None)
            result: dict[str, Any] = await session.execute(request)
        return result

    def active_subscriptions(self) -> int:
        body = self.post("{ metrics { activeSubscriptions } }")
        return int(body["data"]["metrics"]["activeSubscriptions"])

    def prometheus_active(self) -> int:
        """Read without a GraphQL operation (operations feed the alert rules)."""
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10).text
        line = next(
            line
            for line in text.splitlines()
            if line.startswith("graphql_active_subscriptions ")
        )
        return int(float(line.split()[1]))


@contextlib.contextmanager
def live_server(workdir: Path, **env: str) -> Iterator[Server]:
    """uvicorn --factory on a SQLite file in `workdir`, sampler at 100 ms, at most
    LIVE_PER_CONNECTION and LIVE_PER_SERVER subscriptions; `env` overrides."""
    command = [
        *(sys.executable, "-m", "uvicorn", "app:create_app", "--factory"),
        *(
            "--app-dir",
            str(ROOT),
            "--ws",
            "websockets-sansio",
            "--log-level",
            "warning",
        ),
    ]
    with serve(
        command,
        workdir,
        DATABASE_URL=f"sqlite:///{workdir / 'live.db'}",
        SAMPLE_INTERVAL_MS="100",
        ACCESS_LOG="false",
        MAX_SUBSCRIPTIONS_PER_CONNECTION=str(LIVE_PER_CONNECTION),
        MAX_SUBSCRIPTIONS=str(LIVE_PER_SERVER),
        **env,
    ) as port:
        yield Server(port, workdir)


def ws_client(server: Server, protocol: str = TRANSPORT_WS) -> Client:
    transport = WebsocketsTransport(url=server.ws_url, subprotocols=[protocol])
    return Client(transport=transport, fetch_schema_from_transport=False)


async def collect(
    server: Server,
    protocol: str,
    document: Any,
    into: list[Any],
    **variables: Any,
) -> None:
    """Subscribe on a connection of its own and append every event (until cancelled)."""
    async with ws_client(server, protocol) as session:
        request = GraphQLRequest(document, variable_values=variables or None)
        async for event in session.subscribe(request):
            into.append(event)


async def frames_until_closed(ws: ClientConnection, timeout: float = 10) -> list[Any]:
    """Every frame a raw websockets client receives until the server closes."""
    frames: list[Any] = []

    async def drain() -> None:
        try:
            while True:
                frames.append(await ws.recv())
        except ConnectionClosed:
            pass

    await asyncio.wait_for(drain(), timeout)
    return frames


def subscribe_frame(protocol: str, operation_id: str, query: str) -> str:
    """subscribe (graphql-transport-ws) or start (legacy graphql-ws), as text."""
    kind = "subscribe" if protocol == TRANSPORT_WS else "start"
    return json.dumps({"id": operation_id, "type": kind, "payload": {"query": query}})
