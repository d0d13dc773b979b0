"""Faults: hostile and slow WebSocket clients, against `python app.py` (sampler at
100 ms, feeds at 1 s, MAX_BODY_BYTES 64 KiB).

Malformed frames (binary, invalid JSON, an unknown message type, a subscribe
without an id) close their connection with 4400; a message larger than
MAX_BODY_BYTES with 1009; 1,000 sockets that never send connection_init are closed
with 4408; a subscriber that stops reading (its socket buffers full) holds nobody
up. Through all of it a well-behaved subscriber gets every snapshot within 2 s of
its time."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.factories import TRANSPORT_WS, frames_until_closed, subscribe_frame
from tests.factories.cluster import AppProcess, app_with_files

pytestmark = pytest.mark.faults

MAX_BODY = 65536
SILENT = 1000
STALLED_SUBSCRIPTIONS = 20  # on the connection that stops reading
LAG_S = 2.0
FEED = "subscription { metrics(intervalMs: 1000) { at requestsTotal } }"
BIG_FEED = (
    "subscription { metrics(intervalMs: 1000) { at requestsTotal requestsPerMinute "
    "errorRate responseTimeMs { avg p50 p95 p99 } cacheHitRate dbQueriesPerMinute "
    "memoryMb cpuPercent totalCost currentPeriodCost workers degraded } }"
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AppProcess]:
    with app_with_files(
        tmp_path,
        3 * SILENT + 512,
        SAMPLE_INTERVAL_MS="100",
        MAX_BODY_BYTES=str(MAX_BODY),
        MAX_SUBSCRIPTIONS="50",
        MAX_SUBSCRIPTIONS_PER_CONNECTION=str(STALLED_SUBSCRIPTIONS),
    ) as app:
        yield app


async def ready(url: str, **options: object) -> ClientConnection:
    ws = await connect(url, subprotocols=[TRANSPORT_WS], **options)  # type: ignore[arg-type]
    await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
    ack = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert ack["type"] == "connection_ack"
    return ws


class Watcher:
    """A well-behaved subscriber: the largest lag (receipt minus the snapshot's
    time) it saw, and how many frames."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.frames = 0
        self._task: asyncio.Task[None] | None = None

    def start(self, url: str) -> None:
        self._task = asyncio.create_task(self.run(url))

    async def stop(self) -> None:
        """Stop watching; it must have run until stopped (no error ended it)."""
        assert self._task is not None
        self._task.cancel()
        [ended] = await asyncio.gather(self._task, return_exceptions=True)
        assert isinstance(ended, asyncio.CancelledError), ended

    def assert_fed(self, frames: int) -> None:
        """At least `frames` snapshots, each within LAG_S of its time."""
        assert self.frames >= frames, self.frames
        assert self.worst < LAG_S, self.worst

    async def run(self, url: str) -> None:
        ws = await ready(url)
        await ws.send(subscribe_frame(TRANSPORT_WS, "w", FEED))
        try:
            async for raw in ws:
                message = json.loads(raw)
                if message.get("type") != "next":
                    continue
                at = message["payload"]["data"]["metrics"]["at"]
                sent = datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
                self.worst = max(self.worst, time.time() - sent)
                self.frames += 1
        finally:
            await ws.close()


async def closes_with(url: str, send: str | bytes) -> int | None:
    ws = await ready(url)
    await ws.send(send)
    return await _closed_code(ws)


async def test_hostile_clients_are_closed_and_others_keep_their_feed(
    server: AppProcess,
) -> None:
    url = f"ws://127.0.0.1:{server.port}/graphql"
    watcher = Watcher()
    watcher.start(url)
    try:
        await asyncio.sleep(1.0)
        malformed = {
            "binary": b"\x00\x01",
            "invalid JSON": "{not json",
            "unknown type": json.dumps({"type": "bogus"}),
            "subscribe without id": json.dumps(
                {"type": "subscribe", "payload": {"query": FEED}}
            ),
        }
        for name, frame in malformed.items():
            assert await closes_with(url, frame) == 4400, name
        too_big = json.dumps(
            {"id": "x", "type": "subscribe", "payload": {"query": "#" * (MAX_BODY + 1)}}
        )
        assert await closes_with(url, too_big) == 1009

        # 1,000 sockets that never send connection_init: closed with 4408.
        started = time.monotonic()
        silent = await asyncio.gather(
            *(
                connect(url, subprotocols=[TRANSPORT_WS], open_timeout=30)
                for _ in range(SILENT)
            )
        )
        codes = await asyncio.gather(
            *(_closed_code(ws) for ws in silent), return_exceptions=True
        )
        assert codes == [4408] * SILENT, {repr(c) for c in codes}
        assert time.monotonic() - started < 30
        await asyncio.sleep(1.0)
    finally:
        await watcher.stop()
    watcher.assert_fed(3)  # one a second


async def _closed_code(ws: ClientConnection) -> int | None:
    """The code the server closed `ws` with (waited for at most 20 s)."""
    await frames_until_closed(ws, timeout=20)
    return ws.close_code


async def test_a_subscriber_that_stops_reading_holds_nobody_up(
    server: AppProcess,
) -> None:
    url = f"ws://127.0.0.1:{server.port}/graphql"
    # Small socket buffers, so that the stalled reader's fill up within the test.
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled = await ready(url, sock=sock, max_queue=1)
    for number in range(STALLED_SUBSCRIPTIONS):  # 20 frames a second for it
        await stalled.send(subscribe_frame(TRANSPORT_WS, f"s{number}", BIG_FEED))
    await asyncio.wait_for(stalled.recv(), 5)
    stalled.transport.pause_reading()  # reads nothing from now on
    watcher = Watcher()
    watcher.start(url)
    try:
        await asyncio.sleep(15)
        health = await asyncio.to_thread(server.health)
        assert health["checks"]["database"]["status"] == "ok"  # still answering
    finally:
        await watcher.stop()
        stalled.transport.resume_reading()
        try:
            await asyncio.wait_for(stalled.close(), 5)
        except (TimeoutError, ConnectionClosed):
            stalled.transport.abort()
    watcher.assert_fed(12)  # one a second
