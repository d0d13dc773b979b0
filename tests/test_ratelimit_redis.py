"""Rate budgets shared through Redis (TEST_REDIS_URL): the Redis bucket answers as the
in-process one does, two apps on one Redis and prefix share one budget, another prefix
sees none of it, and a Redis that goes away degrades to per-worker buckets of
1/WORKERS of the budget and is used again by itself when it returns."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from itertools import pairwise
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from app import connect_redis
from resolvers.ratelimit import MemoryRateStore, RateState
from resolvers.ratelimit_redis import RedisRateStore
from settings import Settings
from tests.factories import free_port, post, rate_limit, refusal
from tests.factories.proxy import TcpProxy

PAGE = "{ students(first: 10) { edges { node { studentId } } } }"  # 21 points
FREE = "{ __typename }"
# One step of a case: seconds to wait first, the identity, the cost, and whether
# it is taken however little remains (force).
Step = tuple[float, str, int, bool]

CASES: dict[str, tuple[int, list[Step]]] = {
    "a charge leaves the rest": (60, [(0, "a", 10, False), (0, "a", 0, False)]),
    "over budget is refused without charging": (
        6000,  # 100 points a second
        [
            (0, "a", 5500, False),
            (0, "a", 3000, False),
            (0, "a", 0, False),
            (0.05, "a", 500, False),
        ],
    ),
    "the cost equal to what remains is allowed": (
        60,
        [(0, "a", 40, False), (0, "a", 20, False)],
    ),
    "free operations pass an empty bucket": (
        60,
        [(0, "a", 60, False), (0, "a", 0, False), (0, "a", 1, False)],
    ),
    "a free operation on no bucket": (100, [(0, "a", 0, False), (0, "a", 0, False)]),
    "identities have their own buckets": (
        60,
        [(0, "a", 50, False), (0, "b", 50, False)],
    ),
    "the bucket refills continuously": (
        120,  # two points a second
        [(0, "a", 3, False), (0.3, "a", 1, False), (0.3, "a", 0, False)],
    ),
    "the bucket is full again": (60_000, [(0, "a", 1000, False), (1.1, "a", 0, False)]),
    "a forced charge leaves a debt, of ten minutes of budget at most": (
        60,
        [
            (0, "a", 50, False),
            (0, "a", 30, True),  # 20 points in debt
            (0, "a", 1, False),  # refused until the debt is paid
            (0, "a", 0, False),
            (0, "a", 10_000, True),  # down to -600
            (0, "a", 0, False),
        ],
    ),
    "a refill never passes the capacity": (
        600,
        [
            (0, "a", 1, False),
            (0.2, "a", 0, False),
            (0, "a", 600, False),
            (0, "a", 1, False),
        ],
    ),
}


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """The client the app makes (its pool and timeouts)."""
    client = connect_redis(Settings(_env_file=None, redis_url=redis_url))  # type: ignore[call-arg]
    assert client is not None
    yield client
    await client.aclose()


@pytest.fixture
def ratelimit_log() -> Iterator[Callable[[str], list[str]]]:
    """The rate store's log lines that contain a text (a handler of its own:
    gradepulse's loggers may not propagate to the root logger, where caplog is)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("gradepulse.ratelimit")
    logger.addHandler(handler)
    yield lambda text: [r.getMessage() for r in records if text in r.getMessage()]
    logger.removeHandler(handler)


class Replay:
    """A clock that gives the recorded times one by one."""

    def __init__(self, times: list[float]) -> None:
        self.times = iter(times)

    def __call__(self) -> float:
        return next(self.times)


# --- the store ----------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
async def test_redis_answers_as_the_memory_store_does(redis, redis_prefix, case):
    capacity, steps = CASES[case]
    store = RedisRateStore(redis, prefix=redis_prefix, fallback=MemoryRateStore())

    shared: list[RateState] = []
    times: list[float] = []
    for wait, identity, cost, force in steps:
        await asyncio.sleep(wait)
        state, now = await store.take_shared(identity, capacity, cost, force=force)
        shared.append(state)
        times.append(now)
    # The same charges, in process, at the times Redis took them.
    memory = MemoryRateStore(clock=Replay(times))
    local = [
        await memory.take(identity, capacity, cost, force=force)
        for _, identity, cost, force in steps
    ]

    assert shared == local
    assert store.shared


async def test_the_fixed_cases_read_as_the_memory_store_tests(redis, redis_prefix):
    store = RedisRateStore(redis, prefix=redis_prefix, fallback=MemoryRateStore())

    first = await store.take("a", 6000, 5500)
    refused = await store.take("a", 6000, 3000)

    assert (first.remaining, first.allowed, first.full_in_s) == (500, True, 55)
    assert refused.allowed is False
    assert refused.retry_after_s == 25  # 2500 points at 100 a second
    assert refused.remaining in (500, 501)  # charged nothing (and refilled a little)


async def test_buckets_live_under_the_prefix_until_full(redis, redis_prefix):
    store = RedisRateStore(redis, prefix=redis_prefix, fallback=MemoryRateStore())

    await store.take("key:7", 60, 0)
    free = await redis.exists(f"{redis_prefix}rate:key:7")
    await store.take("key:7", 60, 30)
    await store.take("key:8", 60, 90)  # refused: nothing written

    assert free == 0
    assert await redis.keys(f"{redis_prefix}*") == [
        f"{redis_prefix}rate:key:7".encode()
    ]
    # Until it is full again: 30 points at one a second.
    assert 29_000 < await redis.pttl(f"{redis_prefix}rate:key:7") <= 30_000


async def test_charges_from_many_tasks_are_atomic(redis, redis_prefix):
    stores = [
        RedisRateStore(redis, prefix=redis_prefix, fallback=MemoryRateStore())
        for _ in range(2)
    ]

    states = await asyncio.gather(
        *(stores[n % 2].take("a", 100_000, 1000) for n in range(120))
    )

    # 100 charges fit (plus what refills meanwhile, under 2 s at 1,667 a second).
    allowed = sum(state.allowed for state in states)
    assert 100 <= allowed <= 103
    assert min(state.remaining for state in states) < 1000


async def test_while_redis_is_down_a_worker_holds_its_share(redis_prefix):
    closed = connect_redis(
        Settings(_env_file=None, redis_url=f"redis://127.0.0.1:{free_port()}/0")  # type: ignore[call-arg]
    )
    assert closed is not None
    shares = {
        workers: RedisRateStore(
            closed, prefix=redis_prefix, fallback=MemoryRateStore(), workers=workers
        )
        for workers in (1, 3, 7, 200)
    }
    try:
        states = {n: await store.take("a", 100, 10) for n, store in shares.items()}
    finally:
        await closed.aclose()

    # 1/WORKERS of 100, rounded down (never over the budget), at least one point.
    assert {n: (s.limit, s.remaining, s.allowed) for n, s in states.items()} == {
        1: (100, 90, True),
        3: (33, 23, True),
        7: (14, 4, True),
        200: (1, 1, False),
    }
    assert not any(store.shared for store in shares.values())


# --- through two apps ---------------------------------------------------------------


async def shared_api(
    make_api: Any, url: str, redis_url: str, prefix: str, *, workers: int = 1
) -> Any:
    """The app on Redis with a budget of 100 points a minute (anonymous development
    callers are admins), as one of `workers` workers."""
    return await make_api(
        url,
        redis_url=redis_url,
        redis_prefix=prefix,
        rate_limit_admin=100,
        max_cost=100,
        workers=workers,
    )


async def test_two_apps_share_one_budget(make_api, seeded_url, redis_url, redis_prefix):
    first = await shared_api(make_api, seeded_url, redis_url, redis_prefix)
    second = await shared_api(make_api, seeded_url, redis_url, redis_prefix)
    other = await shared_api(make_api, seeded_url, redis_url, f"{redis_prefix}other:")

    bodies = []
    for api in (first, second, first, second):
        bodies.append((await post(api, PAGE)).json())
    first.counter.reset()
    refused = await post(first, PAGE)
    statements = list(first.counter.statements)
    elsewhere = (await post(other, PAGE)).json()

    remaining = [rate_limit(body)["remaining"] for body in bodies]
    assert all(len(body["data"]["students"]["edges"]) == 10 for body in bodies)
    # 100 - 21 per page, plus under 2 points refilled meanwhile.
    assert remaining[0] == 79
    assert all(0 <= a - b - 21 <= 2 for a, b in pairwise(remaining))
    assert remaining[-1] < 21
    assert refused.status_code == 429
    assert refusal(refused.json())["code"] == "RATE_LIMITED"
    assert statements == []
    assert rate_limit(elsewhere)["remaining"] == 79


# --- Redis down ---------------------------------------------------------------------


async def test_a_dead_redis_degrades_to_local_buckets_of_a_share(
    make_api, seeded_url, redis_prefix, ratelimit_log
):
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    api = await shared_api(make_api, seeded_url, closed, redis_prefix, workers=2)

    started = time.monotonic()
    bodies = [(await post(api, PAGE)).json() for _ in range(2)]
    refused = await post(api, PAGE)
    elapsed = time.monotonic() - started
    health = await api.http.get("/health")
    ready = await api.http.get("/health/ready")

    # WORKERS=2: this worker's own bucket holds half of the budget of 100.
    assert all(len(body["data"]["students"]["edges"]) == 10 for body in bodies)
    assert [rate_limit(body)["remaining"] for body in bodies] == [29, 8]
    assert [rate_limit(body)["limit"] for body in bodies] == [50, 50]
    assert refused.status_code == 429
    assert refusal(refused.json())["code"] == "RATE_LIMITED"
    assert refused.headers["RateLimit-Policy"] == '"default";q=50;w=60'
    assert elapsed < 3
    assert health.json()["status"] == "degraded"
    assert health.json()["cluster"]["redis"] == "down"
    assert health.json()["checks"]["database"]["status"] == "ok"
    assert ready.status_code == 200
    [warning] = ratelimit_log("Redis unreachable")  # one, not one per request
    assert "ConnectionError" in warning
    assert not api.services.rate_limiter.store.shared


def redis_port(redis_url: str) -> tuple[str, int]:
    parts = urlsplit(redis_url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


async def test_redis_returning_is_used_again_within_5_s(
    make_api, seeded_url, redis_url, redis_prefix, ratelimit_log
):
    proxy = TcpProxy(*redis_port(redis_url))
    await proxy.start()
    try:
        # Two workers, A reaching Redis through the proxy and B directly. Budgets of 60
        # points a minute refill one point a second; while Redis is down, A's own
        # bucket holds half of it.
        a, b = [
            await make_api(
                seeded_url,
                redis_url=url,
                redis_prefix=redis_prefix,
                rate_limit_admin=60,
                max_cost=60,
                workers=2,
            )
            for url in (proxy.url(redis_url), redis_url)
        ]
        before = (await post(a, PAGE)).json()

        await proxy.stop()
        during = (await post(a, PAGE)).json()
        down = (await a.http.get("/health")).json()
        ready = await a.http.get("/health/ready")
        spent = (await post(b, PAGE)).json()  # the shared bucket: 39 - 21

        await proxy.start()
        returned = time.monotonic()
        again = None
        while time.monotonic() - returned < 5:
            body = (await post(a, FREE)).json()
            if rate_limit(body)["limit"] == 60:  # the shared bucket, not A's own
                again = body
                break
            await asyncio.sleep(0.1)
        recovered_in = time.monotonic() - returned
        up = (await a.http.get("/health")).json()
    finally:
        await proxy.stop()

    assert rate_limit(before)["remaining"] == 39
    assert len(during["data"]["students"]["edges"]) == 10
    # A's own full bucket of 60 / WORKERS, less 21.
    assert (rate_limit(during)["limit"], rate_limit(during)["remaining"]) == (30, 9)
    assert down["status"] == "degraded" and down["cluster"]["redis"] == "down"
    assert ready.status_code == 200
    assert rate_limit(spent)["remaining"] in (18, 19)
    assert again is not None, "A did not use the shared bucket within 5 s"
    assert recovered_in < 5
    assert rate_limit(again)["remaining"] <= 18 + 6
    assert up["status"] == "ok" and up["cluster"]["redis"] == "ok"
    assert a.services.rate_limiter.store.shared
    assert len(ratelimit_log("Redis unreachable")) == 1
    assert len(ratelimit_log("Redis answers again")) == 1


async def test_a_hanging_redis_costs_about_half_a_second(
    make_api, scratch_url, redis_url, redis_prefix
):
    proxy = TcpProxy(*redis_port(redis_url))
    await proxy.start()
    proxy.blackhole()  # connections are accepted and never answered
    try:
        api = await shared_api(
            make_api, scratch_url, proxy.url(redis_url), redis_prefix
        )

        started = time.monotonic()
        answered = (await post(api, FREE)).json()
        first = time.monotonic() - started
        started = time.monotonic()
        local = (await post(api, FREE)).json()  # within the second: not tried again
        second = time.monotonic() - started
        started = time.monotonic()
        health = (await api.http.get("/health")).json()
        checked = time.monotonic() - started
    finally:
        await proxy.stop()

    assert answered["data"] == local["data"] == {"__typename": "Query"}
    assert rate_limit(answered)["remaining"] == 100
    assert 0.4 < first < 1.5
    assert second < 0.3
    assert health["cluster"]["redis"] == "down"
    assert 0.4 < checked < 1.5
