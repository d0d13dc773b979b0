"""The leader lock (<REDIS_PREFIX>leader, TEST_REDIS_URL): one leader among the workers
of a cluster, taken over within a lease when it stops, never extended or freed by
another worker; alerts judged by the leader alone, written once to alert.log, their
state handed over with the lease; Redis down ends a lease by the worker's own clock."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from app import connect_redis
from monitoring.alerts import AlertEngine, AlertRule
from monitoring.leader import Leadership, Role
from monitoring.snapshot import AlertEvent, AlertState
from settings import Settings
from tests.factories import free_port
from tests.factories.alerts import T0, Clock, tick
from tests.factories.proxy import TcpProxy
from tests.test_health_cluster import worker

TICK_MS = 100
LEASE_S = 1.0  # three ticks of 100 ms, at least a second
WAIT_S = 5.0  # a bound on every wait, never a duration a test expects
# Only high_memory may fire: the test process is always above 1 MB.
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


def clustered(redis_url: str, prefix: str, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "redis_prefix": prefix,
        "sample_interval_ms": TICK_MS,
        "alert_rules": ONLY_MEMORY,
        "alert_memory_mb": 100_000,
    }
    values.update(overrides)
    return values


async def until(condition: Callable[[], bool | Awaitable[bool]]) -> float:
    """Poll until `condition` holds; the seconds it took (AssertionError past WAIT_S)."""
    started = time.monotonic()
    while True:
        held = condition()
        if not isinstance(held, bool):
            held = await held
        if held:
            return time.monotonic() - started
        if time.monotonic() - started > WAIT_S:
            raise AssertionError(f"condition not met within {WAIT_S} s")
        await asyncio.sleep(0.01)


def leaders(*apis: Any) -> list[int]:
    return [n for n, api in enumerate(apis) if api.app.state.monitor.leader.is_leader]


def alert_lines() -> list[str]:
    path = Path("alert.log")
    return path.read_text().splitlines() if path.exists() else []


async def test_two_workers_have_exactly_one_leader(
    make_api, scratch_url, redis_url, redis_prefix
):
    first = await make_api(scratch_url, **clustered(redis_url, redis_prefix))
    second = await make_api(scratch_url, **clustered(redis_url, redis_prefix))

    await until(lambda: len(leaders(first, second)) == 1)
    seen = set()
    for _ in range(30):  # 3 leases' worth of ticks: never two, never a change
        now = leaders(first, second)
        assert len(now) == 1
        seen.add(now[0])
        await asyncio.sleep(TICK_MS / 1000)

    assert len(seen) == 1
    holder = (first, second)[seen.pop()].app.state.cluster.worker.id
    client = Redis.from_url(redis_url)
    try:
        assert await client.get(f"{redis_prefix}leader") == holder.encode()
        assert 0 < await client.pttl(f"{redis_prefix}leader") <= LEASE_S * 1000
    finally:
        await client.aclose()


async def test_a_leader_that_stops_cleanly_is_replaced_at_once(
    make_api, scratch_url, redis_url, redis_prefix
):
    async with worker(scratch_url, **clustered(redis_url, redis_prefix)) as (app, _):
        await until(lambda: app.state.monitor.leader.is_leader)
        staying = await make_api(scratch_url, **clustered(redis_url, redis_prefix))
        await asyncio.sleep(3 * TICK_MS / 1000)
        assert leaders(staying) == []
    # The leader's lifespan ended: it freed the lease.
    took = await until(lambda: leaders(staying) == [0])

    assert took < LEASE_S  # a tick or two, not a lease


async def test_a_leader_that_dies_is_replaced_within_a_lease(
    make_api, scratch_url, redis_url, redis_prefix
):
    async with worker(scratch_url, **clustered(redis_url, redis_prefix)) as (app, _):
        await until(lambda: app.state.monitor.leader.is_leader)
        staying = await make_api(scratch_url, **clustered(redis_url, redis_prefix))
        # Its sampler stops without a goodbye, as a killed process's would.
        await app.state.monitor.stop()
        stopped = time.monotonic()
        await until(lambda: leaders(staying) == [0])
        took = time.monotonic() - stopped
        # The dead one's lease ran out by its own clock no later than in Redis.
        assert not app.state.monitor.leader.is_leader

    assert took <= LEASE_S + 4 * TICK_MS / 1000


async def test_a_worker_never_extends_or_frees_another_workers_lease(
    redis_url, redis_prefix
):
    client = Redis.from_url(redis_url)
    key = f"{redis_prefix}leader"
    mine = Leadership("mine", client, prefix=redis_prefix, interval_s=0.1)
    try:
        await mine.renew()
        assert mine.is_leader
        # The lease ran out while this worker stalled, and another took it.
        await client.set(key, "other", px=700)
        await mine.renew()
        assert not mine.is_leader
        assert mine.role is Role.FOLLOW
        assert await client.get(key) == b"other"
        assert await client.pttl(key) <= 700
        await mine.release()
        assert await client.get(key) == b"other"
    finally:
        await client.aclose()


async def test_a_worker_whose_take_landed_but_whose_answer_was_lost_leads_next_tick(
    redis_url, redis_prefix
):
    client = Redis.from_url(redis_url)
    key = f"{redis_prefix}leader"
    mine = Leadership("mine", client, prefix=redis_prefix, interval_s=0.1)
    try:
        # Its earlier take reached Redis, but the answer came after the timeout:
        # the key is its own while it believes it holds nothing.
        await client.set(key, "mine", px=700)
        assert not mine.is_leader

        await mine.renew()

        assert mine.is_leader
        assert mine.role is Role.LEAD
        assert await client.get(key) == b"mine"
        assert await client.pttl(key) > 700  # extended to a whole lease
        await mine.release()
        assert await client.get(key) is None
    finally:
        await client.aclose()


async def test_one_alert_log_line_per_alert_with_two_workers(
    make_api, scratch_url, redis_url, redis_prefix
):
    firing = clustered(redis_url, redis_prefix, alert_memory_mb=1)
    first = await make_api(scratch_url, **firing)
    second = await make_api(scratch_url, **firing)
    await until(lambda: len(alert_lines()) == 1)
    await asyncio.sleep(10 * TICK_MS / 1000)  # more ticks on both workers

    (line,) = alert_lines()
    assert " - ALERT: High memory usage: " in line
    assert line.endswith("MB (threshold: 1MB)")
    (leader,) = leaders(first, second)
    events = (first, second)[leader].app.state.monitor.recent_alerts()
    assert [(e.rule, e.state) for e in events] == [("high_memory", AlertState.FIRING)]
    # The follower judged nothing of its own, and shows the leader's events.
    follower = (first, second)[1 - leader].app.state.monitor
    assert follower.alerts.firing() == {"high_memory": False}
    await until(lambda: follower.recent_alerts() == events)
    assert follower.alerts_firing() == {"high_memory": True}


async def test_a_new_leader_does_not_fire_again_what_is_firing(
    make_api, scratch_url, redis_url, redis_prefix
):
    firing = clustered(redis_url, redis_prefix, alert_memory_mb=1)
    async with worker(scratch_url, **firing) as (app, _):
        await until(lambda: app.state.monitor.leader.is_leader)
        await until(lambda: len(alert_lines()) == 1)
        staying = await make_api(scratch_url, **firing)
    # The leader left; the one staying takes over the firing rule.
    await until(lambda: leaders(staying) == [0])
    await asyncio.sleep(10 * TICK_MS / 1000)

    assert len(alert_lines()) == 1
    assert staying.app.state.monitor.alerts.firing() == {"high_memory": True}


async def test_a_new_leader_resolves_what_the_old_one_fired(
    make_api, scratch_url, redis_url, redis_prefix
):
    # The worker staying has a threshold the process stays under: once it leads,
    # the rule the other fired has cleared.
    firing = clustered(redis_url, redis_prefix, alert_memory_mb=1)
    async with worker(scratch_url, **firing) as (app, _):
        await until(lambda: app.state.monitor.leader.is_leader)
        await until(lambda: len(alert_lines()) == 1)
        staying = await make_api(scratch_url, **clustered(redis_url, redis_prefix))
    await until(lambda: leaders(staying) == [0])
    await until(lambda: len(alert_lines()) == 2)

    fired, resolved = alert_lines()
    assert " - ALERT: High memory usage: " in fired
    assert " - RESOLVED: High memory usage: " in resolved
    assert resolved.endswith("MB (threshold: 100000MB)")
    assert staying.app.state.monitor.alerts.firing() == {"high_memory": False}


async def test_alerts_published_by_the_leader_reach_a_followers_alerts_query(
    make_api, scratch_url, redis_url, redis_prefix
):
    follower = await make_api(scratch_url, **clustered(redis_url, redis_prefix))
    # The lease is someone else's: this worker follows.
    client = Redis.from_url(redis_url)
    try:
        await client.set(f"{redis_prefix}leader", "another worker", px=60_000)
        await until(lambda: follower.app.state.monitor.leader.role is Role.FOLLOW)
        event = AlertEvent(
            rule="high_memory",
            state=AlertState.FIRING,
            message="High memory usage: 520.3MB (threshold: 500MB)",
            values=(520.3,),
            threshold=500.0,
            at=T0,
        )
        # As the cluster's bus delivers the leader's event on every worker.
        follower.app.state.monitor.bus.publish("alerts", event)
        await asyncio.sleep(0)
        body = await follower.post("{ alerts(last: 5) { rule state message at } }")
        metrics = (await follower.http.get("/metrics")).text
    finally:
        await client.aclose()

    assert body["data"]["alerts"] == [
        {
            "rule": "high_memory",
            "state": "FIRING",
            "message": "High memory usage: 520.3MB (threshold: 500MB)",
            "at": "2024-01-15T10:30:00Z",
        }
    ]
    assert 'alerts_firing{rule="high_memory"} 1.0' in metrics.splitlines()
    assert alert_lines() == []


async def test_with_redis_down_a_lease_runs_out_by_the_workers_own_clock(
    redis_url, redis_prefix
):
    host, port = redis_url.split("//")[1].split("/")[0].split(":")
    proxy = TcpProxy(host, int(port))
    await proxy.start()
    client = connect_redis(
        Settings(_env_file=None, redis_url=proxy.url(redis_url))  # type: ignore[call-arg]
    )
    assert client is not None
    now = [100.0]
    engine = AlertEngine(
        [AlertRule("high_memory", 500)], cooldown_seconds=300, sink=None
    )
    leadership = Leadership(
        "mine",
        client,
        prefix=redis_prefix,
        interval_s=TICK_MS / 1000,
        rules=engine,
        clock=lambda: now[0],
    )
    try:
        await leadership.renew()
        assert leadership.role is Role.LEAD
        await proxy.stop()
        now[0] += 0.5
        await leadership.renew()  # fails: the lease stands until it runs out
        assert leadership.role is Role.LEAD
        now[0] += 0.5
        assert leadership.role is Role.ALONE  # nobody can know the leader now
        await proxy.start()
        await leadership.renew()  # its lease ran out in Redis too: taken again
        assert leadership.role is Role.LEAD
    finally:
        await proxy.stop()
        await client.aclose()


async def test_a_new_leader_takes_the_rules_state_from_redis(redis_url, redis_prefix):
    client = Redis.from_url(redis_url)
    clock = Clock()
    engines = [
        AlertEngine(
            [AlertRule("high_memory", 500)],
            cooldown_seconds=300,
            sink=None,
            clock=clock,
        )
        for _ in range(2)
    ]
    old, new = (
        Leadership(name, client, prefix=redis_prefix, interval_s=0.1, rules=engine)
        for name, engine in zip(("old", "new"), engines, strict=True)
    )
    try:
        await old.renew()
        assert engines[0].evaluate(tick(memory_mb=600.0)) != []
        old.rules_changed()
        await old.release()  # waits for the state to be written
        await new.renew()
        assert new.is_leader
        clock.advance(60)
        again = engines[1].evaluate(tick(memory_mb=610.0))
        clock.advance(1)
        resolved = engines[1].evaluate(tick(memory_mb=400.0))
    finally:
        await client.aclose()

    assert again == []  # firing, inside the cooldown the old leader started
    assert [(e.state, e.values) for e in resolved] == [(AlertState.RESOLVED, (400.0,))]


async def test_with_redis_down_a_worker_judges_for_its_own_feed_only(
    make_api, scratch_url
):
    # Nothing listens there: no lease, nobody can know the leader.
    dead = f"redis://127.0.0.1:{free_port()}/0"
    api = await make_api(
        scratch_url,
        redis_url=dead,
        sample_interval_ms=TICK_MS,
        alert_rules=ONLY_MEMORY,
        alert_memory_mb=1,
    )
    monitor = api.app.state.monitor

    await until(lambda: monitor.recent_alerts() != [])

    assert monitor.leader.role is Role.ALONE
    assert [(e.rule, e.state) for e in monitor.recent_alerts()] == [
        ("high_memory", AlertState.FIRING)
    ]
    assert alert_lines() == []  # alert.log waits for a leader


def test_a_malformed_rules_state_changes_nothing():
    engine = AlertEngine(
        [AlertRule("high_memory", 500)], cooldown_seconds=300, sink=None, clock=Clock()
    )
    engine.evaluate(tick(memory_mb=600.0))
    kept = engine.export_state()

    for broken in (
        {},
        {"version": 2, "rules": {}},
        {"version": 1, "rules": {"high_memory": {"firing": True}}},
        {
            "version": 1,
            "rules": {
                "high_memory": {
                    **kept["rules"]["high_memory"],
                    "last_fired": "2024-01-15T10:30:00",
                }
            },
        },
    ):
        try:
            engine.import_state(broken)
        except (ValueError, KeyError):
            pass
        else:
            raise AssertionError(f"accepted {broken}")
        assert engine.export_state() == kept


def test_rules_the_state_does_not_know_start_clear():
    clock = Clock()
    engine = AlertEngine(
        [AlertRule("high_memory", 500), AlertRule("high_cost", 0.05)],
        cooldown_seconds=300,
        sink=None,
        clock=clock,
    )
    engine.evaluate(tick(memory_mb=600.0, cost_per_hour=1.0))

    engine.import_state({"version": 1, "rules": {}})

    assert engine.firing() == {"high_memory": False, "high_cost": False}
    events = engine.evaluate(tick(memory_mb=600.0, cost_per_hour=1.0))
    assert [(e.rule, e.state) for e in events] == [
        ("high_memory", AlertState.FIRING),
        ("high_cost", AlertState.FIRING),
    ]
