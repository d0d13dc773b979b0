"""Roles on subscriptions: grade events per viewer, monitoring for operators."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest

from monitoring.monitor import ALERTS, COSTS, METRICS
from resolvers import live
from resolvers.viewer import Viewer
from tests.factories.roles import (
    ADMIN,
    GRADE_ADD,
    GRADES_ADD,
    ME,
    TEACHER,
    grade_row,
    refusal,
    run,
    subscribe,
)

# --- subscriptions ------------------------------------------------------------------

GRADE_EVENTS = """
subscription($studentId: String, $gradeLevel: Int) {
  gradeEvents(studentId: $studentId, gradeLevel: $gradeLevel) {
    studentId gradeLevel grades { studentId score }
  }
}
"""


async def test_grade_events_reach_each_viewer_filtered(
    api: Any, school: dict[str, str]
) -> None:
    bus = api.app.state.monitor.bus
    streams = {
        viewer.role: await subscribe(api, viewer, GRADE_EVENTS, **variables)
        for viewer, variables in (
            (ADMIN, {}),
            (TEACHER, {}),
            (ME, {"gradeLevel": 6}),  # a student may name their own level
        )
    }
    received: dict[str, list[tuple[str, float]]] = {role: [] for role in streams}

    async def read(role: str, count: int) -> None:
        for _ in range(count):
            result = await anext(streams[role])
            assert result.errors is None
            event = result.data["gradeEvents"]
            received[role] += [(g["studentId"], g["score"]) for g in event["grades"]]

    expected = {
        "admin": [("AWAY", 10.0), ("PEER", 20.0), ("MINE", 30.0), ("MINE", 40.0)],
        "teacher": [("PEER", 20.0), ("MINE", 30.0), ("MINE", 40.0)],
        "student": [("MINE", 30.0), ("MINE", 40.0)],
    }
    readers = [
        asyncio.ensure_future(read(role, len(events)))
        for role, events in expected.items()
    ]
    deadline = time.monotonic() + 5
    while bus.subscribers(live.GRADES) < 3:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)

    batch, _ = await run(
        api,
        ADMIN,
        GRADES_ADD,
        input=[
            grade_row("AWAY", 10.0),
            grade_row("PEER", 20.0),
            grade_row("MINE", 30.0),
        ],
    )
    # The last write reaches everyone: what came before it is all they were sent.
    last, _ = await run(api, ADMIN, GRADE_ADD, id="MINE", score=40.0)
    await asyncio.wait_for(asyncio.gather(*readers), 10)

    assert batch == {"gradesAdd": {"__typename": "GradesAddSuccess"}}
    assert last == {"gradeAdd": {"__typename": "GradeAddSuccess"}}
    assert received == expected
    for stream in streams.values():
        await stream.aclose()


@pytest.mark.parametrize(
    ("viewer", "variables"),
    [
        (ME, {"studentId": "PEER"}),
        (ME, {"studentId": "NOBODY"}),
        (ME, {"gradeLevel": 1}),  # MINE is in level 6
        (ME, {"studentId": "MINE", "gradeLevel": 1}),
        (TEACHER, {"gradeLevel": 1}),
        (TEACHER, {"studentId": "AWAY"}),
    ],
)
async def test_grade_events_for_someone_else_are_refused_up_front(
    api: Any, school: dict[str, str], viewer: Viewer, variables: dict[str, Any]
) -> None:
    result = await subscribe(api, viewer, GRADE_EVENTS, **variables)

    assert await refusal(result) == [(("gradeEvents",), "FORBIDDEN")]
    assert api.app.state.monitor.registry.active_subscriptions == 0


@pytest.mark.parametrize(
    ("document", "topic"),
    [
        ("subscription { metrics { environment } }", METRICS),
        ("subscription { alerts { rule } }", ALERTS),
        ("subscription { costs { apiRequests } }", COSTS),
    ],
)
async def test_monitoring_subscriptions_are_for_operators(
    api: Any, document: str, topic: str
) -> None:
    field = document.split()[2]
    bus = api.app.state.monitor.bus
    before = bus.subscribers(topic)  # the worker's own alert history reads alerts

    refused = await refusal(await subscribe(api, ME, document))
    stream = await subscribe(api, TEACHER, document)
    reading = asyncio.ensure_future(anext(stream))
    deadline = time.monotonic() + 5
    while bus.subscribers(topic) == before:  # the teacher's stream started
        assert time.monotonic() < deadline and not reading.done()
        await asyncio.sleep(0.01)
    reading.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reading
    await stream.aclose()
    assert bus.subscribers(topic) == before

    assert refused == [((field,), "FORBIDDEN")]


async def test_one_caller_cannot_take_every_subscription_slot(
    make_api: Any, scratch_url: str
) -> None:
    """MAX_SUBSCRIPTIONS_PER_IDENTITY counts a caller's subscriptions over all its
    connections (each stream here has a context, so a connection, of its own)."""
    api = await make_api(scratch_url, max_subscriptions_per_identity=2)
    registry = api.app.state.monitor.registry
    held = [await subscribe(api, ME, GRADE_EVENTS) for _ in range(2)]
    reading = [asyncio.ensure_future(anext(stream)) for stream in held]
    deadline = time.monotonic() + 5
    while registry.active_subscriptions < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)

    third = await asyncio.wait_for(anext(await subscribe(api, ME, GRADE_EVENTS)), 5)
    other = await subscribe(api, TEACHER, GRADE_EVENTS)  # another caller
    other_reading = asyncio.ensure_future(anext(other))
    while registry.active_subscriptions < 3:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    for task in (*reading, other_reading):
        task.cancel()
    await asyncio.gather(*reading, other_reading, return_exceptions=True)
    for stream in (*held, other):
        await stream.aclose()
    again = await subscribe(api, ME, GRADE_EVENTS)  # the slots came back
    again_reading = asyncio.ensure_future(anext(again))
    while registry.active_subscriptions < 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    again_reading.cancel()
    await asyncio.gather(again_reading, return_exceptions=True)
    await again.aclose()

    assert third.data is None
    [error] = third.errors or []
    assert error.message == "at most 2 subscriptions per caller on a server"
    assert (error.extensions or {})["code"] == "TOO_MANY_SUBSCRIPTIONS"
