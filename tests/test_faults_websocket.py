"""Faults: hostile and slow WebSocket clients, against `python app.py` (sampler at
100 ms, feeds at 1 s, MAX_BODY_BYTES 64 KiB, WS_SEND_TIMEOUT_S 20).

Malformed frames (binary, invalid JSON, an unknown message type, a subscribe
without an id) close their connection with 4400; a message larger than
MAX_BODY_BYTES with 1009; 1,000 sockets that never send connection_init are closed
with 4408. Subscribers that stop reading (their socket buffers full) hold nobody
up: one that falls BACKLOG grade writes behind is closed with 1013, one that takes
nothing for WS_SEND_TIMEOUT_S is dropped, and the server's memory stays bounded.
Through all of it well-behaved subscribers get every snapshot and every grade
event within 2 s."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import psutil
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.factories import TRANSPORT_WS, frames_until_closed, subscribe_frame
from tests.factories.cluster import AppProcess, app_with_files, create_student
from tests.factories.grades import GRADES_ADD_QUERY

pytestmark = pytest.mark.faults

MAX_BODY = 65536
SILENT = 1000
STALLED_SUBSCRIPTIONS = 20  # on each connection that stops reading
LAG_S = 2.0
SEND_TIMEOUT_S = 20
STALL_S = 60.0
STUDENT = "W00001"
WRITES = 300  # more than BACKLOG (256) beyond what the socket buffers hold
ROWS_PER_WRITE = 50
EVENTS = "subscription { gradeEvents { studentId grades { id subject score } } }"
# About 13 KB a frame: 20 of them fill the kernel's socket buffers (several MiB on
# loopback) within 50 writes, and the rest fall behind.
GRADE_FIELDS = "id studentId subject score maxScore percentage recordedAt"
BIG_EVENTS = (
    f"subscription {{ gradeEvents {{ studentId grades {{ {GRADE_FIELDS} }} "
    f"again: grades {{ {GRADE_FIELDS} }} }} }}"
)
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
        WS_SEND_TIMEOUT_S=str(SEND_TIMEOUT_S),
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


@pytest.mark.serial  # it measures others' lag: another process's tests skew it
async def test_subscribers_that_stop_reading_hold_nobody_up(
    server: AppProcess,
) -> None:
    """One client stops reading for 60 s, another until it has fallen BACKLOG grade
    writes behind; both with small socket buffers and 20 subscriptions, so that
    their buffers fill at once."""
    url = server.ws_url
    create_student(server, STUDENT, "stall@example.edu", 9)
    stuck = await stalled_reader(
        server, [BIG_FEED] * 10 + [BIG_EVENTS] * 10, small_buffers=True
    )
    slow = await stalled_reader(server, [BIG_EVENTS] * STALLED_SUBSCRIPTIONS)
    await subscriptions_reach(server, 2 * STALLED_SUBSCRIPTIONS)
    process = psutil.Process(server.process.pid)
    rss_before = process.memory_info().rss
    watcher, events = Watcher(), EventWatcher()
    watcher.start(url)
    await events.start(url)
    started = time.monotonic()
    try:
        sent = await write_grades(server)
        # The slow reader fell behind: its close (1013) waits in the server's
        # buffer, behind the events it did take; it reads them, then the close.
        slow.transport.resume_reading()
        await frames_until_closed(slow, timeout=30)
        assert (slow.close_code, slow.close_reason) == (
            1013,
            "fell behind on grade events",
        )
        await events.received(WRITES, timeout=10)
        await asyncio.sleep(max(0.0, STALL_S - (time.monotonic() - started)))
        await subscriptions_reach(server, 2)  # the watchers' alone
        rss_after = process.memory_info().rss
    finally:
        await watcher.stop()
        await events.stop()
    # The stuck reader was dropped after WS_SEND_TIMEOUT_S with its buffers full:
    # no close frame could reach it.
    stuck.transport.resume_reading()
    await frames_until_closed(stuck, timeout=30)
    assert stuck.close_code == 1006
    log = server.log()
    assert "WebSocket dropped: the client took nothing for 20 s" in log
    assert "Traceback" not in log
    watcher.assert_fed(int(STALL_S) - 5)  # one a second
    events.assert_every_write(sent)
    assert rss_after - rss_before < 64 * 2**20, (rss_before, rss_after)


async def stalled_reader(
    server: AppProcess, documents: list[str], *, small_buffers: bool = False
) -> ClientConnection:
    """A connection that sends its subscriptions and reads nothing more (with a
    4 KiB receive buffer when `small_buffers`: it then fills at once, but would
    take minutes to drain, TCP backing off while the window was closed)."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    if small_buffers:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ws = await ready(server.ws_url, sock=sock, max_queue=1)
    for number, document in enumerate(documents):
        await ws.send(subscribe_frame(TRANSPORT_WS, f"s{number}", document))
    ws.transport.pause_reading()
    return ws


async def write_grades(server: AppProcess) -> dict[str, float]:
    """WRITES gradesAdd of ROWS_PER_WRITE rows each, one after the other, each
    with subjects of its own; when each was sent."""
    sent: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        for write in range(WRITES):
            subject = f"W{write}"
            rows = [
                {
                    "studentId": STUDENT,
                    "subject": subject,
                    "score": float(row),
                    "recordedAt": f"2025-03-{1 + row % 28:02d}T09:00:00Z",
                }
                for row in range(ROWS_PER_WRITE)
            ]
            sent[subject] = time.time()
            response = await client.post(
                "/graphql",
                json={"query": GRADES_ADD_QUERY, "variables": {"input": rows}},
            )
            added = response.json()["data"]["gradesAdd"]
            assert added == {
                "__typename": "GradesAddSuccess",
                "inserted": ROWS_PER_WRITE,
                "replayed": False,
            }
    return sent


async def subscriptions_reach(server: AppProcess, count: int) -> None:
    """The server's open subscriptions become `count` within 5 s."""
    deadline = time.monotonic() + 5
    while True:
        body = await asyncio.to_thread(
            server.post, "{ metrics { activeSubscriptions } }"
        )
        active = body.json()["data"]["metrics"]["activeSubscriptions"]
        if active == count:
            return
        assert time.monotonic() < deadline, (active, count)
        await asyncio.sleep(0.1)


class EventWatcher:
    """A well-behaved gradeEvents subscriber: when each write's event arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._ws: ClientConnection | None = None

    async def start(self, url: str) -> None:
        self._ws = await ready(url)
        await self._ws.send(subscribe_frame(TRANSPORT_WS, "e", EVENTS))
        await asyncio.sleep(0.5)  # subscribed before the first write
        self._task = asyncio.create_task(self._run(self._ws))

    async def _run(self, ws: ClientConnection) -> None:
        async for raw in ws:
            message = json.loads(raw)
            if message["type"] == "ping":
                continue
            assert message["type"] == "next", message
            grades = message["payload"]["data"]["gradeEvents"]["grades"]
            self.arrived[grades[0]["subject"]] = time.time()

    async def received(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.arrived) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        assert self._task is not None and self._ws is not None
        assert not self._task.done(), self._task  # ran until stopped
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._ws.close()

    def assert_every_write(self, sent: dict[str, float]) -> None:
        """Every write's event, each within LAG_S of when its write was sent."""
        assert set(self.arrived) == set(sent)
        worst = max(self.arrived[subject] - sent[subject] for subject in sent)
        assert worst < LAG_S, worst
