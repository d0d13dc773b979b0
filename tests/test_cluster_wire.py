"""What crosses Redis between two workers of one cluster (two apps in this process, one
Redis under the test's REDIS_PREFIX), read straight off the channels: samples carry
the durations they add, not their whole window."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from monitoring.monitor import SNAPSHOTS
from monitoring.samples import WorkerSample, decode_sample
from tests.test_cluster_bus import (
    WAIT_S,
    pair,
    until,
)


@asynccontextmanager
async def wire(redis_url: str, prefix: str, topic: str) -> AsyncIterator[PubSub]:
    """A plain Redis subscriber on the bus channel of `topic`."""
    client = Redis.from_url(redis_url)
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(f"{prefix}events:{topic}")
        confirmation = await pubsub.get_message(timeout=WAIT_S)
        assert confirmation is not None and confirmation["type"] == "subscribe"
        yield pubsub
    finally:
        await pubsub.aclose()
        await client.aclose()


async def next_message(pubsub: PubSub) -> dict[str, Any]:
    """The next message's envelope ({"o": origin, "d": data}), within WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message is not None:
            envelope: dict[str, Any] = orjson.loads(message["data"])
            return envelope
    raise AssertionError(f"nothing crossed within {WAIT_S} s")


async def test_samples_carry_the_durations_they_add_not_the_whole_window(
    make_api, scratch_url, redis_url, redis_prefix
):
    a, b = await pair(make_api, scratch_url, redis_url, redis_prefix)
    monitors = [api.app.state.monitor for api in (a, b)]

    async def settled() -> bool:
        # Each holds the other's whole window (it asks for none).
        return all(monitor.peers.wanted() == () for monitor in monitors)

    await until(settled)
    for _ in range(5):
        await b.post("{ __typename }")

    def carried_b_durations(received: list[WorkerSample]) -> bool:
        worker = monitors[1].worker
        return any(s.worker == worker and s.recent_response_ms for s in received)

    async with wire(redis_url, redis_prefix, SNAPSHOTS) as snapshots:
        received: list[WorkerSample] = []
        while len(received) < 6 or not carried_b_durations(received):
            received.append(decode_sample((await next_message(snapshots))["d"]))
            assert len(received) < 50, "no sample carried B's durations"

    assert {s.worker for s in received} == {m.worker for m in monitors}
    assert [s.response_ms for s in received] == [None] * len(received)
    assert [s.window_wanted for s in received] == [()] * len(received)

    # What crossed is enough: A holds B's window exactly as B keeps it.
    async def followed() -> bool:
        (peer,) = monitors[0].peers.live()
        return list(peer.window) == list(monitors[1].registry.response_times.samples)

    await until(followed)
    assert len(monitors[1].registry.response_times.samples) >= 5
