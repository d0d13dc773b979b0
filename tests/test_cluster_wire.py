"""What crosses Redis between two workers of one cluster (two apps in this process, one
Redis under the test's REDIS_PREFIX), read straight off the channels: a grade write
publishes nothing while no worker has a gradeEvents subscriber, and is published once
one has (a subscription that has just started is announced at once); samples carry
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
from resolvers import live
from tests.factories import create_student
from tests.test_cluster_bus import (
    GRADE_ADD,
    GRADE_EVENTS,
    WAIT_S,
    clustered,
    events,
    merging,
    pair,
    subscribed,
    until,
)

GRADES_ADD = """mutation Add($input: [GradeAddInput!]!) {
  gradesAdd(input: $input) { __typename } }"""


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


async def test_grade_writes_cross_the_bus_only_while_a_worker_listens(
    make_api, scratch_url, redis_url, redis_prefix
):
    # Ticks of 2 s: a write right after a subscription starts elsewhere comes long
    # before that worker's next sample says so; its announcement tells.
    a = await make_api(
        scratch_url, **clustered(redis_url, redis_prefix, sample_interval_ms=2000)
    )
    b = await make_api(
        scratch_url, **clustered(redis_url, redis_prefix, sample_interval_ms=2000)
    )
    for api in (a, b):
        await until(merging(api, 2))
    student = (await create_student(a, gradeLevel=7))["studentId"]

    async with wire(redis_url, redis_prefix, live.GRADES) as grades:
        # Nobody listens anywhere: neither write is published (nor are its rows
        # returned by the batch's insert).
        assert a.app.state.monitor.listening() is False
        single = {"studentId": student, "subject": "Math", "score": 1.0}
        body = await a.post(GRADE_ADD, {"input": single})
        assert body["data"]["gradeAdd"]["__typename"] == "GradeAddSuccess"
        rows = [
            {"studentId": student, "subject": "Art", "score": float(n)}
            for n in range(50)
        ]
        body = await a.post(GRADES_ADD, {"input": rows})
        assert body["data"]["gradesAdd"]["__typename"] == "GradesAddSuccess"

        async with subscribed(b, GRADE_EVENTS, live.GRADES, studentId=student) as on_b:
            body = await a.post(
                GRADE_ADD,
                {"input": {"studentId": student, "subject": "Bio", "score": 9.5}},
            )
            assert body["data"]["gradeAdd"]["__typename"] == "GradeAddSuccess"
            (event,) = await events(on_b, 1)

        # A's messages reach Redis in the order it publishes them: the first on
        # the channel is the write made once B listened.
        envelope = await next_message(grades)
        assert envelope["o"] == a.app.state.monitor.worker
        (written,) = live.CODECS[live.GRADES].decode(envelope["d"])
        assert [(g.subject, g.score) for g in written.grades] == [("Bio", 9.5)]
        assert event["gradeEvents"]["grades"][0]["subject"] == "Bio"


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
