"""Fan-out: N concurrent `metrics` subscribers at 1 Hz on one worker. Delivery lag is
the client's receipt time minus the snapshot's `at` (the sampler tick), both UTC on
this machine; the server's CPU is read with psutil over the measured window."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psutil
import websockets

SUBSCRIPTION = "subscription { metrics(intervalMs: 1000) { at requestsTotal } }"


@dataclass(frozen=True, slots=True)
class FanoutResult:
    subscribers: int
    connected: int
    messages: int
    errors: int
    p50_ms: float
    p99_ms: float
    server_cpu_percent: float


def _lag_ms(at: str) -> float:
    sent = datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
    return (time.time() - sent) * 1000.0


async def subscribe(ws: Any, query: str, errors: list[str]) -> bool:
    """graphql-transport-ws: init, wait for the ack (30 s at most), subscribe as "1".
    False (and the reason in `errors`) without an ack."""
    await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
    ack = json.loads(await asyncio.wait_for(ws.recv(), 30))
    if ack.get("type") != "connection_ack":
        errors.append(f"no ack: {str(ack)[:200]}")
        return False
    await ws.send(
        json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}})
    )
    return True


async def _subscriber(
    url: str,
    lags: list[float],
    errors: list[str],
    ready: asyncio.Event,
    stop: asyncio.Event,
) -> bool:
    try:
        async with websockets.connect(
            url, subprotocols=["graphql-transport-ws"], max_size=2**20, open_timeout=30
        ) as ws:
            if not await subscribe(ws, SUBSCRIPTION, errors):
                return False
            while not stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 1.0)
                except TimeoutError:
                    continue
                message = json.loads(raw)
                if message.get("type") == "ping":
                    await ws.send(json.dumps({"type": "pong"}))
                elif message.get("type") == "next":
                    if message["payload"].get("errors"):
                        errors.append(str(message["payload"]["errors"])[:200])
                    elif ready.is_set():
                        lags.append(
                            _lag_ms(message["payload"]["data"]["metrics"]["at"])
                        )
                elif message.get("type") in ("error", "complete"):
                    errors.append(str(message)[:200])
                    return True
            return True
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
        return False


async def run_fanout(
    url: str, server_pid: int, subscribers: int, seconds: float
) -> FanoutResult:
    lags: list[float] = []
    errors: list[str] = []
    ready, stop = asyncio.Event(), asyncio.Event()
    tasks = []
    for _ in range(subscribers):
        tasks.append(asyncio.create_task(_subscriber(url, lags, errors, ready, stop)))
        await asyncio.sleep(0.002)  # connect gradually, as real clients do
    await asyncio.sleep(3)  # every subscriber has had a first snapshot
    server = psutil.Process(server_pid)
    server.cpu_percent(None)
    ready.set()
    await asyncio.sleep(seconds)
    cpu = server.cpu_percent(None)
    ready.clear()
    stop.set()
    connected = sum(1 for ok in await asyncio.gather(*tasks) if ok)
    ordered = sorted(lags)
    return FanoutResult(
        subscribers=subscribers,
        connected=connected,
        messages=len(ordered),
        errors=len(errors),
        p50_ms=statistics.median(ordered) if ordered else float("nan"),
        p99_ms=ordered[int(0.99 * (len(ordered) - 1))] if ordered else float("nan"),
        server_cpu_percent=cpu,
    )
