"""The event bus across workers: two apps in this process on one database (SQLite file
and PostgreSQL) and one Redis (TEST_REDIS_URL) under the test's REDIS_PREFIX, the
sampler at 200 ms. Grade events, alerts and import progress cross workers once each;
the metrics feed is the cluster's; Redis going away degrades and its return heals."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest

from monitoring.monitor import ALERTS
from monitoring.snapshot import AlertEvent, AlertState
from resolvers import live
from tests.asgi_ws import AsgiWebSocket
from tests.factories import create_student
from tests.factories.proxy import TcpProxy

# Short, yet 3 of them (the time a silent worker is kept) outlast a loaded machine's
# stalls, so that live workers never drop out in the middle of a test.
TICK_MS = 200
WAIT_S = 5.0  # a bound on every wait, never a duration a test expects
QUIET_S = 0.5  # how long a test listens for an event that must not come

METRICS = """
    query {
      metrics {
        requestsTotal requestsPerMinute workers degraded memoryMb
        responseTimeMs { avg p50 p95 p99 }
      }
    }
"""
GRADE_EVENTS = """
    subscription Grades($studentId: String) {
      gradeEvents(studentId: $studentId) {
        studentId gradeLevel
        grades { id studentId subject score maxScore recordedAt }
      }
    }
"""
ALERTS_SUBSCRIPTION = "subscription { alerts { rule state message values at } }"
GRADE_ADD = """
    mutation Add($input: GradeAddInput!) {
      gradeAdd(input: $input) {
        __typename
        ... on GradeAddSuccess {
          grade { id studentId subject score maxScore recordedAt }
        }
      }
    }
"""


def clustered(redis_url: str, prefix: str, **overrides: Any) -> dict[str, Any]:
    return {
        "redis_url": redis_url,
        "redis_prefix": prefix,
        "sample_interval_ms": TICK_MS,
        # Only the alerts a test publishes itself.
        "alert_memory_mb": 1_000_000,
        "alert_response_time_ms": 1_000_000,
        **overrides,
    }


async def until(
    condition: Callable[[], Awaitable[bool]], bound: float = WAIT_S
) -> float:
    """Poll until `condition` holds; the seconds it took (AssertionError past bound)."""
    started = time.monotonic()
    while not await condition():
        if time.monotonic() - started > bound:
            raise AssertionError(f"condition not met within {bound} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def metrics(api: Any) -> dict[str, Any]:
    body = await api.post(METRICS)
    assert "errors" not in body, body
    result: dict[str, Any] = body["data"]["metrics"]
    return result


def merging(api: Any, workers: int) -> Callable[[], Awaitable[bool]]:
    async def condition() -> bool:
        snapshot = await metrics(api)
        return snapshot["workers"] == workers and snapshot["degraded"] is False

    return condition


async def pair(make_api: Any, url: str, redis_url: str, prefix: str) -> list[Any]:
    """Two workers of one cluster that merge each other."""
    first = await make_api(url, **clustered(redis_url, prefix))
    second = await make_api(url, **clustered(redis_url, prefix))
    for api in (first, second):
        await until(merging(api, 2))
    return [first, second]


@asynccontextmanager
async def subscribed(
    api: Any, query: str, topic: str, **variables: Any
) -> AsyncIterator[AsgiWebSocket]:
    """A graphql-transport-ws subscription on `api`, started before the block."""
    bus = api.app.state.monitor.bus
    before = bus.subscribers(topic)
    async with AsgiWebSocket(api.app) as ws:
        await ws.send_json({"type": "connection_init", "payload": {}})
        assert await ws.receive_json() == {"type": "connection_ack"}
        await ws.send_json(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": query, "variables": variables},
            }
        )

        async def started() -> bool:
            return bool(bus.subscribers(topic) > before)

        await until(started)
        yield ws


async def events(ws: AsgiWebSocket, count: int) -> list[dict[str, Any]]:
    """`count` events, then proof that no further one comes within QUIET_S."""
    received = []
    for _ in range(count):
        message = await ws.receive_json(timeout=WAIT_S)
        assert message["type"] == "next", message
        received.append(message["payload"]["data"])
    with pytest.raises(TimeoutError):
        extra = await ws.receive_json(timeout=QUIET_S)
        raise AssertionError(f"an event too many: {extra}")
    return received


async def test_grade_events_written_on_one_worker_reach_every_worker_once_in_order(
    make_api, scratch_url, redis_url, redis_prefix
):
    a, b = await pair(make_api, scratch_url, redis_url, redis_prefix)
    student = (await create_student(b, gradeLevel=9))["studentId"]

    async with (
        subscribed(a, GRADE_EVENTS, live.GRADES, studentId=student) as on_a,
        subscribed(b, GRADE_EVENTS, live.GRADES, studentId=student) as on_b,
    ):
        written = []
        for number in range(8):
            body = await b.post(
                GRADE_ADD,
                {
                    "input": {
                        "studentId": student,
                        "subject": f"Subject {number}",
                        "score": 40.125 + number,
                        "maxScore": 50.0,
                        "recordedAt": f"2025-10-01T09:00:0{number}.123456Z",
                    }
                },
            )
            payload = body["data"]["gradeAdd"]
            assert payload["__typename"] == "GradeAddSuccess", payload
            written.append(payload["grade"])

        expected = [
            {
                "gradeEvents": {
                    "studentId": student,
                    "gradeLevel": 9,
                    "grades": [grade],
                }
            }
            for grade in written
        ]
        # The other worker through Redis, the writing one directly: once each.
        assert await events(on_a, 8) == expected
        assert await events(on_b, 8) == expected


async def test_one_students_events_from_two_workers_arrive_in_commit_order(
    make_api, scratch_url, redis_url, redis_prefix
):
    """B writes first, but its publish to Redis is held up; A writes the same student
    right after. A's own event must not overtake B's earlier one, on either worker."""
    a, b = await pair(make_api, scratch_url, redis_url, redis_prefix)
    student = (await create_student(b, gradeLevel=9))["studentId"]
    b_bus = b.app.state.monitor.bus
    encode = b_bus._encode_all
    delayed = []

    def slow_encode(batch: list[Any]) -> Any:
        if not delayed:  # only B's first batch: its grade event
            delayed.append(len(batch))
            time.sleep(0.4)  # in the sender's thread: A writes meanwhile
        return encode(batch)

    b_bus._encode_all = slow_encode

    async with (
        subscribed(a, GRADE_EVENTS, live.GRADES, studentId=student) as on_a,
        subscribed(b, GRADE_EVENTS, live.GRADES, studentId=student) as on_b,
    ):
        written = []
        for api, score in ((b, 41.0), (a, 42.0)):
            body = await api.post(
                GRADE_ADD,
                {"input": {"studentId": student, "subject": "Math", "score": score}},
            )
            payload = body["data"]["gradeAdd"]
            assert payload["__typename"] == "GradeAddSuccess", payload
            written.append(payload["grade"])

        expected = [
            {"gradeEvents": {"studentId": student, "gradeLevel": 9, "grades": [g]}}
            for g in written
        ]
        assert await events(on_a, 2) == expected
        assert await events(on_b, 2) == expected
    assert delayed == [1]
    # A held its own event back until B's arrived.
    a_order = a.app.state.monitor.bus.sequencer(live.GRADES)
    assert (a_order.held, a_order.gave_up, a_order.late) == (1, 0, 0)


async def test_metrics_on_one_worker_count_requests_made_to_the_other(
    make_api, scratch_url, redis_url, redis_prefix
):
    a, b = await pair(make_api, scratch_url, redis_url, redis_prefix)
    for _ in range(7):
        await b.post("{ __typename }")
    a_registry = a.app.state.monitor.registry
    b_registry = b.app.state.monitor.registry
    b_total = b_registry.operations_total
    assert b_total >= 7

    seen: list[dict[str, Any]] = []

    async def counted() -> bool:
        own = a_registry.operations_total  # the query counts once it has answered
        seen.append(await metrics(a))
        return bool(seen[-1]["requestsTotal"] == own + b_total)

    await until(counted)
    snapshot = seen[-1]
    assert snapshot["workers"] == 2
    assert snapshot["degraded"] is False
    # Both workers are this process: the memory of two of them is summed.
    alone = a.app.state.monitor.sample().memory_mb
    assert snapshot["memoryMb"] > 1.5 * alone


def reference(values: list[float]) -> dict[str, float]:
    """avg and nearest-rank percentiles, computed here from the raw values."""
    ordered = sorted(values)

    def rank(fraction: float) -> float:
        return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]

    return {
        "avg": sum(ordered) / len(ordered),
        "p50": rank(0.50),
        "p95": rank(0.95),
        "p99": rank(0.99),
    }


async def test_percentiles_are_computed_over_both_workers_windows(
    make_api, scratch_url, redis_url, redis_prefix
):
    a, b = await pair(make_api, scratch_url, redis_url, redis_prefix)
    rng = random.Random(10)
    for api, low, high in ((a, 1000.0, 1500.0), (b, 1500.0, 3000.0)):
        registry = api.app.state.monitor.registry
        for _ in range(400):
            registry.record_operation(
                operation_type="query",
                operation="Injected",
                duration_s=rng.uniform(low, high) / 1000,
                failed=False,
                over_http=True,
            )
    windows = [api.app.state.monitor.registry.response_times.samples for api in (a, b)]

    seen: list[dict[str, float]] = []

    async def merged() -> bool:
        expected = reference([*windows[0], *windows[1]])  # before the query adds one
        times = (await metrics(a))["responseTimeMs"]
        seen.append(times)
        exact = all(times[key] == expected[key] for key in ("p50", "p95", "p99"))
        return exact and math.isclose(times["avg"], expected["avg"])

    await until(merged)
    times = seen[-1]
    alone = reference(list(windows[0]))
    assert times["p95"] > 1500.0 > alone["p95"]  # worker B's slower half shows


async def test_a_worker_that_stops_publishing_drops_out_within_3_ticks(
    make_api, scratch_url, redis_url, redis_prefix
):
    a, b = await pair(make_api, scratch_url, redis_url, redis_prefix)

    # Its sampler stops without a goodbye, as a killed process's would.
    stopped = time.monotonic()
    await b.app.state.monitor.stop()
    assert (await metrics(a))["workers"] == 2  # not at once

    async def alone() -> bool:
        return bool((await metrics(a))["workers"] == 1)

    await until(alone)
    gone_after = time.monotonic() - stopped
    # Its last sample holds for 3 ticks (the exact rule, against a clock the test
    # moves, is in test_cluster_merge.py); the slack is for a loaded machine.
    assert gone_after <= 3 * TICK_MS / 1000 + 1.0
    assert (await metrics(a))["degraded"] is False


async def test_another_prefix_sees_nothing_of_the_cluster(
    make_api, scratch_url, redis_url, redis_prefix
):
    a, b = await pair(make_api, scratch_url, redis_url, redis_prefix)
    other = await make_api(scratch_url, **clustered(redis_url, f"{redis_prefix}other:"))
    await until(merging(other, 1))
    student = (await create_student(a))["studentId"]

    async with subscribed(other, GRADE_EVENTS, live.GRADES) as on_other:
        await a.post(
            GRADE_ADD,
            {"input": {"studentId": student, "subject": "Math", "score": 1.0}},
        )

        async def b_received() -> bool:
            return bool(b.app.state.monitor.bus.received > 0)

        await until(b_received)
        with pytest.raises(TimeoutError):
            await on_other.receive_json(timeout=QUIET_S)

    assert other.app.state.monitor.bus.received == 0
    snapshot = await metrics(other)
    assert (snapshot["workers"], snapshot["degraded"]) == (1, False)


async def test_alerts_and_import_progress_published_on_one_worker_reach_the_other(
    make_api, scratch_url, redis_url, redis_prefix
):
    a, b = await pair(make_api, scratch_url, redis_url, redis_prefix)
    event = AlertEvent(
        rule="high_error_rate",
        state=AlertState.FIRING,
        message="High error rate: 7.5% (threshold: 5%)",
        values=(7.5,),
        threshold=5.0,
        at=datetime(2024, 1, 15, 10, 45, tzinfo=UTC),
    )
    jobs = b.app.state.monitor.bus.subscribe(live.IMPORTS, 16)
    try:
        async with (
            subscribed(b, ALERTS_SUBSCRIPTION, ALERTS) as on_b,
            subscribed(a, ALERTS_SUBSCRIPTION, ALERTS) as on_a,
        ):
            a.app.state.monitor.bus.publish(ALERTS, event)
            a.app.state.monitor.bus.publish(live.IMPORTS, "job-1")

            expected = {
                "alerts": {
                    "rule": "high_error_rate",
                    "state": "FIRING",
                    "message": "High error rate: 7.5% (threshold: 5%)",
                    "values": [7.5],
                    "at": "2024-01-15T10:45:00Z",
                }
            }
            assert await events(on_b, 1) == [expected]
            assert await events(on_a, 1) == [expected]
        assert await asyncio.wait_for(jobs.get(), WAIT_S) == "job-1"
        assert jobs.drain() == []
    finally:
        jobs.close()


class Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def test_redis_down_degrades_to_this_worker_and_its_return_heals(
    make_api, scratch_url, redis_url, redis_prefix
):
    target = urlsplit(redis_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379)
    await proxy.start()
    warnings = Warnings()
    logger = logging.getLogger("gradepulse.bus")
    logger.addHandler(warnings)
    try:
        a = await make_api(scratch_url, **clustered(proxy.url(redis_url), redis_prefix))
        b = await make_api(scratch_url, **clustered(redis_url, redis_prefix))
        for api in (a, b):
            await until(merging(api, 2))

        await proxy.stop()

        async def degraded() -> bool:
            snapshot = await metrics(a)
            return bool(snapshot["degraded"] is True and snapshot["workers"] == 1)

        await until(degraded)
        # Queries and writes keep working from the database meanwhile.
        student = (await create_student(a))["studentId"]
        body = await a.post(
            GRADE_ADD,
            {"input": {"studentId": student, "subject": "Math", "score": 2.0}},
        )
        assert body["data"]["gradeAdd"]["__typename"] == "GradeAddSuccess"
        own = a.app.state.monitor.registry.operations_total
        assert (await metrics(a))["requestsTotal"] == own
        # The other worker stops merging this one (no samples for 3 ticks).
        await until(merging(b, 1))
        unreachable = [m for m in warnings.messages if "Redis unreachable" in m]

        await proxy.start()
        healed_after = await until(merging(a, 2))
        await until(merging(b, 2))

        assert healed_after <= 5.0
        assert len(unreachable) == 1, warnings.messages
        healed = [m for m in warnings.messages if m.startswith("Redis answers again")]
        assert len(healed) == 1, warnings.messages
    finally:
        logger.removeHandler(warnings)
        await proxy.stop()


async def test_grade_writes_publish_with_no_local_subscriber(
    make_api, scratch_url, redis_url, redis_prefix
):
    a, b = await pair(make_api, scratch_url, redis_url, redis_prefix)
    student = (await create_student(b))["studentId"]
    assert b.app.state.monitor.bus.subscribers(live.GRADES) == 0

    async with subscribed(a, GRADE_EVENTS, live.GRADES) as on_a:
        await b.post(
            """mutation Add($input: [GradeAddInput!]!) {
                 gradesAdd(input: $input) { __typename } }""",
            {
                "input": [
                    {"studentId": student, "subject": "Math", "score": 3.0},
                    {"studentId": student, "subject": "Art", "score": 4.0},
                ]
            },
        )
        (event,) = await events(on_a, 1)

    grades = event["gradeEvents"]["grades"]
    assert [(g["subject"], g["score"]) for g in grades] == [
        ("Math", 3.0),
        ("Art", 4.0),
    ]
    assert json.dumps(event).count(student) == 3


async def test_a_large_write_crosses_workers_whole(
    make_api, scratch_url, redis_url, redis_prefix
):
    a, b = await pair(make_api, scratch_url, redis_url, redis_prefix)
    students = [(await create_student(b))["studentId"] for _ in range(10)]
    rows = [
        {
            "studentId": student,
            "subject": f"Subject {number}",
            "score": number / 4,
            "recordedAt": f"2025-10-01T09:{number // 60:02d}:{number % 60:02d}Z",
        }
        for student in students
        for number in range(200)
    ]

    async with (
        subscribed(a, GRADE_EVENTS, live.GRADES) as on_a,
        subscribed(b, GRADE_EVENTS, live.GRADES) as on_b,
    ):
        body = await b.post(
            """mutation Add($input: [GradeAddInput!]!) {
                 gradesAdd(input: $input) { ... on GradesAddSuccess { inserted } } }""",
            {"input": rows},
        )
        assert body["data"]["gradesAdd"] == {"inserted": 2000}
        # Well past the size decoded off the event loop (about 100 KB).
        here = await events(on_b, 10)
        there = await events(on_a, 10)

    assert there == here
    assert [e["gradeEvents"]["studentId"] for e in there] == students
    assert [(g["subject"], g["score"]) for g in there[3]["gradeEvents"]["grades"]] == [
        (f"Subject {number}", number / 4) for number in range(200)
    ]
