"""Two `python app.py` processes on one PostgreSQL database and one Redis write
alert.log and costs.csv as one server: one line per alert, one row per period with
both processes' requests; the leader stopping hands its alerts over (no line again)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from redis import Redis

from monitoring.costs import COSTS_HEADER
from tests.factories.cluster import cluster

pytestmark = pytest.mark.cluster

PERIOD_S = 2
WAIT_S = 20.0  # a bound on every wait, never a duration the test expects
ONLY_MEMORY = json.dumps(
    [
        {"id": rule, "enabled": False}
        for rule in (
            "high_response_time",
            "low_cache_hit_rate",
            "high_error_rate",
            "high_cost",
        )
    ]
)


def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {WAIT_S} s")
        time.sleep(0.05)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def cost_rows(path: Path) -> list[list[str]]:
    found = lines(path)
    if not found:
        return []
    assert found[0] == COSTS_HEADER
    assert COSTS_HEADER not in found[1:]
    return [line.split(",") for line in found[1:]]


def requests_written(path: Path) -> int:
    return sum(int(fields[3]) for fields in cost_rows(path))


def test_two_processes_write_one_alert_line_and_one_cost_row_per_period(
    tmp_path: Path, cluster_database_url: str, redis_url: str, redis_prefix: str
):
    redis = Redis.from_url(redis_url)
    try:
        with cluster(
            tmp_path,
            2,
            database_url=cluster_database_url,
            redis_url=redis_url,
            redis_prefix=redis_prefix,
            ALERT_RULES=ONLY_MEMORY,
            ALERT_MEMORY_MB="1",  # every process is above it
            COST_SUMMARY_INTERVAL_S=str(PERIOD_S),
        ) as apps:
            a, b = apps.apps
            until(lambda: len(lines(apps.alert_log)) == 1)
            for app, count in ((a, 5), (b, 7)):
                for _ in range(count):
                    assert app.post("{ __typename }").status_code == 200
            until(lambda: requests_written(apps.costs_csv) == 12)

            # The leader stops (SIGTERM): the other takes over the firing alert.
            holder = redis.get(f"{redis_prefix}leader")
            assert holder is not None
            ids = [app.health()["worker"]["id"] for app in (a, b)]
            leaving = ids.index(holder.decode())
            apps.apps[leaving].terminate()
            assert apps.apps[leaving].wait() == 0
            staying = ids[1 - leaving]
            until(lambda: redis.get(f"{redis_prefix}leader") == staying.encode())
            time.sleep(PERIOD_S + 0.5)  # ticks of the new leader, and a boundary

            alert_lines = lines(apps.alert_log)
            rows = cost_rows(apps.costs_csv)
    finally:
        redis.close()

    (line,) = alert_lines
    assert " - ALERT: High memory usage: " in line
    assert line.endswith("MB (threshold: 1MB)")
    starts = [fields[0] for fields in rows]
    assert starts == sorted(set(starts))  # one row per period, none twice
    assert sum(int(fields[3]) for fields in rows) == 12
    assert sum(Decimal(fields[5]) for fields in rows) == Decimal("0.00012")
