"""Two `python app.py` processes on one PostgreSQL database and one Redis behave as one
server: grade events cross them, the metrics feed counts both, alerts are written once,
costs.csv has one row per period for the cluster, an invalidation on one is seen on
the other, and Redis going away degrades the feed until it comes back."""

from __future__ import annotations

import asyncio
import csv
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport

from tests.factories import TRANSPORT_WS, grade_input, student_input
from tests.factories.cluster import AppProcess, cluster
from tests.factories.proxy import TcpProxy

pytestmark = pytest.mark.cluster

# A bound on every wait (never a duration a test expects).
WAIT_S = 15.0

STUDENT_CREATE = """
mutation Create($input: StudentCreateInput!) {
  studentCreate(input: $input) { __typename ... on StudentCreateSuccess { student { studentId } } }
}"""
GRADE_ADD = """
mutation Add($input: GradeAddInput!) {
  gradeAdd(input: $input) { __typename ... on GradeAddSuccess { grade { id score } } }
}"""
GRADE_EVENTS = """
subscription Events($id: String) {
  gradeEvents(studentId: $id) { studentId grades { subject score } }
}"""
METRICS = """
subscription { metrics(intervalMs: 100) { requestsTotal workers degraded } }"""
ANALYTICS = '{ studentAnalytics(studentId: "%s") { gradeCount average } }'


async def graphql(
    http: httpx.AsyncClient, app: AppProcess, query: str, **variables: Any
) -> dict[str, Any]:
    response = await http.post(
        f"{app.url}/graphql", json={"query": query, "variables": variables or None}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


async def new_student(http: httpx.AsyncClient, app: AppProcess) -> str:
    data = await graphql(http, app, STUDENT_CREATE, input=student_input())
    assert data["studentCreate"]["__typename"] == "StudentCreateSuccess", data
    student_id: str = data["studentCreate"]["student"]["studentId"]
    return student_id


async def add_grade(
    http: httpx.AsyncClient, app: AppProcess, student_id: str, score: float
) -> None:
    data = await graphql(
        http, app, GRADE_ADD, input=grade_input(student_id, score=score)
    )
    assert data["gradeAdd"]["__typename"] == "GradeAddSuccess", data


@asynccontextmanager
async def subscribed(
    app: AppProcess, query: str, **variables: Any
) -> AsyncIterator[list[Any]]:
    """Every event of a subscription on `app` lands in the list while the block runs."""
    events: list[Any] = []
    transport = WebsocketsTransport(url=app.ws_url, subprotocols=[TRANSPORT_WS])
    started = asyncio.Event()

    async def run() -> None:
        async with Client(
            transport=transport, fetch_schema_from_transport=False
        ) as session:
            request = GraphQLRequest(query, variable_values=variables or None)
            started.set()
            async for event in session.subscribe(request):
                events.append(event)

    task = asyncio.create_task(run())
    try:
        await asyncio.wait_for(started.wait(), WAIT_S)
        yield events
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def until(
    condition: Callable[[], Awaitable[bool]] | Callable[[], bool],
    what: str,
    timeout: float = WAIT_S,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        outcome = condition()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


@pytest.fixture
def two(
    tmp_path: Path, cluster_database_url: str, redis_url: str, redis_prefix: str
) -> Callable[..., Any]:
    """Two apps on one database and Redis (extra settings as keyword arguments)."""

    def start(**env: str) -> Any:
        return cluster(
            tmp_path,
            2,
            database_url=cluster_database_url,
            redis_url=env.pop("REDIS_URL", redis_url),
            redis_prefix=redis_prefix,
            **env,
        )

    return start


async def test_grade_events_written_on_b_reach_a_subscriber_once_in_order(
    two: Callable[..., Any], http: httpx.AsyncClient
):
    with two() as apps:
        a, b = apps[0], apps[1]
        student = await new_student(http, a)
        async with subscribed(a, GRADE_EVENTS, id=student) as events:
            await asyncio.sleep(0.5)  # the subscription is registered
            scores = [61.0, 72.0, 83.0, 94.0, 55.0]
            for score in scores:
                await add_grade(http, b, student, score)
            await until(lambda: len(events) >= len(scores), "5 events on A")
            await asyncio.sleep(0.5)  # nothing more arrives
    received = [
        grade["score"] for event in events for grade in event["gradeEvents"]["grades"]
    ]
    assert received == scores
    assert {event["gradeEvents"]["studentId"] for event in events} == {student}


async def test_the_metrics_feed_on_a_counts_requests_made_to_b(
    two: Callable[..., Any], http: httpx.AsyncClient
):
    with two() as apps:
        a, b = apps[0], apps[1]
        async with subscribed(a, METRICS) as snapshots:
            await until(
                lambda: bool(snapshots) and snapshots[-1]["metrics"]["workers"] == 2,
                "a snapshot of 2 workers",
            )
            await asyncio.sleep(0.5)  # the counts of the start-up are merged
            before = snapshots[-1]["metrics"]["requestsTotal"]
            for _ in range(20):
                await graphql(http, b, "{ __typename }")
            await until(
                lambda: snapshots[-1]["metrics"]["requestsTotal"] >= before + 20,
                "A's feed counting 20 requests made to B",
            )
            await asyncio.sleep(0.5)
            last = snapshots[-1]["metrics"]
    assert before + 20 <= last["requestsTotal"] <= before + 21
    assert last["workers"] == 2
    assert last["degraded"] is False


async def test_an_alert_is_written_once_for_the_cluster(two: Callable[..., Any]):
    # 1 MB of memory: the merged snapshot fires at once, and stays firing.
    with two(ALERT_MEMORY_MB="1") as apps:
        log = apps.alert_log
        await until(
            lambda: log.exists() and "High memory usage" in log.read_text(),
            "the high-memory alert in alert.log",
        )
        await asyncio.sleep(2.0)  # 20 more ticks on each worker
        lines = log.read_text().splitlines()
    memory = [line for line in lines if "High memory usage" in line]
    assert len(memory) == 1, lines
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d - ALERT: High memory usage: "
        r"[\d.]+MB \(threshold: 1MB\)",
        memory[0],
    ), memory[0]


def cost_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


async def test_costs_csv_has_one_row_per_period_for_the_cluster(
    two: Callable[..., Any], http: httpx.AsyncClient
):
    with two(COST_SUMMARY_INTERVAL_S="2") as apps:
        a, b = apps[0], apps[1]
        for _ in range(10):
            await graphql(http, a, "{ __typename }")
            await graphql(http, b, "{ __typename }")
        made = 20

        def counted() -> bool:
            return (
                sum(int(r["api_requests"]) for r in cost_rows(apps.costs_csv)) >= made
            )

        await until(counted, "20 API requests in closed costs.csv periods", 20.0)
        # Two more periods close: neither worker writes a period twice.
        closed = len(cost_rows(apps.costs_csv))
        await until(
            lambda: len(cost_rows(apps.costs_csv)) >= closed + 2,
            "two more periods",
            20.0,
        )
        text = apps.costs_csv.read_text()
    rows = cost_rows(apps.costs_csv)
    assert text.count("timestamp,environment") == 1
    stamps = [row["timestamp"] for row in rows]
    assert stamps == sorted(set(stamps)), stamps  # one row per period, in order
    assert sum(int(row["api_requests"]) for row in rows) == made


async def test_an_invalidation_on_a_is_seen_on_b(
    two: Callable[..., Any], http: httpx.AsyncClient
):
    with two() as apps:
        a, b = apps[0], apps[1]
        student = await new_student(http, a)
        await add_grade(http, a, student, 50.0)
        for _ in range(2):  # B's cache holds the analytics
            first = await graphql(http, b, ANALYTICS % student)
        assert first["studentAnalytics"] == {"gradeCount": 1, "average": 50.0}
        for number in range(10):
            await add_grade(http, a, student, 100.0)
            await asyncio.sleep(0.2)
            seen = (await graphql(http, b, ANALYTICS % student))["studentAnalytics"]
            assert seen["gradeCount"] == number + 2, seen


async def test_redis_going_away_degrades_the_feed_and_it_recovers(
    two: Callable[..., Any], http: httpx.AsyncClient, redis_url: str
):
    parts = urlsplit(redis_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    await proxy.start()
    try:
        with two(REDIS_URL=proxy.url(redis_url)) as apps:
            a = apps[0]
            async with subscribed(a, METRICS) as snapshots:
                await until(
                    lambda: (
                        bool(snapshots) and snapshots[-1]["metrics"]["workers"] == 2
                    ),
                    "2 workers merged",
                )
                await proxy.stop()
                await until(
                    lambda: (
                        snapshots[-1]["metrics"]["workers"] == 1
                        and snapshots[-1]["metrics"]["degraded"] is True
                    ),
                    "a degraded feed of this worker alone",
                )
                health = (await http.get(f"{a.url}/health")).json()
                assert health["cluster"]["redis"] == "down"
                # Queries and mutations keep working from the database.
                student = await new_student(http, a)
                await add_grade(http, a, student, 70.0)
                await proxy.start()
                restored = time.monotonic()
                await until(
                    lambda: (
                        snapshots[-1]["metrics"]["workers"] == 2
                        and snapshots[-1]["metrics"]["degraded"] is False
                    ),
                    "the merged feed back",
                )
                assert time.monotonic() - restored <= 5.0 + 1.0
                health = (await http.get(f"{a.url}/health")).json()
                assert health["cluster"]["redis"] == "ok"
    finally:
        await proxy.stop()
