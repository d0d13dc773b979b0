"""A subscriber that reads nothing (issue 13): the other subscribers' delivery lag
with and without it, in alternation on one server (without, with, without, with),
so that drift in the machine's speed falls on both. The others are `metrics`
subscribers at 1 Hz as in bench/fanout.py; the stalled client holds 20 subscriptions
to a larger `metrics` selection on one connection with a 4 KiB receive buffer, and
stops reading once subscribed, so that the server's sends to it back up."""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import threading
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from bench.fanout import run_fanout
from bench.process import Server

HEADING = "## Slow subscriber (issue 13)"
STALLED_SUBSCRIPTIONS = 20
STALLED_DOCUMENT = (
    "subscription { metrics(intervalMs: 1000) { at requestsTotal requestsPerMinute "
    "errorRate responseTimeMs { avg p50 p95 p99 } cacheHitRate dbQueriesPerMinute "
    "memoryMb cpuPercent totalCost currentPeriodCost workers degraded } }"
)
TARGET = 1.10  # the others' p99 lag with it, at most 10% above without


class Stalled:
    """The client that stops reading, on a loop of its own in a thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.subscribed = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(self._run(),), daemon=True
        )

    def __enter__(self) -> Stalled:
        self._thread.start()
        if not self.subscribed.wait(30):
            raise SystemExit("the stalled client could not subscribe")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        async with connect(
            f"ws://127.0.0.1:{self.port}/graphql",
            sock=sock,
            subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
            max_queue=1,
        ) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
            await asyncio.wait_for(ws.recv(), 30)  # the ack
            for number in range(STALLED_SUBSCRIPTIONS):
                payload = {"query": STALLED_DOCUMENT}
                await ws.send(
                    json.dumps(
                        {"id": f"s{number}", "type": "subscribe", "payload": payload}
                    )
                )
            ws.transport.pause_reading()
            self.subscribed.set()
            await self._stop.wait()
            ws.transport.abort()  # it read nothing: no close handshake either


def measure(database: Path, subscribers: int, seconds: float) -> list[str]:
    """The section's lines: each run's figures, then the pair's ratio."""
    server = Server(
        database,
        SAMPLE_INTERVAL_MS="1000",
        MAX_SUBSCRIPTIONS=str(max(10_000, subscribers + STALLED_SUBSCRIPTIONS)),
        MAX_SUBSCRIPTIONS_PER_CONNECTION=str(STALLED_SUBSCRIPTIONS),
    )
    url = server.url.replace("http://", "ws://") + "/graphql"
    runs: dict[bool, list[Any]] = {False: [], True: []}
    try:
        for stalled in (False, True, False, True):
            label = "with" if stalled else "without"
            print(f"slow subscriber: {subscribers} others, {label} it ...", flush=True)
            if stalled:
                with Stalled(server.port):
                    result = run_fanout(url, server.process.pid, subscribers, seconds)
            else:
                result = run_fanout(url, server.process.pid, subscribers, seconds)
            runs[stalled].append(result)
            print(
                f"  {label}: lag p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
                f"{result.messages} snapshots, {result.errors} errors",
                flush=True,
            )
    finally:
        server.stop()
    without = statistics.mean(r.p99_ms for r in runs[False])
    with_it = statistics.mean(r.p99_ms for r in runs[True])
    ratio = with_it / without
    errors = sum(r.errors for rs in runs.values() for r in rs)
    met = ratio <= TARGET and errors == 0
    lines = [
        HEADING,
        "",
        f"{subscribers} `metrics` subscribers at 1 Hz (as in Fan-out) on one worker, "
        f"{seconds:g} s a run, runs alternating without and with a client that holds "
        f"{STALLED_SUBSCRIPTIONS} subscriptions on one connection (4 KiB receive "
        "buffer) and reads nothing once subscribed.",
        "",
    ]
    for stalled in (False, True):
        for number, r in enumerate(runs[stalled], 1):
            lines.append(
                f"- {'with' if stalled else 'without'} it, run {number}: lag p50 "
                f"{r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, {r.messages} snapshots, "
                f"{r.errors} errors"
            )
    lines += [
        "",
        f"Others' p99 lag with it / without it: {with_it:.1f} / {without:.1f} ms = "
        f"**{ratio:.2f}** (target <= {TARGET:.2f}: {'met' if met else 'MISSED'}).",
        "",
    ]
    return lines
