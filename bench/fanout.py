"""Fan-out: N concurrent `metrics` subscribers at 1 Hz on one worker. Delivery lag is
the client's receipt time minus the snapshot's `at` (the sampler tick), both UTC on
this machine; the server's CPU is read with psutil over the measured window."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
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
    """One subscriber. The receive loop is kept lean (no timeout per frame, the
    snapshot time cut out of the frame, a full parse only for what is not a plain
    `next`): the client shares the machine's cores with the server it measures."""
    try:
        async with websockets.connect(
            url, subprotocols=["graphql-transport-ws"], max_size=2**20, open_timeout=30
        ) as ws:
            if not await subscribe(ws, SUBSCRIPTION, errors):
                return False
            closer = asyncio.create_task(_close_on(stop, ws))
            try:
                async for raw in ws:
                    at = raw.find(_AT)
                    if at >= 0 and '"type":"next"' in raw and '"errors"' not in raw:
                        if ready.is_set():
                            start = at + len(_AT)
                            lags.append(_lag_ms(raw[start : raw.index('"', start)]))
                        continue
                    message = json.loads(raw)
                    if message.get("type") == "ping":
                        await ws.send(json.dumps({"type": "pong"}))
                    elif message.get("type") == "next":
                        errors.append(str(message["payload"].get("errors"))[:200])
                    elif message.get("type") in ("error", "complete"):
                        errors.append(str(message)[:200])
                        return True
            finally:
                closer.cancel()
            return True
    except websockets.ConnectionClosedOK:
        if stop.is_set():  # closed by _close_on at the end of the run
            return True
        errors.append("the server closed the connection")
        return False
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
        return False


_AT = '"at":"'


async def _close_on(stop: asyncio.Event, ws: Any) -> None:
    await stop.wait()
    await ws.close()


# Client processes: one Python process cannot read 5,000 sockets' frames in time on
# its own, and would measure itself instead of the server.
CLIENT_PROCESSES = 4


async def _client(
    url: str, subscribers: int, start_at: float, seconds: float
) -> tuple[int, list[float], list[str]]:
    """One client process: connect `subscribers`, keep the lags seen between
    `start_at` and `start_at + seconds` (epoch seconds)."""
    lags: list[float] = []
    errors: list[str] = []
    ready, stop = asyncio.Event(), asyncio.Event()
    tasks = []
    for _ in range(subscribers):
        tasks.append(asyncio.create_task(_subscriber(url, lags, errors, ready, stop)))
        await asyncio.sleep(0.004)  # connect gradually, as real clients do
    await asyncio.sleep(max(0.0, start_at - time.time()))
    ready.set()
    await asyncio.sleep(max(0.0, start_at + seconds - time.time()))
    ready.clear()
    stop.set()
    connected = sum(1 for ok in await asyncio.gather(*tasks) if ok)
    return connected, lags, errors


def _client_process(
    url: str, subscribers: int, start_at: float, seconds: float, out: Any
) -> None:
    out.send(asyncio.run(_client(url, subscribers, start_at, seconds)))
    out.close()


def run_fanout(
    url: str,
    server_pid: int,
    subscribers: int,
    seconds: float,
    processes: int = CLIENT_PROCESSES,
) -> FanoutResult:
    """`subscribers` spread over `processes` client processes; the lags of the
    `seconds` after every one has connected and had its first snapshot."""
    context = multiprocessing.get_context("spawn")
    shares = [
        subscribers // processes + (i < subscribers % processes)
        for i in range(processes)
    ]
    # Connecting takes about 4 ms a subscriber per process, plus 3 s for a first
    # snapshot each.
    start_at = time.time() + max(shares) * 0.004 + 5
    pipes, workers = [], []
    for share in shares:
        receive, send = context.Pipe(duplex=False)
        worker = context.Process(
            target=_client_process, args=(url, share, start_at, seconds, send)
        )
        worker.start()
        pipes.append(receive)
        workers.append(worker)
    server = psutil.Process(server_pid)
    time.sleep(max(0.0, start_at - time.time()))
    server.cpu_percent(None)
    time.sleep(seconds)
    cpu = server.cpu_percent(None)
    connected, lags, errors = 0, [], []
    for receive, worker in zip(pipes, workers, strict=True):
        if receive.poll(seconds + 120):
            part_connected, part_lags, part_errors = receive.recv()
            connected += part_connected
            lags.extend(part_lags)
            errors.extend(part_errors)
        else:
            errors.append("a client process did not answer")
        worker.join(30)
    ordered = sorted(lags)
    for reason in sorted(set(errors))[:5]:
        print(f"fan-out client error: {reason}", flush=True)
    return FanoutResult(
        subscribers=subscribers,
        connected=connected,
        messages=len(ordered),
        errors=len(errors),
        p50_ms=statistics.median(ordered) if ordered else float("nan"),
        p99_ms=ordered[int(0.99 * (len(ordered) - 1))] if ordered else float("nan"),
        server_cpu_percent=cpu,
    )
