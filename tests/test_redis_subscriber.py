"""The worker's one Redis subscriber (monitoring/subscriber.py), which the event bus and
the cache invalidations share: one connection per worker, a stalled event loop is
not taken for a silent Redis, and a stop while Redis hangs is bounded."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import warnings
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from monitoring.monitor import ALERTS, LISTENING, SNAPSHOTS
from monitoring.subscriber import HEALTH_CHECK_S, SILENT_S, STOP_S, RedisSubscriber
from resolvers import live
from tests.factories.proxy import TcpProxy
from tests.test_cluster_bus import WAIT_S, Warnings, clustered, merging, pair, until


@pytest.fixture
def bus_log() -> Iterator[Warnings]:
    """The warnings of the bus's log."""
    handler = Warnings()
    logger = logging.getLogger("gradepulse.bus")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def proxy_to(redis_url: str) -> TcpProxy:
    target = urlsplit(redis_url)
    return TcpProxy(target.hostname or "127.0.0.1", target.port or 6379)


async def test_each_worker_listens_on_one_connection(
    make_api, scratch_url, redis_url, redis_prefix
):
    a, b = await pair(make_api, scratch_url, redis_url, redis_prefix)
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        clients = await client.client_list(_type="pubsub")
        numsub = dict(await client.pubsub_numsub(*a.app.state.subscriber.channels))
    finally:
        await client.aclose()

    names = [
        f"{redis_prefix}worker:{api.app.state.cluster.worker.id}" for api in (a, b)
    ]
    mine = sorted(
        (entry["name"], entry["sub"]) for entry in clients if entry["name"] in names
    )
    topics = [ALERTS, SNAPSHOTS, LISTENING, live.GRADES, live.IMPORTS]
    channels = [f"{redis_prefix}events:{topic}" for topic in topics]
    assert sorted(a.app.state.subscriber.channels) == sorted(
        [*channels, f"{redis_prefix}cache"]
    )
    # Both the bus's topics and the cache channel, on one connection each.
    assert mine == sorted((name, str(len(channels) + 1)) for name in names)
    assert numsub == {channel: 2 for channel in a.app.state.subscriber.channels}
    for api in (a, b):
        invalidations = api.app.state.services.invalidations
        assert invalidations.origin == api.app.state.cluster.worker.id
        assert api.app.state.monitor.bus.origin == api.app.state.cluster.worker.id
        assert api.app.state.services.imports.worker_id == invalidations.origin


async def test_a_stalled_event_loop_keeps_the_bus_subscribed(
    make_api, scratch_url, redis_url, redis_prefix, bus_log
):
    a, b = await pair(make_api, scratch_url, redis_url, redis_prefix)
    jobs = a.app.state.monitor.bus.subscribe(live.IMPORTS, 16)
    try:
        time.sleep(SILENT_S + 0.5)  # blocks the loop: nothing is read meanwhile
        await asyncio.sleep(3 * HEALTH_CHECK_S)  # a few turns of the listening loop
        subscribed = [api.app.state.monitor.bus.subscribed.is_set() for api in (a, b)]

        b.app.state.monitor.bus.publish(live.IMPORTS, "job-1")
        crossed = await asyncio.wait_for(jobs.get(), WAIT_S)
    finally:
        jobs.close()
    await until(merging(a, 2))

    assert subscribed == [True, True]
    # Never subscribed again, so neither the feed nor the caches were reset.
    assert [api.app.state.subscriber.subscriptions for api in (a, b)] == [1, 1]
    assert [api.app.state.services.invalidations.resets for api in (a, b)] == [1, 1]
    assert crossed == "job-1"
    assert bus_log.messages == []


async def test_a_stop_while_redis_hangs_is_bounded_and_leaves_no_socket(
    make_api, scratch_url, redis_url, redis_prefix, bus_log
):
    proxy = proxy_to(redis_url)
    await proxy.start()
    try:
        a = await make_api(scratch_url, **clustered(proxy.url(redis_url), redis_prefix))
        await until(merging(a, 1))
        bus, subscriber = a.app.state.monitor.bus, a.app.state.subscriber
        proxy.blackhole()  # the subscription goes silent; every new attempt hangs

        async def lost() -> bool:
            return not bus.subscribed.is_set()

        await until(lost)
        await asyncio.sleep(0.5)  # into its next attempt (after RESUBSCRIBE_S)
        bus.publish(live.IMPORTS, "job-1")  # the sender waits on Redis too
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            started = time.monotonic()
            await bus.stop()
            await subscriber.stop()
            took = time.monotonic() - started
            gc.collect()
        pool = subscriber.client.connection_pool
        left = [*pool._available_connections, *pool._in_use_connections]
        tasks = [
            task.get_name()
            for task in asyncio.all_tasks()
            if task.get_name() in ("redis-subscriber", "bus-sender")
        ]
    finally:
        await proxy.stop()

    assert took < STOP_S
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
    assert [c for c in left if c.is_connected] == []
    assert tasks == []
    assert len([m for m in bus_log.messages if "Redis unreachable" in m]) == 1


async def test_a_stop_is_bounded_when_a_handler_ignores_the_cancel(
    redis_url, redis_prefix
):
    client = Redis.from_url(redis_url)
    subscriber = RedisSubscriber(client, name=f"{redis_prefix}worker:test")
    entered, release = asyncio.Event(), asyncio.Event()

    async def stubborn(channel: str, data: bytes) -> None:
        entered.set()
        try:
            await asyncio.sleep(WAIT_S)
        except asyncio.CancelledError:
            await release.wait()  # as work that cannot be interrupted would
            raise

    subscriber.listen([f"{redis_prefix}slow"], stubborn)
    subscriber.start()
    (task,) = [t for t in asyncio.all_tasks() if t.get_name() == "redis-subscriber"]
    try:
        await asyncio.wait_for(subscriber.subscribed.wait(), WAIT_S)
        await client.publish(f"{redis_prefix}slow", b"x")
        await asyncio.wait_for(entered.wait(), WAIT_S)
        started = time.monotonic()
        stopping = asyncio.ensure_future(subscriber.stop())
        done, _ = await asyncio.wait({stopping}, timeout=STOP_S + 1)
        took = time.monotonic() - started
        pool = subscriber.client.connection_pool
        left = [*pool._available_connections, *pool._in_use_connections]
        running = not task.done()
    finally:
        release.set()
        await asyncio.wait({task}, timeout=WAIT_S)
        await client.aclose()

    assert done == {stopping}
    assert STOP_S - 0.1 < took < STOP_S + 0.5  # it waited for the handler, no longer
    assert [c for c in left if c.is_connected] == []
    assert running  # the handler held it past the stop...
    assert task.cancelled()  # ...and it ended once let go, without subscribing again
    assert not subscriber.subscribed.is_set()
