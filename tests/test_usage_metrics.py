"""Usage metrics on /metrics (issue 14): an operation counts each field its document
selects once, whatever the number of objects, on every path (the compiled plans,
the general executor, WebSocket operations, the shared subscription fan-out); the
subscription series exist from the start at 0 and follow real subscriptions
(active, events sent, events dropped and why, the fan-out time)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from graphql import GraphQLInterfaceType, GraphQLObjectType, OperationType
from prometheus_client.parser import text_string_to_metric_families

from db.seed import seed
from monitoring.monitor import ALERTS
from monitoring.monitor import METRICS as METRICS_TOPIC
from monitoring.snapshot import AlertEvent, AlertState
from resolvers.live import BACKLOG
from server.gate import graphql_schema
from tests.asgi_ws import AsgiWebSocket
from tests.factories import add_grade, create_student, ws_init, ws_start
from tests.factories.plans import APP_SETTINGS, VIEWERS, fallbacks
from tests.factories.roles import schema_of

pytestmark = pytest.mark.timeout(60)
WAIT_S = 5.0

NAMES = "{ students(first: 20) { edges { node { name } } } }"
NAMES_USED = {
    ("Query", "students"),
    ("StudentConnection", "edges"),
    ("StudentEdge", "node"),
    ("Student", "name"),
}
METRICS = "subscription { metrics(intervalMs: 1000) { at requestsTotal } }"
ALERTS_DOC = "subscription { alerts { rule message } }"
SUBSCRIPTION_FIELDS = {"alerts", "costs", "gradeEvents", "importProgress", "metrics"}
REASONS = {"overflow", "slow_client_closed", "superseded"}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(api: Any) -> Samples:
    response = await api.http.get("/metrics")
    assert response.status_code == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def series(samples: Samples, name: str) -> dict[tuple[str, ...], float]:
    """The samples of one series name, by their label values (sorted by name)."""
    return {
        tuple(value for _, value in labels): sample
        for (found, labels), sample in samples.items()
        if found == name
    }


def used(samples: Samples, name: str = "graphql_field_usage_total") -> dict:
    """(type, field) -> count of the fields used at least once."""
    return {
        (labels["type"], labels["field"]): value
        for (found, pairs), value in samples.items()
        if found == name and value
        for labels in [dict(pairs)]
    }


async def until(check: Any, timeout: float = WAIT_S) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def signals_of(api: Any) -> Any:
    return api.app.state.monitor.registry.subscriptions


def fanout_count(samples: Samples) -> float:
    return samples[("graphql_subscription_fanout_seconds_count", ())]


class Subscriber:
    """One connection with one operation ("1")."""

    def __init__(self, app: Any) -> None:
        self.ws = AsgiWebSocket(app)

    async def start(self, query: str) -> Subscriber:
        await self.ws.__aenter__()
        await ws_init(self.ws)
        await ws_start(self.ws, "1", query)
        return self

    async def stop(self) -> None:
        await self.ws.__aexit__(None, None, None)


# --- field usage ---------------------------------------------------------------------


@pytest.mark.parametrize("plans", [True, False], ids=["planned", "general"])
async def test_a_field_counts_once_per_operation_not_per_object(
    make_api: Any, scratch_url: str, plans: bool
) -> None:
    api = await make_api(scratch_url, query_plans=plans)
    await seed(api.services.database, students=20, grades_per_student=1, seed=7)
    assert used(await scrape(api)) == {}

    body = await api.post(NAMES)

    assert len(body["data"]["students"]["edges"]) == 20
    samples = await scrape(api)
    assert used(samples) == dict.fromkeys(NAMES_USED, 1)
    # The path it took: the compiled plan (no fallback), or graphql-core's executor.
    assert (api.app.state.schema.pipeline is not None) is plans
    assert series(samples, "graphql_plan_fallbacks_total") == {}

    await api.post(NAMES)

    assert used(await scrape(api)) == dict.fromkeys(NAMES_USED, 2)


async def test_a_planned_operation_the_general_path_takes_over_counts_once(
    make_api: Any, seeded_url: str
) -> None:
    api = await make_api(seeded_url, **APP_SETTINGS)
    query = '{ student(studentId: "S00001") { name grades { subject score } } }'

    response = await api.http.post(
        "/graphql", json={"query": query}, headers=VIEWERS["student"]
    )

    assert response.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert await fallbacks(api) == {"runtime": 1}  # planned, then handed over
    assert used(await scrape(api)) == {
        ("Query", "student"): 1,
        ("Student", "name"): 1,
        ("Student", "grades"): 1,
        ("Grade", "subject"): 1,
        ("Grade", "score"): 1,
    }


async def test_every_field_of_the_schema_has_a_series_from_the_start(api: Any) -> None:
    samples = await scrape(api)
    core = graphql_schema(schema_of(api))
    expected = {
        (name, field)
        for name, named in core.type_map.items()
        if not name.startswith("__")
        and isinstance(named, GraphQLObjectType | GraphQLInterfaceType)
        for field in named.fields
    }
    found = series(samples, "graphql_field_usage_total")
    assert {(t, f) for f, t in found if "(" not in f} == expected
    assert set(found.values()) == {0.0}


async def test_fields_in_fragments_count_once_and_introspection_not_at_all(
    api: Any,
) -> None:
    body = await api.post(
        """
        query Two {
          a: students(first: 1) { edges { node { ...Named __typename } } }
          b: students(first: 2) { totalCount edges { node { name } } }
          __schema { queryType { name } }
        }
        fragment Named on Student { name studentId }
        """
    )

    assert "errors" not in body, body
    assert used(await scrape(api)) == {
        ("Query", "students"): 1,
        ("StudentConnection", "edges"): 1,
        ("StudentConnection", "totalCount"): 1,
        ("StudentEdge", "node"): 1,
        ("Student", "name"): 1,
        ("Student", "studentId"): 1,
    }


async def test_a_refused_operation_counts_nothing(api: Any) -> None:
    body = await api.post("{ students(first: 20) { edges { node { nope } } } }")

    assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert used(await scrape(api)) == {}


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_a_query_over_websocket_counts_once(api: Any, protocol: str) -> None:
    async with AsgiWebSocket(api.app, subprotocol=protocol) as ws:
        await ws_init(ws)
        await ws_start(
            ws,
            "1",
            "{ students(first: 1) { totalCount } }",
            legacy=protocol != "graphql-transport-ws",
        )
        message = await ws.receive_json()
        assert message["type"] in ("next", "data"), message
        assert message["payload"]["data"] == {"students": {"totalCount": 0}}

    assert used(await scrape(api)) == {
        ("Query", "students"): 1,
        ("StudentConnection", "totalCount"): 1,
    }


# --- subscriptions -------------------------------------------------------------------


async def test_subscription_series_exist_from_the_start_at_zero(api: Any) -> None:
    core = graphql_schema(schema_of(api))
    assert core.get_root_type(OperationType.SUBSCRIPTION) is not None
    assert set(core.get_root_type(OperationType.SUBSCRIPTION).fields) == (
        SUBSCRIPTION_FIELDS
    )

    samples = await scrape(api)

    active = series(samples, "graphql_subscriptions_active")
    assert active == {(field,): 0.0 for field in SUBSCRIPTION_FIELDS}
    events = series(samples, "graphql_subscription_events_total")
    assert events == {(field,): 0.0 for field in SUBSCRIPTION_FIELDS}
    dropped = series(samples, "graphql_subscription_dropped_total")
    assert dropped == {
        (field, reason): 0.0 for field in SUBSCRIPTION_FIELDS for reason in REASONS
    }
    assert fanout_count(samples) == 0


@pytest.mark.parametrize("plans", [True, False], ids=["shared", "general"])
async def test_metrics_subscribers_move_active_events_and_the_fanout_time(
    make_api: Any, scratch_url: str, plans: bool
) -> None:
    """Two subscribers of one document: in one fan-out group (the shared path) or
    each on its own (the general path)."""
    api = await make_api(scratch_url, query_plans=plans)
    monitor = api.app.state.monitor
    signals = signals_of(api)
    subscribers = [await Subscriber(api.app).start(METRICS) for _ in range(2)]
    await until(lambda: signals.active["metrics"] == 2)
    # Their queues on the bus: the group's one, or one each.
    await until(lambda: monitor.bus.subscribers(METRICS_TOPIC) == (1 if plans else 2))
    assert series(await scrape(api), "graphql_subscriptions_active")[("metrics",)] == 2

    for tick in range(1, 4):
        monitor.tick()
        for subscriber in subscribers:
            message = await subscriber.ws.receive_json()
            assert message["type"] == "next", message
        await until(lambda: signals.events["metrics"] == 2 * tick)  # noqa: B023

    samples = await scrape(api)
    assert series(samples, "graphql_subscription_events_total")[("metrics",)] == 6
    # Three ticks: one group observed once per tick, or two subscribers each.
    assert fanout_count(samples) == (3 if plans else 6)
    assert samples[("graphql_subscription_fanout_seconds_sum", ())] > 0
    # The operations' fields, once per subscription however many events.
    assert used(samples) == {
        ("Subscription", "metrics"): 2,
        ("MetricsSnapshot", "at"): 2,
        ("MetricsSnapshot", "requestsTotal"): 2,
    }
    assert sum(series(samples, "graphql_subscription_dropped_total").values()) == 0

    for subscriber in subscribers:
        await subscriber.stop()
    await until(lambda: signals.active["metrics"] == 0)
    assert series(await scrape(api), "graphql_subscriptions_active")[("metrics",)] == 0


@pytest.mark.parametrize("plans", [True, False], ids=["shared", "general"])
async def test_a_snapshot_replaced_before_it_went_out_is_dropped_as_superseded(
    make_api: Any, scratch_url: str, plans: bool
) -> None:
    api = await make_api(scratch_url, query_plans=plans)
    monitor = api.app.state.monitor
    signals = signals_of(api)
    subscriber = await Subscriber(api.app).start(METRICS)
    await until(lambda: signals.active["metrics"] == 1)
    await until(lambda: monitor.bus.subscribers(METRICS_TOPIC) == 1)  # its queue

    # Two ticks before the subscription runs again: the first is never sent.
    monitor.tick()
    second = monitor.tick()

    message = await subscriber.ws.receive_json()
    at = second.at.isoformat().replace("+00:00", "Z")
    assert message["payload"]["data"]["metrics"]["at"] == at
    await until(lambda: signals.events["metrics"] == 1)
    samples = await scrape(api)
    dropped = series(samples, "graphql_subscription_dropped_total")
    assert {key: n for key, n in dropped.items() if n} == {("metrics", "superseded"): 1}
    assert fanout_count(samples) == 1
    await subscriber.stop()


async def test_an_alerts_subscription_counts_its_events(api: Any) -> None:
    monitor = api.app.state.monitor
    signals = signals_of(api)
    subscriber = await Subscriber(api.app).start(ALERTS_DOC)
    await until(lambda: signals.active["alerts"] == 1)

    for n in range(2):
        monitor.bus.publish(ALERTS, _alert(n))
        message = await subscriber.ws.receive_json()
        assert message["payload"]["data"]["alerts"]["message"] == f"alert {n}"
    await until(lambda: signals.events["alerts"] == 2)

    samples = await scrape(api)
    assert series(samples, "graphql_subscription_events_total")[("alerts",)] == 2
    assert series(samples, "graphql_subscriptions_active")[("alerts",)] == 1
    assert fanout_count(samples) == 2
    await subscriber.stop()
    await until(lambda: signals.active["alerts"] == 0)


async def test_grade_events_count_each_event_sent(api: Any) -> None:
    signals = signals_of(api)
    await create_student(api, studentId="EV-1", gradeLevel=4)
    subscriber = await Subscriber(api.app).start(
        "subscription { gradeEvents { studentId grades { subject } } }"
    )
    await until(lambda: signals.active["gradeEvents"] == 1)

    await add_grade(api, "EV-1", subject="Art")

    message = await subscriber.ws.receive_json()
    assert message["payload"]["data"]["gradeEvents"] == {
        "studentId": "EV-1",
        "grades": [{"subject": "Art"}],
    }
    await until(lambda: signals.events["gradeEvents"] == 1)
    samples = await scrape(api)
    assert series(samples, "graphql_subscription_events_total")[("gradeEvents",)] == 1
    assert fanout_count(samples) == 1
    await subscriber.stop()
    await until(lambda: signals.active["gradeEvents"] == 0)


async def test_a_slow_alerts_client_is_closed_and_what_it_missed_is_dropped(
    api: Any,
) -> None:
    monitor = api.app.state.monitor
    signals = signals_of(api)
    subscriber = await Subscriber(api.app).start(ALERTS_DOC)
    await until(lambda: signals.active["alerts"] == 1)
    over = 44

    # Published without a pause: the subscription cannot take any of them.
    for n in range(BACKLOG + over):
        monitor.bus.publish(ALERTS, _alert(n))

    with pytest.raises(ConnectionError):
        while True:  # the error for the operation, then the close
            await subscriber.ws.receive_json()
    assert subscriber.ws.close_code == 1013
    await until(lambda: signals.active["alerts"] == 0)
    samples = await scrape(api)
    dropped = series(samples, "graphql_subscription_dropped_total")
    assert {key: n for key, n in dropped.items() if n} == {
        ("alerts", "overflow"): over,
        ("alerts", "slow_client_closed"): BACKLOG,
    }
    assert series(samples, "graphql_subscription_events_total")[("alerts",)] == 0
    await subscriber.stop()


def _alert(n: int) -> AlertEvent:
    return AlertEvent(
        rule="high_error_rate",
        state=AlertState.FIRING,
        message=f"alert {n}",
        values=(float(n),),
        threshold=5.0,
        at=datetime(2026, 12, 6, 10, 0, tzinfo=UTC),
    )
