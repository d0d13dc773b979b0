"""Two workers (apps) on one database and one Redis (TEST_REDIS_URL, a prefix of the
test's own), SQLite and PostgreSQL: one costs.csv row per period for the cluster,
holding both workers' requests; costSummaryWrite on the worker that does not lead;
the meter's own statements are neither counted nor charged."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from monitoring import monitor
from monitoring.costs import COSTS_HEADER
from tests.factories import free_port
from tests.test_leader import clustered, leaders

PERIOD_S = 2
WAIT_S = 15.0  # a bound on every wait, never a duration a test expects
TYPENAME = "{ __typename }"  # an operation with no SQL: one API request, no query
SUMMARY = (
    "mutation { costSummaryWrite { __typename ... on CostSummaryWriteSuccess "
    "{ row { timestamp dbQueries apiRequests apiCost } } } }"
)


@pytest.fixture(autouse=True)
def quick_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Meters synced every 0.5 s of ticks, not 5 (the interval is the monitor's
    own business, tested in test_monitor_costs): these tests wait for syncs."""
    monkeypatch.setattr(monitor, "COST_SYNC_S", 0.5)


async def until(condition: Callable[[], bool]) -> None:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > WAIT_S:
            raise AssertionError(f"condition not met within {WAIT_S} s")
        await asyncio.sleep(0.02)


def rows() -> list[list[str]]:
    path = Path("costs.csv")
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    assert lines[0] == COSTS_HEADER
    assert COSTS_HEADER not in lines[1:]
    return [line.split(",") for line in lines[1:]]


def written_requests() -> int:
    return sum(int(fields[3]) for fields in rows())


async def two_workers(make_api: Any, url: str, **overrides: Any) -> tuple[Any, Any]:
    first = await make_api(url, **overrides)
    second = await make_api(url, **overrides)
    await until(lambda: len(leaders(first, second)) == 1)
    (leader,) = leaders(first, second)
    return (first, second)[leader], (first, second)[1 - leader]


async def test_one_row_per_period_holds_both_workers_requests(
    make_api, scratch_url, redis_url, redis_prefix
):
    leader, follower = await two_workers(
        make_api,
        scratch_url,
        **clustered(redis_url, redis_prefix, cost_summary_interval_s=PERIOD_S),
    )

    for _ in range(5):
        await leader.post(TYPENAME)
    for _ in range(7):
        await follower.post(TYPENAME)
    await until(lambda: written_requests() == 12)
    await asyncio.sleep(PERIOD_S + 0.5)  # another boundary: nothing written twice

    written = rows()
    starts = [datetime.fromisoformat(fields[0]) for fields in written]
    assert starts == sorted(set(starts))  # one row per period, never overlapping
    assert all(start.timestamp() % PERIOD_S == 0 for start in starts)
    assert {fields[1] for fields in written} == {"development"}
    assert sum(int(fields[2]) for fields in written) == 0
    assert written_requests() == 12
    assert sum(Decimal(fields[5]) for fields in written) == Decimal("0.00012")
    # Both workers read the cluster's totals back.
    for api in (leader, follower):
        snapshot = api.app.state.monitor.costs.snapshot()
        assert snapshot.api_requests == 12
        assert snapshot.db_queries == 0


async def test_cost_summary_write_on_the_worker_that_does_not_lead(
    make_api, scratch_url, redis_url, redis_prefix
):
    leader, follower = await two_workers(
        make_api, scratch_url, **clustered(redis_url, redis_prefix)
    )
    for _ in range(3):
        await leader.post(TYPENAME)
    # The leader's counts reach the database within a tick; the follower reads them.
    costs = follower.app.state.monitor.costs
    await until(lambda: costs.snapshot().current_period.api_requests == 3)
    for _ in range(4):
        await follower.post(TYPENAME)

    body = await follower.post(SUMMARY)
    await asyncio.sleep(0.5)  # ticks of both: the row is not written again

    summary = body["data"]["costSummaryWrite"]
    assert summary["__typename"] == "CostSummaryWriteSuccess"
    assert summary["row"]["apiRequests"] == 7
    assert summary["row"]["dbQueries"] == 0
    assert summary["row"]["apiCost"] == 0.00007
    (written,) = rows()
    assert written[0] == summary["row"]["timestamp"].removesuffix("Z")
    assert written[2:4] == ["0", "7"]
    # The mutation itself is counted in the period it opened, on both workers.
    await until(
        lambda: (
            leader.app.state.monitor.costs.snapshot().current_period.api_requests == 1
        )
    )


async def test_the_meters_own_statements_are_not_counted(
    make_api, scratch_url, redis_url, redis_prefix
):
    leader, follower = await two_workers(
        make_api,
        scratch_url,
        **clustered(redis_url, redis_prefix, cost_summary_interval_s=PERIOD_S),
    )
    # The start-up's own statements (the migration check) are counted, as before.
    before = [
        api.app.state.monitor.registry.db_queries_total for api in (leader, follower)
    ]
    await asyncio.sleep(10 * 0.1)  # ten ticks of both, each with its transaction

    after = [
        api.app.state.monitor.registry.db_queries_total for api in (leader, follower)
    ]
    assert after == before
    for api in (leader, follower):
        assert api.app.state.monitor.costs.snapshot().db_queries == 0


async def test_with_redis_down_periods_are_still_closed(make_api, scratch_url):
    # Nothing listens there: nobody can know the leader, and the database's lock
    # lets each worker close a period once.
    dead = f"redis://127.0.0.1:{free_port()}/0"
    first = await make_api(
        scratch_url, redis_url=dead, sample_interval_ms=100, cost_summary_interval_s=1
    )
    second = await make_api(
        scratch_url, redis_url=dead, sample_interval_ms=100, cost_summary_interval_s=1
    )
    for api in (first, second, second):
        await api.post(TYPENAME)

    await until(lambda: written_requests() == 3)
    await asyncio.sleep(1.5)  # another boundary

    starts = [fields[0] for fields in rows()]
    assert starts == sorted(set(starts))
    assert leaders(first, second) == []
