"""Subscriptions against a live server (uvicorn in a subprocess on 127.0.0.1, sampler at
100 ms): gql's WebSocket transport over both protocols, and a raw websockets client
for the protocol's edges. The resolvers' queues are also tested in process."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from gql import GraphQLRequest, gql
from gql.transport.exceptions import TransportQueryError
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect

from monitoring.bus import EventBus
from monitoring.monitor import ALERTS, METRICS
from monitoring.registry import Registry
from monitoring.snapshot import AlertEvent, AlertState
from resolvers import live
from resolvers.context import Connection, Context, Limits, Services
from resolvers.errors import ClientError
from tests.conftest import make_settings
from tests.factories import (
    GRADE_EVENTS,
    LEGACY_WS,
    LIVE_PER_CONNECTION,
    LIVE_PER_SERVER,
    METRICS_QUERY,
    METRICS_SUBSCRIPTION,
    PROTOCOLS,
    TRANSPORT_WS,
    Server,
    collect,
    create_student,
    frames_until_closed,
    live_server,
    serve_in_process,
    subscribe_frame,
    wait_until,
    ws_client,
)

PER_CONNECTION = LIVE_PER_CONNECTION
PER_SERVER = LIVE_PER_SERVER

COSTS_SUBSCRIPTION = gql(
    """
    subscription Costs($intervalMs: Int!) {
      costs(intervalMs: $intervalMs) {
        totalCost apiRequests currentPeriod { timestamp environment totalCost }
      }
    }
    """
)
ALERTS_SUBSCRIPTION = gql(
    "subscription Alerts { alerts { rule state message values threshold at } }"
)
GRADES_ADD = gql(
    """
    mutation Add($input: [GradeAddInput!]!) {
      gradesAdd(input: $input) { __typename ... on GradesAddSuccess { inserted } }
    }
    """
)
GRADES_ADD_TEXT = """
    mutation Add($input: [GradeAddInput!]!) {
      gradesAdd(input: $input) { __typename }
    }
"""
GRADE_UPDATE = """
    mutation Update($id: ID!, $score: Float!) {
      gradeUpdate(id: $id, input: {score: $score}) { __typename }
    }
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with live_server(tmp_path_factory.mktemp("subscriptions")) as live:
        yield live


@pytest.fixture(scope="module")
def alerting_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Every operation is slower than 0 ms: 3 requests fire high_response_time."""
    with live_server(
        tmp_path_factory.mktemp("alerting"),
        ALERT_RESPONSE_TIME_MS="0",
        ALERT_MEMORY_MB="100000",  # only the rule under test may fire
    ) as live:
        yield live


@pytest.fixture
async def tasks() -> AsyncIterator[list[asyncio.Task[Any]]]:
    running: list[asyncio.Task[Any]] = []
    yield running
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- metrics, costs, alerts ---------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_metrics_arrive_once_per_interval(server: Server, protocol: str) -> None:
    received = []

    async def three_events() -> None:
        async with ws_client(server, protocol) as session:
            request = GraphQLRequest(
                METRICS_SUBSCRIPTION, variable_values={"intervalMs": 1000}
            )
            stream = session.subscribe(request, get_execution_result=True)
            async for result in stream:
                received.append(result)
                if len(received) == 3:
                    break

    await asyncio.wait_for(three_events(), 20)

    times = [_at(r.data["metrics"]["at"]) for r in received]
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    # Never early; late by up to a second on a busy 2-core CI.
    assert all(0.9 <= gap <= 2.0 for gap in gaps), gaps
    assert all(r.data["metrics"]["activeSubscriptions"] >= 1 for r in received)
    # Subscription events are not API requests: nothing is charged for them.
    assert {r.extensions["cost"]["apiRequests"] for r in received} == {0}


@pytest.mark.parametrize(
    ("document", "interval"),
    [
        (METRICS_SUBSCRIPTION, 999),
        (METRICS_SUBSCRIPTION, 60_001),
        (COSTS_SUBSCRIPTION, 0),
    ],
)
async def test_interval_out_of_range_is_bad_user_input(
    server: Server, document: Any, interval: int
) -> None:
    async with ws_client(server) as session:
        request = GraphQLRequest(document, variable_values={"intervalMs": interval})
        with pytest.raises(TransportQueryError) as caught:
            async for _ in session.subscribe(request):
                pass

    assert caught.value.errors is not None
    [error] = caught.value.errors
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "intervalMs must be between 1000 and 60000" in error["message"]


async def test_costs_stream_running_totals(server: Server) -> None:
    async with ws_client(server, LEGACY_WS) as session:
        request = GraphQLRequest(
            COSTS_SUBSCRIPTION, variable_values={"intervalMs": 1000}
        )
        stream = session.subscribe(request)
        first = (await asyncio.wait_for(anext(stream), 10))["costs"]
        for _ in range(3):
            await asyncio.to_thread(server.post, "{ __typename }")
        later = first
        deadline = time.monotonic() + 15
        while later["apiRequests"] < first["apiRequests"] + 3:
            assert time.monotonic() < deadline, (first, later)
            later = (await asyncio.wait_for(anext(stream), 10))["costs"]
        await stream.aclose()

    # The three requests, and nothing else, are added to the running totals.
    assert later["apiRequests"] == first["apiRequests"] + 3
    assert later["totalCost"] > first["totalCost"]
    for costs in (first, later):
        assert costs["currentPeriod"]["environment"] == "development"


async def test_forced_alert_arrives_with_the_alert_log_text(
    alerting_server: Server, tasks: list[asyncio.Task[Any]]
) -> None:
    events: list[Any] = []
    tasks.append(
        asyncio.create_task(
            collect(alerting_server, TRANSPORT_WS, ALERTS_SUBSCRIPTION, events)
        )
    )
    await wait_until(lambda: alerting_server.prometheus_active() == 1)

    for _ in range(3):
        alerting_server.post("{ __typename }")
    await wait_until(lambda: len(events) >= 1)

    alert = events[0]["alerts"]
    assert (alert["rule"], alert["state"], alert["threshold"]) == (
        "high_response_time",
        "FIRING",
        0,
    )
    assert alert["message"].startswith("High response time: [")
    assert alert["message"].endswith("ms (threshold: 0ms)")
    log_lines = (alerting_server.workdir / "alert.log").read_text().splitlines()
    assert any(line.endswith(f" - ALERT: {alert['message']}") for line in log_lines)


# --- grade events -------------------------------------------------------------------


async def test_grade_writes_reach_other_connections_filtered(
    server: Server, tasks: list[asyncio.Task[Any]]
) -> None:
    await create_student(server, studentId="LIVE-1", gradeLevel=9)
    await create_student(server, studentId="LIVE-2", gradeLevel=10)
    await wait_until(lambda: server.active_subscriptions() == 0)
    first: list[Any] = []  # studentId LIVE-1, over the legacy protocol
    second: list[Any] = []  # studentId LIVE-2
    level_nine: list[Any] = []  # gradeLevel 9
    tasks += [
        asyncio.create_task(
            collect(server, LEGACY_WS, GRADE_EVENTS, first, studentId="LIVE-1")
        ),
        asyncio.create_task(
            collect(server, TRANSPORT_WS, GRADE_EVENTS, second, studentId="LIVE-2")
        ),
        asyncio.create_task(
            collect(server, TRANSPORT_WS, GRADE_EVENTS, level_nine, gradeLevel=9)
        ),
    ]
    await wait_until(lambda: server.active_subscriptions() == 3)

    # A batch on another connection: one event per student, carrying its new grades.
    async with ws_client(server) as writer:
        rows = [
            {"studentId": "LIVE-1", "subject": "Math", "score": 71.0},
            {"studentId": "LIVE-1", "subject": "Art", "score": 88.5},
        ]
        added = await writer.execute(
            GraphQLRequest(GRADES_ADD, variable_values={"input": rows})
        )
    assert added["gradesAdd"] == {"__typename": "GradesAddSuccess", "inserted": 2}
    await wait_until(lambda: len(first) == 1 and len(level_nine) == 1)
    event = first[0]["gradeEvents"]
    assert (event["studentId"], event["gradeLevel"]) == ("LIVE-1", 9)
    assert [(g["studentId"], g["subject"], g["score"]) for g in event["grades"]] == [
        ("LIVE-1", "Math", 71.0),
        ("LIVE-1", "Art", 88.5),
    ]
    assert level_nine[0] == first[0]

    # A single add for the other student, over HTTP.
    body = server.post(
        """mutation { gradeAdd(input: {studentId: "LIVE-2", subject: "Math", score: 64})
             { __typename } }"""
    )
    assert body["data"]["gradeAdd"]["__typename"] == "GradeAddSuccess"
    await wait_until(lambda: len(second) == 1)
    assert second[0]["gradeEvents"]["studentId"] == "LIVE-2"
    assert [g["score"] for g in second[0]["gradeEvents"]["grades"]] == [64.0]

    # An update: the changed grade as it is now.
    grade_id = event["grades"][0]["id"]
    body = server.post(GRADE_UPDATE, {"id": grade_id, "score": 75.5})
    assert body["data"]["gradeUpdate"]["__typename"] == "GradeUpdateSuccess"
    await wait_until(lambda: len(first) == 2 and len(level_nine) == 2)
    assert first[1]["gradeEvents"]["grades"] == [
        {"id": grade_id, "studentId": "LIVE-1", "subject": "Math", "score": 75.5}
    ]

    await asyncio.sleep(0.3)  # nothing else is on its way
    assert (len(first), len(second), len(level_nine)) == (2, 1, 2)


# --- limits and counting ------------------------------------------------------------


async def test_limits_give_too_many_subscriptions_and_counts_return_to_zero(
    server: Server, tasks: list[asyncio.Task[Any]]
) -> None:
    await wait_until(lambda: server.active_subscriptions() == 0)
    request = GraphQLRequest(
        METRICS_SUBSCRIPTION, variable_values={"intervalMs": 60_000}
    )

    async def hold(session: Any) -> None:
        async for _ in session.subscribe(request):
            pass

    async def refused(session: Any) -> dict[str, Any]:
        with pytest.raises(TransportQueryError) as caught:
            await asyncio.wait_for(hold(session), 10)  # refused at once, not held
        assert caught.value.errors is not None
        [error] = caught.value.errors
        return dict(error)

    async with (
        ws_client(server, TRANSPORT_WS) as one,
        ws_client(server, LEGACY_WS) as two,
    ):
        tasks += [asyncio.create_task(hold(one)) for _ in range(PER_CONNECTION)]
        await wait_until(lambda: server.active_subscriptions() == PER_CONNECTION)

        error = await refused(one)
        assert error["extensions"]["code"] == "TOO_MANY_SUBSCRIPTIONS"
        assert "per connection" in error["message"]

        more = PER_SERVER - PER_CONNECTION
        tasks += [asyncio.create_task(hold(two)) for _ in range(more)]
        await wait_until(lambda: server.active_subscriptions() == PER_SERVER)
        error = await refused(two)
        assert error["extensions"]["code"] == "TOO_MANY_SUBSCRIPTIONS"
        assert "the server" in error["message"]
        assert server.active_subscriptions() == PER_SERVER

        for task in tasks[:PER_CONNECTION]:  # complete the first connection's three
            task.cancel()
        await wait_until(lambda: server.active_subscriptions() == more)
    await wait_until(lambda: server.active_subscriptions() == 0)


# --- protocol edges, with a raw client ----------------------------------------------


async def _init(ws: ClientConnection) -> None:
    await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
    ack = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert ack["type"] == "connection_ack"


async def test_no_connection_init_closes_after_three_seconds(server: Server) -> None:
    async def silent(protocol: str) -> tuple[int | None, float]:
        started = time.monotonic()
        async with connect(server.ws_url, subprotocols=[protocol]) as ws:
            await frames_until_closed(ws)
            return ws.close_code, time.monotonic() - started

    results = await asyncio.gather(*(silent(protocol) for protocol in PROTOCOLS))

    for code, elapsed in results:
        assert code == 4408
        assert 2.8 <= elapsed <= 4.5, elapsed


async def test_duplicate_operation_id_closes_with_4409(server: Server) -> None:
    async with connect(server.ws_url, subprotocols=[TRANSPORT_WS]) as ws:
        await _init(ws)
        await ws.send(subscribe_frame(TRANSPORT_WS, "1", METRICS_QUERY))
        await ws.send(subscribe_frame(TRANSPORT_WS, "1", METRICS_QUERY))
        await frames_until_closed(ws)
    assert ws.close_code == 4409


async def test_subscribe_before_ack_closes_with_4401(server: Server) -> None:
    for protocol in PROTOCOLS:
        async with connect(server.ws_url, subprotocols=[protocol]) as ws:
            await ws.send(subscribe_frame(protocol, "1", METRICS_QUERY))
            await frames_until_closed(ws)
        assert ws.close_code == 4401, protocol


async def test_ping_is_answered_with_pong_in_text_frames(server: Server) -> None:
    async with connect(server.ws_url, subprotocols=[TRANSPORT_WS]) as ws:
        await _init(ws)
        await ws.send(json.dumps({"type": "ping"}))
        pong = await asyncio.wait_for(ws.recv(), 5)
    assert isinstance(pong, str)
    assert json.loads(pong) == {"type": "pong"}


async def test_legacy_protocol_refuses_a_duplicate_id_and_sends_keep_alives(
    server: Server,
) -> None:
    async with connect(server.ws_url, subprotocols=[LEGACY_WS]) as ws:
        await _init(ws)
        await ws.send(subscribe_frame(LEGACY_WS, "1", METRICS_QUERY))
        await ws.send(subscribe_frame(LEGACY_WS, "1", METRICS_QUERY))
        frames: list[dict[str, Any]] = []
        while not any(f["type"] == "data" for f in frames[1:]) or len(frames) < 3:
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))

    assert frames[0] == {"type": "ka"}
    errors = [f for f in frames if f["type"] == "error"]
    assert len(errors) == 1
    assert errors[0]["id"] == "1"
    assert errors[0]["payload"]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "already running" in errors[0]["payload"]["message"]
    # The first operation goes on.
    assert any(f["type"] == "data" and f["id"] == "1" for f in frames)


# --- in process: keep-alives and a client behind on alerts ---------------------------


@pytest.fixture
async def inprocess(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Server, Starlette]]:
    """The app under uvicorn in this process, keep-alives every 0.3 s, not 15 s."""
    import app as app_module
    from server import websocket as server_websocket

    monkeypatch.setattr(server_websocket, "KEEP_ALIVE_S", 0.3)
    url = f"sqlite+aiosqlite:///{tmp_path / 'inprocess.db'}"
    application = app_module.create_app(make_settings(url, sample_interval_ms=100))
    async with serve_in_process(application) as port:
        yield Server(port, tmp_path), application


async def test_keep_alive_pings_and_ka_messages(
    inprocess: tuple[Server, Starlette],
) -> None:
    server, _ = inprocess
    async with connect(server.ws_url, subprotocols=[TRANSPORT_WS]) as ws:
        await _init(ws)
        acked = time.monotonic()
        pings = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2)]
        elapsed = time.monotonic() - acked
        await ws.send(json.dumps({"type": "pong"}))
    assert pings == [{"type": "ping"}, {"type": "ping"}]
    # Two intervals of 0.3 s, never sooner; late by up to 2 s on a busy 2-core CI.
    assert 0.55 <= elapsed <= 2.6, elapsed

    async with connect(server.ws_url, subprotocols=[LEGACY_WS]) as ws:
        await _init(ws)
        kas = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2)]
    assert kas == [{"type": "ka"}, {"type": "ka"}]


@pytest.mark.parametrize(
    ("query", "topic", "item", "reason"),
    [
        (
            "subscription { alerts { message } }",
            ALERTS,
            lambda n: _alert(f"alert {n}"),
            "fell behind on alerts",
        ),
        (
            "subscription { gradeEvents { studentId } }",
            live.GRADES,
            lambda n: (),  # a write with no event: the client is behind all the same
            "fell behind on grade events",
        ),
    ],
    ids=["alerts", "gradeEvents"],
)
async def test_a_client_too_far_behind_is_closed_with_1013(
    inprocess: tuple[Server, Starlette], query: str, topic: str, item: Any, reason: str
) -> None:
    server, application = inprocess
    monitor = application.state.monitor
    # The worker's own alert history reads the alerts topic too.
    before = monitor.bus.subscribers(topic)
    async with connect(server.ws_url, subprotocols=[TRANSPORT_WS]) as ws:
        await _init(ws)
        await ws.send(subscribe_frame(TRANSPORT_WS, "1", query))
        await wait_until(lambda: monitor.bus.subscribers(topic) == before + 1)
        # More items at once than the client's queue holds, before it can send any.
        for number in range(live.BACKLOG + 1):
            monitor.bus.publish(topic, item(number))
        frames = await frames_until_closed(ws)

    assert (ws.close_code, ws.close_reason) == (1013, reason)
    assert frames == []
    await wait_until(lambda: monitor.registry.active_subscriptions == 0)


def _alert(message: str) -> AlertEvent:
    return AlertEvent(
        rule="high_memory",
        state=AlertState.FIRING,
        message=message,
        values=(1.0,),
        threshold=0.0,
        at=datetime.now(UTC),
    )


# --- queues, in process -------------------------------------------------------------


def _context(bus: EventBus, registry: Registry, closed: list[Any]) -> Context:
    async def close(code: int, reason: str) -> None:
        closed.append((code, reason))

    monitor = SimpleNamespace(bus=bus, registry=registry, interval_s=0.1)
    # Only the bus, the registry and the limits are reached by the feed's queues.
    services = Services(
        database=None,  # type: ignore[arg-type]  # not reached
        cache=None,  # type: ignore[arg-type]  # not reached
        limits=Limits(),
        monitor=monitor,  # type: ignore[arg-type]  # the two parts the feed reads
    )
    return Context(
        services=services,
        loaders=None,  # type: ignore[arg-type]  # not reached
        over_http=False,
        connection=Connection(close=close),
    )


async def test_a_client_behind_on_alerts_is_closed_with_1013() -> None:
    bus, registry, closed = EventBus(), Registry(), []
    stream = live.alerts(_context(bus, registry, closed))
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)  # the stream subscribes
    bus.publish(ALERTS, "alert 0")
    assert await asyncio.wait_for(first, 5) == "alert 0"
    assert registry.active_subscriptions == 1

    for number in range(1, live.BACKLOG + 2):  # the client reads none of these
        bus.publish(ALERTS, f"alert {number}")
    with pytest.raises(ClientError) as caught:
        await asyncio.wait_for(anext(stream), 5)

    assert closed == [(1013, "fell behind on alerts")]
    assert caught.value.code == "SUBSCRIBER_TOO_SLOW"
    assert registry.active_subscriptions == 0
    assert bus.subscribers(ALERTS) == 0


async def test_a_slow_metrics_client_gets_the_newest_snapshot_each_interval() -> None:
    bus, registry, closed = EventBus(), Registry(), []
    stream = live.metrics(_context(bus, registry, closed), interval_ms=1000)
    start = datetime(2026, 1, 1, tzinfo=UTC)

    def tick(n: int) -> SimpleNamespace:
        snapshot = SimpleNamespace(at=start + timedelta(milliseconds=100 * n), n=n)
        bus.publish(METRICS, snapshot)
        return snapshot

    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    tick(0)
    assert (await asyncio.wait_for(first, 5)).n == 0
    for n in range(1, 25):  # 2.4 s of ticks while the client is busy
        tick(n)
    # Older ones were dropped, not queued.
    assert (await asyncio.wait_for(anext(stream), 5)).n == 24
    following = asyncio.ensure_future(anext(stream))
    for n in range(25, 35):  # due at tick 34 (1 s after 24)
        tick(n)
        await asyncio.sleep(0)
    assert (await asyncio.wait_for(following, 5)).n == 34
    await stream.aclose()
    assert registry.active_subscriptions == 0
    assert closed == []


async def test_grade_writes_publish_the_stored_rows_once_committed(api: Any) -> None:
    """In process, on each backend: the bus item of a write carries the rows as
    stored (ids included), one event per student; a refused batch publishes nothing."""
    for student_id, level in (("PUB-1", 4), ("PUB-2", 5)):
        await create_student(api, studentId=student_id, gradeLevel=level)
    queue = api.app.state.monitor.bus.subscribe(live.GRADES, 16)
    rows = [
        {"studentId": "PUB-1", "subject": "Math", "score": 90.0},
        {"studentId": "PUB-2", "subject": "Math", "score": 40.0},
        {"studentId": "PUB-1", "subject": "Art", "score": 70.0},
    ]

    body = await api.post(GRADES_ADD_TEXT, {"input": rows})
    refused = await api.post(
        GRADES_ADD_TEXT, {"input": [{**rows[0], "studentId": "NOBODY"}]}
    )

    assert body["data"]["gradesAdd"]["__typename"] == "GradesAddSuccess"
    assert refused["data"]["gradesAdd"]["__typename"] == "InvalidRowsError"
    write = await asyncio.wait_for(queue.get(), 5)
    marker = (live.GradeEvent("MARK", 0, ()),)
    api.app.state.monitor.bus.publish(live.GRADES, marker)
    # The refused batch published nothing.
    assert await asyncio.wait_for(queue.get(), 5) == marker
    assert [(e.student_id, e.grade_level, len(e.grades)) for e in write] == [
        ("PUB-1", 4, 2),
        ("PUB-2", 5, 1),
    ]
    stored = await api.post(
        '{ grades(studentId: "PUB-1") { edges { node { gradeId } } } }'
    )
    ids = [edge["node"]["gradeId"] for edge in stored["data"]["grades"]["edges"]]
    assert sorted(grade.id for grade in write[0].grades) == sorted(ids)
    assert [(g.subject, g.score) for g in write[0].grades] == [
        ("Math", 90.0),
        ("Art", 70.0),
    ]
    queue.close()
