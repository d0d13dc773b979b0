"""Cache invalidations broadcast through Redis (TEST_REDIS_URL): two apps on one
database and one Redis prefix act as two workers. A write through one is never read
stale through the other 200 ms after its response; another prefix hears nothing; a
write while Redis is down still succeeds; a worker that (re)subscribes clears its
caches, since it may have missed invalidations."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from gql import gql

from app import REDIS_TIMEOUT_S
from monitoring.subscriber import HEALTH_CHECK_S, SILENT_S, STOP_S
from resolvers.cache_redis import (
    PUBLISH_TIMEOUT_S,
    RETRY_INTERVAL_S,
    RedisInvalidations,
)
from tests.factories import add_grade, create_student
from tests.factories.imports import csv_of, start, wait_for_job
from tests.factories.proxy import TcpProxy

ANALYTICS = gql(
    """
    query Reads($id: String!, $level: Int) {
      studentAnalytics(studentId: $id) { gradeCount average }
      classAnalytics(gradeLevel: $level) { gradeCount mean }
    }
    """
)
LANES = 10  # students (one per grade level) written concurrently
PAIRS = 10  # write-then-read pairs per student: 100 in all
READ_AFTER_S = 0.2
WAIT_S = 10  # every wait for the bus is bounded by this


@pytest.fixture
def cache_log() -> Iterator[Callable[[str], list[str]]]:
    """The bus's log lines that contain a text."""
    handler = Records()
    logger = logging.getLogger("gradepulse.cache")
    logger.addHandler(handler)
    yield lambda text: [m for m in handler.messages if text in m]
    logger.removeHandler(handler)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def bus(api: Any) -> RedisInvalidations:
    invalidations = api.services.invalidations
    assert isinstance(invalidations, RedisInvalidations)
    return invalidations


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {WAIT_S} s")
        await asyncio.sleep(0.02)


async def worker(make_api: Any, url: str, redis_url: str, prefix: str) -> Any:
    api = await make_api(url, redis_url=redis_url, redis_prefix=prefix)
    await until(bus(api).subscribed.is_set, "subscribed")
    return api


async def reads(api: Any, student_id: str, level: int) -> tuple[Any, ...]:
    result = await api.execute(ANALYTICS, id=student_id, level=level)
    one, level_stats = result["studentAnalytics"], result["classAnalytics"]
    return (one["gradeCount"], one["average"], level_stats["gradeCount"])


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[TcpProxy]:
    """A TCP proxy to Redis, not yet started; stopped after the test."""
    proxy = TcpProxy(*redis_port(redis_url))
    try:
        yield proxy
    finally:
        await proxy.stop()


async def cached_on_b(a: Any, b: Any, level: int) -> tuple[str, tuple[Any, ...]]:
    """A new student of `level` created on A, heard of by B and in B's caches: its id
    and what B read."""
    sid: str = (await create_student(a, gradeLevel=level))["studentId"]
    await until(lambda: bus(b).received == 1, "B heard the create")
    return sid, await reads(b, sid, level)


def cached(api: Any, student_id: str, level: int) -> bool:
    cache = api.services.cache
    return student_id in cache.keys("analytics") and (level, None) in cache.keys(
        "class_analytics"
    )


def redis_port(redis_url: str) -> tuple[str, int]:
    parts = urlsplit(redis_url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


async def test_100_writes_on_a_are_never_read_stale_on_b(
    make_api, scratch_url, redis_url, redis_prefix
):
    a = await worker(make_api, scratch_url, redis_url, redis_prefix)
    b = await worker(make_api, scratch_url, redis_url, redis_prefix)
    stale: list[Any] = []
    uncached: list[Any] = []

    async def lane(level: int) -> None:
        student = await create_student(a, gradeLevel=level)
        sid = student["studentId"]
        scores: list[float] = []
        for step in range(PAIRS):
            # B caches what it reads (unless a write of another lane landed while
            # it read: LocalCache then drops the value, so read again).
            for _ in range(20):
                await reads(b, sid, level)
                if cached(b, sid, level):
                    break
            else:
                uncached.append((sid, step))
            score = float(40 + (level * 7 + step * 13) % 60)
            await add_grade(a, sid, score=score)
            scores.append(score)
            await asyncio.sleep(READ_AFTER_S)
            got = await reads(b, sid, level)
            # The average as it prints: to 4 places.
            want = (len(scores), round(sum(scores) / len(scores), 4), len(scores))
            if got != want:
                stale.append((sid, step, got, want))

    await asyncio.wait_for(
        asyncio.gather(*(lane(level) for level in range(1, LANES + 1))), 120
    )

    assert uncached == []  # every read after a write could have been served stale
    assert stale == []
    assert bus(b).received >= LANES * (PAIRS + 1)  # each create and grade
    assert bus(a).received == 0  # B wrote nothing; A ignored its own messages


async def test_an_import_on_a_is_not_read_stale_on_b(
    make_api, scratch_url, redis_url, redis_prefix
):
    a = await worker(make_api, scratch_url, redis_url, redis_prefix)
    b = await worker(make_api, scratch_url, redis_url, redis_prefix)
    sid, before = await cached_on_b(a, b, 7)

    started = await start(a, csv=csv_of([(sid, "Math", 90.0), (sid, "Art", 70.0)]))
    job = await wait_for_job(a, started["job"]["id"])
    await asyncio.sleep(READ_AFTER_S)

    assert before == (0, None, 0)
    assert job["status"] == "SUCCEEDED"
    assert await reads(b, sid, 7) == (2, 80.0, 2)


async def test_without_the_broadcast_the_same_check_reads_stale(
    make_api, scratch_url, redis_url, redis_prefix
):
    # The check above has teeth: B on no Redis keeps what it cached.
    a = await worker(make_api, scratch_url, redis_url, redis_prefix)
    b = await make_api(scratch_url)
    sid = (await create_student(a, gradeLevel=4))["studentId"]
    before = await reads(b, sid, 4)

    await add_grade(a, sid, score=50.0)
    await asyncio.sleep(READ_AFTER_S)

    assert before == (0, None, 0)
    assert await reads(b, sid, 4) == before
    assert await reads(a, sid, 4) == (1, 50.0, 1)


async def test_a_worker_on_another_prefix_receives_nothing(
    make_api, scratch_url, redis_url, redis_prefix
):
    a = await worker(make_api, scratch_url, redis_url, redis_prefix)
    b = await worker(make_api, scratch_url, redis_url, redis_prefix)
    other = await worker(make_api, scratch_url, redis_url, f"{redis_prefix}other:")
    sid = (await create_student(a, gradeLevel=6))["studentId"]
    await until(lambda: bus(b).received == 1, "B heard the create")
    before = await reads(other, sid, 6)

    await add_grade(a, sid, score=70.0)
    await until(lambda: bus(b).received == 2, "B heard the grade")
    await asyncio.sleep(READ_AFTER_S)

    assert bus(other).received == 0
    assert cached(other, sid, 6)
    assert await reads(other, sid, 6) == before == (0, None, 0)
    assert await reads(b, sid, 6) == (1, 70.0, 1)


async def test_writes_succeed_while_redis_is_down_and_are_not_lost(
    make_api, scratch_url, redis_url, redis_prefix, cache_log, proxy
):
    await proxy.start()
    a = await worker(make_api, scratch_url, proxy.url(redis_url), redis_prefix)
    b = await worker(make_api, scratch_url, redis_url, redis_prefix)
    sid, _ = await cached_on_b(a, b, 8)

    await proxy.stop()  # A alone loses Redis: B stays subscribed
    durations = []
    for score in (60.0, 80.0):
        started = time.monotonic()
        await add_grade(a, sid, score=score)  # raises unless GradeAddSuccess
        durations.append(time.monotonic() - started)
    down = await reads(a, sid, 8)
    unheard = await reads(b, sid, 8)

    await proxy.start()  # A tells B, with no write, that it missed something
    returned = time.monotonic()
    await until(lambda: bus(b).received == 2, "B heard what it missed")
    recovered_in = time.monotonic() - returned
    healed = await reads(b, sid, 8)
    await add_grade(a, sid, score=100.0)
    await until(lambda: bus(b).received == 3, "B heard the write after")

    assert down == (2, 70.0, 2)
    assert unheard == (0, None, 0)  # stale: A's invalidations never left
    assert max(durations) < 2
    assert recovered_in < 5
    assert healed == (2, 70.0, 2)
    assert await reads(b, sid, 8) == (3, 80.0, 3)
    assert len(cache_log("cache invalidations do not reach")) == 1
    assert len(cache_log("cache invalidations reach the workers")) == 1


async def test_a_hanging_redis_delays_a_write_by_at_most_the_bound(
    make_api, scratch_url, redis_url, redis_prefix, cache_log, proxy
):
    await proxy.start()
    a = await worker(make_api, scratch_url, proxy.url(redis_url), redis_prefix)
    sid = (await create_student(a, gradeLevel=5))["studentId"]

    proxy.blackhole()  # connections are accepted and never answered
    durations = []
    for score in (50.0, 60.0, 70.0):
        started = time.monotonic()
        await add_grade(a, sid, score=score)  # raises unless GradeAddSuccess
        durations.append(time.monotonic() - started)
    started = time.monotonic()
    await bus(a).publish("grades", {"levels": {sid: 5}})
    publish = time.monotonic() - started
    written = await reads(a, sid, 5)

    # Each write: its publish (PUBLISH_TIMEOUT_S) and at most one rate-budget try
    # (REDIS_TIMEOUT_S, once a second), plus its own work.
    assert max(durations) < PUBLISH_TIMEOUT_S + REDIS_TIMEOUT_S + 0.5
    assert publish < PUBLISH_TIMEOUT_S + 0.3
    assert written == (3, 60.0, 3)
    assert len(cache_log("cache invalidations do not reach")) == 1


async def test_while_redis_hangs_one_write_a_second_waits_for_it(
    make_api, scratch_url, redis_url, redis_prefix, cache_log, proxy
):
    await proxy.start()
    a = await worker(make_api, scratch_url, proxy.url(redis_url), redis_prefix)
    b = await worker(make_api, scratch_url, redis_url, redis_prefix)
    sid, _ = await cached_on_b(a, b, 9)

    proxy.blackhole()
    started = time.monotonic()
    await add_grade(a, sid, score=40.0)  # tries Redis, and finds it gone
    first = time.monotonic() - started
    gated = []
    for _ in range(3):  # within RETRY_INTERVAL_S of that: no wait at all
        started = time.monotonic()
        await bus(a).publish("grades", {"levels": {sid: 9}})
        gated.append(time.monotonic() - started)
    await asyncio.sleep(RETRY_INTERVAL_S)
    started = time.monotonic()
    await bus(a).publish("grades", {"levels": {sid: 9}})  # tries again
    probe = time.monotonic() - started
    unheard = await reads(b, sid, 9)

    await proxy.stop()
    await proxy.start()  # back: A's MISSED tells B, with no write
    await until(lambda: bus(b).received == 2, "B heard what it missed")
    healed = await reads(b, sid, 9)

    assert PUBLISH_TIMEOUT_S - 0.05 < first < PUBLISH_TIMEOUT_S + REDIS_TIMEOUT_S + 0.5
    assert max(gated) < 0.05
    assert PUBLISH_TIMEOUT_S - 0.05 < probe < PUBLISH_TIMEOUT_S + 0.3
    assert unheard == (0, None, 0)
    assert healed == (1, 40.0, 1)
    assert len(cache_log("cache invalidations do not reach")) == 1
    assert len(cache_log("cache invalidations reach the workers")) == 1


async def test_a_worker_that_reconnects_clears_its_caches(
    make_api, scratch_url, redis_url, redis_prefix, cache_log, proxy
):
    await proxy.start()
    a = await worker(make_api, scratch_url, redis_url, redis_prefix)
    b = await worker(make_api, scratch_url, proxy.url(redis_url), redis_prefix)
    sid, _ = await cached_on_b(a, b, 3)
    assert cached(b, sid, 3)
    resets = bus(b).resets

    await proxy.stop()  # B's subscription is cut...
    await until(lambda: not bus(b).subscribed.is_set(), "B noticed")
    await add_grade(a, sid, score=90.0)  # ...so it misses this invalidation
    await asyncio.sleep(READ_AFTER_S)
    missed = await reads(b, sid, 3)

    await proxy.start()
    await until(bus(b).subscribed.is_set, "B subscribed again")
    after = [name for name in ("analytics", "class_analytics", "students")]
    emptied = {name: b.services.cache.keys(name) for name in after}
    fresh = await reads(b, sid, 3)

    assert missed == (0, None, 0)  # stale while it could not hear
    assert bus(b).resets == resets + 1
    assert emptied == {name: [] for name in after}
    assert fresh == (1, 90.0, 1)
    assert len(cache_log("cache invalidations not received")) == 1
    assert len(cache_log("cache invalidations are received")) == 1


async def test_a_worker_that_connects_late_clears_its_caches(
    make_api, scratch_url, redis_url, redis_prefix, proxy
):
    # not started: Redis unreachable
    a = await worker(make_api, scratch_url, redis_url, redis_prefix)
    b = await make_api(
        scratch_url, redis_url=proxy.url(redis_url), redis_prefix=redis_prefix
    )
    sid = (await create_student(a, gradeLevel=2))["studentId"]
    await reads(b, sid, 2)
    await add_grade(a, sid, score=30.0)  # published; B is not listening yet
    await asyncio.sleep(READ_AFTER_S)
    missed = await reads(b, sid, 2)

    await proxy.start()
    await until(bus(b).subscribed.is_set, "B subscribed")
    fresh = await reads(b, sid, 2)

    assert missed == (0, None, 0)
    assert bus(b).resets == 1
    assert fresh == (1, 30.0, 1)


async def test_a_stop_mid_reconnection_is_bounded_and_leaves_no_socket(
    make_api, scratch_url, redis_url, redis_prefix, proxy
):
    await proxy.start()
    a = await worker(make_api, scratch_url, proxy.url(redis_url), redis_prefix)
    proxy.blackhole()  # the subscription goes silent; every new attempt hangs
    await until(lambda: not bus(a).subscribed.is_set(), "A noticed")
    await asyncio.sleep(0.75)  # into its next attempt (after RESUBSCRIBE_S)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        started = time.monotonic()
        await bus(a).subscriber.stop()
        took = time.monotonic() - started
        gc.collect()
    pool = bus(a).subscriber.client.connection_pool
    left = [*pool._available_connections, *pool._in_use_connections]

    assert took < STOP_S
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
    assert [c for c in left if c.is_connected] == []


async def test_a_stalled_event_loop_is_not_taken_for_a_silent_redis(
    make_api, scratch_url, redis_url, redis_prefix, cache_log
):
    a = await worker(make_api, scratch_url, redis_url, redis_prefix)

    time.sleep(SILENT_S + 0.5)  # blocks the loop: nothing is read meanwhile
    await asyncio.sleep(3 * HEALTH_CHECK_S)  # a few turns of the listening loop

    assert bus(a).subscribed.is_set()
    assert bus(a).resets == 1  # never subscribed again, so its caches stayed
    assert cache_log("cache invalidations not received") == []
