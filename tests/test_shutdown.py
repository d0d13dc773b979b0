"""SIGTERM drains `python app.py`: it stops accepting, closes the subscriptions of both
WebSocket protocols with 1012 at once, lets an operation in flight finish with its
answer, and exits 0 within a bound."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.factories import (
    LEGACY_WS,
    PROTOCOLS,
    TRANSPORT_WS,
    frames_until_closed,
    student_input,
    subscribe_frame,
)
from tests.factories.cluster import AppProcess, launch, stop_all, wait_ready

STUDENT_CREATE = """
mutation Create($input: StudentCreateInput!) {
  studentCreate(input: $input) {
    __typename
    ... on StudentCreateSuccess { student { studentId } }
  }
}
"""
METRICS = "subscription { metrics { requestsTotal } }"
# The operation held in flight waits for SQLite's write lock (the busy timeout)
# while the test holds it: the real way a write waits, no hook in the app.
OPERATION_TIMEOUT_S = 10


@pytest.fixture
def app(tmp_path: Path):
    app = launch(
        tmp_path,
        DATABASE_URL=f"sqlite:///{tmp_path / 'drain.db'}",
        OPERATION_TIMEOUT_S=str(OPERATION_TIMEOUT_S),
        DB_BUSY_TIMEOUT_MS=str(OPERATION_TIMEOUT_S * 1000),
        SAMPLE_INTERVAL_MS="100",
        ACCESS_LOG="false",
        WORKERS="1",
        REDIS_URL=None,
    )
    try:
        wait_ready(app)
        yield app
    finally:
        stop_all([app])


async def subscribed(app: AppProcess, protocol: str) -> ClientConnection:
    """A raw WebSocket with an acknowledged metrics subscription that has sent data."""
    ws = await connect(app.ws_url, subprotocols=[protocol])
    await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
    assert json.loads(await ws.recv()) == {"type": "connection_ack"}
    await ws.send(subscribe_frame(protocol, "1", METRICS))
    kind = "next" if protocol == TRANSPORT_WS else "data"
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert message["type"] in (kind, "ka"), message
        if message["type"] == kind:
            return ws


async def test_sigterm_closes_subscriptions_with_1012_and_finishes_the_write(
    app: AppProcess, tmp_path: Path
):
    lock = sqlite3.connect(tmp_path / "drain.db", isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")  # the app's next write waits for it
        http = httpx.AsyncClient(timeout=30)
        write = asyncio.create_task(
            http.post(
                f"{app.url}/graphql",
                json={
                    "query": STUDENT_CREATE,
                    "variables": {"input": student_input(studentId="D00001")},
                },
            )
        )
        sockets = [await subscribed(app, protocol) for protocol in PROTOCOLS]
        await asyncio.sleep(0.3)
        assert not write.done()  # held by the lock

        app.terminate()
        started = time.monotonic()
        await asyncio.gather(*(frames_until_closed(ws) for ws in sockets))
        closed_in = time.monotonic() - started
        codes = [ws.close_code for ws in sockets]
        with pytest.raises(httpx.ConnectError):  # no longer accepting
            await asyncio.to_thread(httpx.get, f"{app.url}/health/live", timeout=2)
        still_waiting = not write.done()
        running = app.process.poll() is None

        lock.execute("COMMIT")  # the write goes ahead
        response = await asyncio.wait_for(write, OPERATION_TIMEOUT_S)
        code = await asyncio.to_thread(app.wait, 15)
        stopped_in = time.monotonic() - started
        await http.aclose()
        for ws in sockets:
            await ws.close()
    finally:
        lock.close()

    assert codes == [1012, 1012]
    assert closed_in < 2, closed_in  # at once, not after the write
    assert still_waiting and running
    assert response.status_code == 200
    assert response.json()["data"] == {
        "studentCreate": {
            "__typename": "StudentCreateSuccess",
            "student": {"studentId": "D00001"},
        }
    }
    assert code == 0
    assert stopped_in < 10
    with sqlite3.connect(tmp_path / "drain.db") as check:
        assert check.execute("SELECT student_id FROM students").fetchall() == [
            ("D00001",)
        ]
    log = app.log()
    assert "Traceback" not in log, log
    assert "Application shutdown complete" in log


async def test_sigterm_with_nothing_in_flight_exits_0_at_once(app: AppProcess):
    ws = await subscribed(app, LEGACY_WS)

    app.terminate()
    started = time.monotonic()
    await frames_until_closed(ws)
    code = await asyncio.to_thread(app.wait, 10)
    elapsed = time.monotonic() - started
    await ws.close()

    assert ws.close_code == 1012
    assert code == 0
    assert elapsed < 3
