"""Several `python app.py` processes as one server (PostgreSQL and Redis): they see each
other in /health, share rate budgets, and `WORKERS=2` serves two workers on one port;
without Redis, `WORKERS=2` is refused at start."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.factories import ROOT, TRANSPORT_WS, frames_until_closed
from tests.factories.cluster import app_process, cluster, make_run

pytestmark = pytest.mark.cluster

PAGE = "{ students(first: 10) { edges { node { studentId } } } }"  # 21 points


async def test_two_processes_list_both_workers(
    tmp_path: Path, cluster_database_url: str, redis_url: str, redis_prefix: str
):
    with cluster(
        tmp_path,
        2,
        database_url=cluster_database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
    ) as apps:
        healths = [app.health() for app in apps.apps]

    ids = sorted(health["worker"]["id"] for health in healths)
    assert len(set(ids)) == 2
    assert [health["worker"]["pid"] for health in healths] == [
        app.process.pid for app in apps.apps
    ]
    for health in healths:
        assert health["status"] == "ok"
        assert health["cluster"] == {"workers": ids, "redis": "ok"}


async def test_a_budget_spent_on_one_process_is_spent_on_the_other(
    tmp_path: Path, cluster_database_url: str, redis_url: str, redis_prefix: str
):
    # 100 points a minute for anonymous loopback callers (development admins).
    with cluster(
        tmp_path,
        2,
        database_url=cluster_database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        RATE_LIMIT_ADMIN="100",
        MAX_COST="100",
    ) as apps:
        a, b = apps.apps
        answers = [app.post(PAGE) for app in (a, b, a, b)]
        refused = a.post(PAGE)

    assert [answer.status_code for answer in answers] == [200] * 4
    remaining = [
        answer.json()["extensions"]["rateLimit"]["remaining"] for answer in answers
    ]
    assert remaining[0] == 79
    # Falls by the 21 points of each page across both, plus under 2 points refilled
    # meanwhile (100 a minute).
    assert all(0 <= x - y - 21 <= 2 for x, y in pairwise(remaining)), remaining
    assert refused.status_code == 429
    assert refused.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"


async def test_workers_2_serves_two_workers_that_list_each_other(
    tmp_path: Path, cluster_database_url: str, redis_url: str, redis_prefix: str
):
    with app_process(
        tmp_path,
        WORKERS="2",
        DATABASE_URL=cluster_database_url,
        REDIS_URL=redis_url,
        REDIS_PREFIX=redis_prefix,
        SAMPLE_INTERVAL_MS="100",
        ACCESS_LOG="false",
    ) as app:
        # Each /health on a new connection: the kernel hands it to either worker.
        seen: dict[str, list[str]] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            health = app.health()
            if len(health["cluster"]["workers"]) == 2:
                seen[health["worker"]["id"]] = health["cluster"]["workers"]
            if len(seen) == 2:
                break
            time.sleep(0.05)
        answer = app.post(PAGE)
        ws = await connect(app.ws_url, subprotocols=[TRANSPORT_WS])
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        acked = json.loads(await asyncio.wait_for(ws.recv(), 10))
        app.terminate()  # the parent passes it to both workers
        started = time.monotonic()
        await frames_until_closed(ws)
        closed_in = time.monotonic() - started
        code = await asyncio.to_thread(app.wait)
        await ws.close()

    assert len(seen) == 2, seen
    assert all(workers == sorted(seen) for workers in seen.values()), seen
    assert answer.status_code == 200
    assert answer.json()["data"] == {"students": {"edges": []}}
    assert acked == {"type": "connection_ack"}
    assert ws.close_code == 1012
    assert closed_in < 3
    assert code == 0


async def test_make_run_passes_workers_and_the_services_through(
    tmp_path: Path, cluster_database_url: str, redis_url: str, redis_prefix: str
):
    with make_run(
        tmp_path,
        WORKERS="2",
        DATABASE_URL=cluster_database_url,
        REDIS_URL=redis_url,
        REDIS_PREFIX=redis_prefix,
        SAMPLE_INTERVAL_MS="100",
        ACCESS_LOG="false",
    ) as app:
        deadline = time.monotonic() + 30
        health = app.health()
        while len(health["cluster"]["workers"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
            health = app.health()
        body = app.post("{ students(first: 1) { totalCount } }").json()

    assert health["checks"]["database"]["dialect"] == "postgresql"
    assert health["cluster"]["redis"] == "ok"
    assert len(health["cluster"]["workers"]) == 2
    assert body["data"] == {"students": {"totalCount": 1000}}  # seeded by make run


def test_workers_2_without_redis_is_refused_in_one_line(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "app.py")],
        cwd=tmp_path,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "WORKERS": "2",
            "PYTHONPATH": str(ROOT),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "invalid settings: WORKERS: WORKERS above 1 (2) needs REDIS_URL: workers "
        "share budgets, feeds and caches through Redis (set REDIS_URL, or WORKERS=1)"
    ]
    assert list(tmp_path.iterdir()) == []  # nothing started: no database file
