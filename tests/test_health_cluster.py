"""/health names this worker and the live workers of its cluster: heartbeats in Redis
(TEST_REDIS_URL) under REDIS_PREFIX, one per sampler tick, taken back at a clean stop
and run out after 3 ticks; without Redis, or with Redis down, a worker lists itself."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette

from app import connect_redis
from monitoring.cluster import TICKS_ALIVE, Cluster, Worker
from settings import Settings
from tests.conftest import make_settings
from tests.factories import free_port

TICK_MS = 100
# Far more than a few ticks: a bound on every wait, never a duration the test expects.
WAIT_S = 5.0


@asynccontextmanager
async def worker(
    url: str, **overrides: Any
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """One app under its lifespan and a client of it (leaving the block stops it
    cleanly)."""
    from app import create_app

    app = create_app(make_settings(url, **overrides))
    async with (
        LifespanManager(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        ) as http,
    ):
        yield app, http


async def health(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("/health")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def workers(http: httpx.AsyncClient) -> list[str]:
    listed: list[str] = (await health(http))["cluster"]["workers"]
    return listed


async def own_id(http: httpx.AsyncClient) -> str:
    worker_id: str = (await health(http))["worker"]["id"]
    return worker_id


async def until(condition: Callable[[], Awaitable[bool]]) -> float:
    """Poll until `condition` holds; the seconds it took (AssertionError past WAIT_S)."""
    started = time.monotonic()
    while not await condition():
        if time.monotonic() - started > WAIT_S:
            raise AssertionError(f"condition not met within {WAIT_S} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def clustered(redis_url: str, prefix: str) -> dict[str, Any]:
    return {"redis_url": redis_url, "redis_prefix": prefix, "sample_interval_ms": 100}


async def test_two_workers_on_one_redis_list_each_other(
    make_api, scratch_url, redis_url, redis_prefix
):
    first = await make_api(scratch_url, **clustered(redis_url, redis_prefix))
    second = await make_api(scratch_url, **clustered(redis_url, redis_prefix))
    ids = sorted([await own_id(first.http), await own_id(second.http)])

    async def both_listed() -> bool:
        return await workers(first.http) == ids and await workers(second.http) == ids

    await until(both_listed)
    body = await health(first.http)
    assert body["status"] == "ok"
    assert body["cluster"] == {"workers": ids, "redis": "ok"}
    host, pid = socket.gethostname(), os.getpid()
    assert body["worker"]["host"] == host
    assert body["worker"]["pid"] == pid
    assert ids[0] != ids[1]
    assert all(worker_id.startswith(f"{host}:{pid}:") for worker_id in ids)


async def test_a_worker_that_stops_cleanly_leaves_at_once(
    make_api, scratch_url, redis_url, redis_prefix
):
    staying = await make_api(scratch_url, **clustered(redis_url, redis_prefix))
    stays = await own_id(staying.http)
    async with worker(scratch_url, **clustered(redis_url, redis_prefix)) as (
        _,
        leaving,
    ):
        leaves = await own_id(leaving)

        async def listed() -> bool:
            return await workers(staying.http) == sorted([stays, leaves])

        await until(listed)

    # No wait: the lifespan's shutdown took the heartbeat back.
    assert await workers(staying.http) == [stays]


async def test_a_worker_whose_heartbeat_stops_drops_out_after_3_ticks(
    make_api, scratch_url, redis_url, redis_prefix
):
    live = await make_api(scratch_url, **clustered(redis_url, redis_prefix))
    stays = await own_id(live.http)
    async with worker(scratch_url, **clustered(redis_url, redis_prefix)) as (
        app,
        dying,
    ):
        dies = await own_id(dying)

        async def listed() -> bool:
            return await workers(live.http) == sorted([stays, dies])

        await until(listed)
        # Its sampler stops without a goodbye, as a killed process's would: its last
        # heartbeat (at most a tick ago) holds for 3 ticks.
        await app.state.monitor.stop()
        stopped = time.monotonic()
        assert await workers(live.http) == sorted([stays, dies])

        async def dropped() -> bool:
            return await workers(live.http) == [stays]

        await until(dropped)
        gone_after = time.monotonic() - stopped
        assert gone_after >= (TICKS_ALIVE - 1) * TICK_MS / 1000


async def test_another_prefix_does_not_see_the_workers(
    make_api, scratch_url, redis_url, redis_prefix
):
    first = await make_api(scratch_url, **clustered(redis_url, redis_prefix))
    second = await make_api(scratch_url, **clustered(redis_url, redis_prefix))
    other = await make_api(scratch_url, **clustered(redis_url, f"{redis_prefix}other:"))
    ids = sorted([await own_id(first.http), await own_id(second.http)])

    async def both_listed() -> bool:
        return await workers(first.http) == ids

    await until(both_listed)
    assert await workers(other.http) == [await own_id(other.http)]


async def test_without_redis_a_worker_lists_itself(api):
    body = await health(api.http)

    assert body["cluster"] == {
        "workers": [body["worker"]["id"]],
        "redis": "unconfigured",
    }
    assert body["worker"] == {
        "id": body["worker"]["id"],
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    assert body["status"] == "ok"


async def test_with_redis_down_a_worker_lists_itself_and_is_degraded(
    make_api, scratch_url
):
    # Nothing listens on that port.
    dead = f"redis://127.0.0.1:{free_port()}/0"
    api = await make_api(scratch_url, redis_url=dead, sample_interval_ms=TICK_MS)

    body = await health(api.http)

    assert body["status"] == "degraded"
    assert body["cluster"] == {"workers": [body["worker"]["id"]], "redis": "down"}


def test_each_start_has_an_id_of_its_own():
    first, second = Worker.here(), Worker.here()

    assert first.id != second.id
    assert (first.host, first.pid) == (second.host, second.pid)
    assert first.id.startswith(f"{first.host}:{first.pid}:")


async def test_a_redis_outage_is_logged_once_and_never_raises():
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("gradepulse.cluster")
    logger.addHandler(handler)
    dead = f"redis://127.0.0.1:{free_port()}/0"
    client = connect_redis(Settings(_env_file=None, redis_url=dead))  # type: ignore[call-arg]
    assert client is not None
    cluster = Cluster(Worker.here(), client, interval_s=TICK_MS / 1000)
    try:
        for _ in range(3):
            await cluster.beat()
        listed = await cluster.workers()
    finally:
        logger.removeHandler(handler)
        await client.aclose()

    assert [r.getMessage().split(" (")[0] for r in records] == ["heartbeat failed"]
    assert listed == [cluster.worker.id]
