"""Two `python app.py` processes on one PostgreSQL database and one Redis: an
invalidation on one is seen on the other, and Redis going away degrades the feed (and
/health) until it comes back, without a restart. (Grade events and metrics across
processes: test_cluster_feed_processes.py; alert.log and costs.csv: test_cluster_leader.py.)"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.factories import grade_input, student_input
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
METRICS = "{ metrics { workers degraded } }"
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


class ThreadedProxy:
    """A TcpProxy on an event loop of its own thread: the cluster harness waits with
    blocking calls, which would stall a proxy on the test's loop."""

    def __init__(self, host: str, port: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.proxy = TcpProxy(host, port)

    def _call(self, coroutine: Any) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(WAIT_S)

    def start(self) -> None:
        self._call(self.proxy.start())

    def stop(self) -> None:
        self._call(self.proxy.stop())

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(WAIT_S)
        self._loop.close()


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
    proxy = ThreadedProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    proxy.start()
    try:
        with two(REDIS_URL=proxy.proxy.url(redis_url)) as apps:
            a = apps[0]

            async def feed(workers: int, degraded: bool) -> bool:
                data = await graphql(http, a, METRICS)
                return bool(
                    data["metrics"] == {"workers": workers, "degraded": degraded}
                )

            await until(lambda: feed(2, False), "2 workers merged")
            proxy.stop()
            await until(lambda: feed(1, True), "a degraded feed of this worker alone")
            health = (await http.get(f"{a.url}/health")).json()
            assert (health["status"], health["cluster"]["redis"]) == (
                "degraded",
                "down",
            )
            # Queries and mutations keep working from the database.
            student = await new_student(http, a)
            await add_grade(http, a, student, 70.0)
            proxy.start()
            restored = time.monotonic()
            await until(lambda: feed(2, False), "the merged feed back")
            assert time.monotonic() - restored <= 5.0 + 1.0
            health = (await http.get(f"{a.url}/health")).json()
            assert (health["status"], health["cluster"]["redis"]) == ("ok", "ok")
    finally:
        proxy.close()
