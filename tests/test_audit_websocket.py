"""The FERPA audit log over WebSocket: per operation, and per event."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
from sqlalchemy import text
from websockets.asyncio.client import connect

from db.engine import create_database
from resolvers.audit import UNAVAILABLE_MESSAGE
from tests.conftest import make_settings
from tests.factories import (
    serve_in_process,
    wait_until,
)

# --- WebSocket: queries are recorded per operation, events per event -----------------


class Served:
    """The real app under uvicorn in this event loop, so that a test can reach into
    its services while a WebSocket client talks to it."""

    def __init__(self, app: Any, port: int) -> None:
        self.app = app
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/graphql"

    async def post(self, query: str) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.url) as http:
            response = await http.post("/graphql", json={"query": query})
        body: dict[str, Any] = response.json()
        return body

    @contextlib.contextmanager
    def audit_unreachable(self) -> Iterator[None]:
        """The audit log's database cannot be opened while inside."""
        audit = self.app.state.services.audit
        broken = create_database("sqlite+aiosqlite:////nonexistent-dir/audit.db")
        working, audit.database = audit.database, broken
        try:
            yield
        finally:
            audit.database = working


@contextlib.asynccontextmanager
async def served(database_url: str) -> AsyncIterator[Served]:
    from app import create_app

    app = create_app(make_settings(database_url))
    async with serve_in_process(app) as port:
        yield Served(app, port)


async def ws_records(served: Served) -> list[tuple[str, str, str, list[str]]]:
    async with served.app.state.services.database.sessions() as session:
        rows = await session.execute(
            text(
                "SELECT operation, action, request_id, student_ids FROM audit_log "
                "ORDER BY id"
            )
        )
        return [(r[0], r[1], r[2], json.loads(r[3])) for r in rows]


@contextlib.asynccontextmanager
async def ws_session(served: Served) -> AsyncIterator[Any]:
    async with connect(served.ws_url, subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert ack["type"] == "connection_ack"
        yield ws


async def subscribe(ws: Any, number: int, query: str) -> None:
    message = {"id": str(number), "type": "subscribe", "payload": {"query": query}}
    await ws.send(json.dumps(message))


async def receive(ws: Any) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
    return message


CREATE = (
    'mutation {{ studentCreate(input: {{studentId: "{0}", name: "{0}", '
    'email: "{0}@school.example", gradeLevel: 5}}) {{ __typename }} }}'
)
ADD = (
    'mutation {{ gradeAdd(input: {{studentId: "{0}", subject: "Math", '
    "score: {1}}}) {{ __typename }} }}"
)
GRADES_OF_WS = '{{ student(studentId: "{0}") {{ grades {{ score }} }} }}'


async def test_websocket_queries_are_recorded_per_operation_and_withheld_on_failure(
    scratch_url,
):
    async with served(scratch_url) as server:
        await server.post(CREATE.format("WS-1"))
        await server.post(ADD.format("WS-1", 66.5))
        async with ws_session(server) as ws:
            await subscribe(ws, 1, GRADES_OF_WS.format("WS-1"))
            first = await receive(ws)
            assert await receive(ws) == {"id": "1", "type": "complete"}
            # The same connection, no student data: no record (the set is reset).
            await subscribe(ws, 2, "{ subjects }")
            second = await receive(ws)
            assert await receive(ws) == {"id": "2", "type": "complete"}
            after_two = await ws_records(server)
            with server.audit_unreachable():
                await subscribe(ws, 3, GRADES_OF_WS.format("WS-1"))
                third = await receive(ws)

    assert first["payload"]["data"] == {"student": {"grades": [{"score": 66.5}]}}
    assert second["payload"]["data"] == {"subjects": ["Math"]}
    assert [(r[0], r[1], r[3]) for r in after_two] == [
        ("mutation:gradeAdd", "write", ["WS-1"]),
        ("query:student", "read", ["WS-1"]),
    ]
    assert third["type"] == "next"
    assert third["payload"]["data"] is None
    assert [
        (e["message"], e["extensions"]["code"]) for e in third["payload"]["errors"]
    ] == [(UNAVAILABLE_MESSAGE, "DB_UNAVAILABLE")]
    assert "66.5" not in json.dumps(third)


async def test_grade_events_are_recorded_per_event_before_they_are_sent(scratch_url):
    async with served(scratch_url) as server:
        await server.post(CREATE.format("EV-1"))
        registry = server.app.state.monitor.registry
        async with ws_session(server) as ws:
            await subscribe(
                ws, 1, "subscription { gradeEvents { studentId grades { score } } }"
            )
            await wait_until(lambda: registry.active_subscriptions >= 1)
            await server.post(ADD.format("EV-1", 91))
            sent = await receive(ws)
            recorded = await ws_records(server)
            with server.audit_unreachable():
                await server.post(ADD.format("EV-1", 92.375))
                refused = await receive(ws)
            ended = await receive(ws)
        final = await ws_records(server)

    assert sent["payload"]["data"] == {
        "gradeEvents": {"studentId": "EV-1", "grades": [{"score": 91.0}]}
    }
    assert [(r[0], r[1], r[3]) for r in recorded] == [
        ("mutation:gradeAdd", "write", ["EV-1"]),
        ("subscription:gradeEvents", "read", ["EV-1"]),
    ]
    # The event whose record failed is not sent: the stream ends with the error.
    assert refused["type"] == "next"
    assert refused["payload"]["data"] is None
    assert [
        (e["message"], e["extensions"]["code"]) for e in refused["payload"]["errors"]
    ] == [(UNAVAILABLE_MESSAGE, "DB_UNAVAILABLE")]
    assert "92.375" not in json.dumps(refused)
    assert ended == {"id": "1", "type": "complete"}
    assert [(r[0], r[1]) for r in final] == [
        ("mutation:gradeAdd", "write"),
        ("subscription:gradeEvents", "read"),
        ("mutation:gradeAdd", "write"),
    ]
