"""Alert rules firing and resolving: exact alert.log lines, cooldown, rule order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from monitoring.alerts import (
    AlertEngine,
    AlertRule,
    default_rules,
    parse_rules,
)
from monitoring.sinks import FileSink
from monitoring.snapshot import (
    AlertEvent,
    AlertInputs,
    AlertState,
    MetricsSnapshot,
    ResponseTimes,
)
from tests.factories.alerts import (
    DEFAULTS,
    T0,
    engine_for,
    lines,
    tick,
)


def test_high_response_time_fires_after_three_slow_requests_and_resolves(tmp_path):
    engine, clock, log = engine_for(tmp_path, AlertRule("high_response_time", 300))

    assert engine.evaluate(tick(durations=(350.2, 420.1))) == []
    clock.advance(1)
    fired = engine.evaluate(tick(durations=(380.5,)))
    clock.advance(299)
    # No new requests: the last three are still slow, inside the cooldown.
    assert engine.evaluate(tick()) == []
    clock.advance(1)
    resolved = engine.evaluate(tick(durations=(120.04,)))

    assert fired == [
        AlertEvent(
            rule="high_response_time",
            state=AlertState.FIRING,
            message="High response time: [350.2, 420.1, 380.5] ms (threshold: 300ms)",
            values=(350.2, 420.1, 380.5),
            threshold=300.0,
            at=datetime(2024, 1, 15, 10, 30, 1, tzinfo=UTC),
        )
    ]
    assert resolved == [
        AlertEvent(
            rule="high_response_time",
            state=AlertState.RESOLVED,
            message="High response time: [420.1, 380.5, 120.0] ms (threshold: 300ms)",
            values=(420.1, 380.5, 120.0),
            threshold=300.0,
            at=datetime(2024, 1, 15, 10, 35, 1, tzinfo=UTC),
        )
    ]
    assert lines(log) == [
        "2024-01-15T10:30:01 - ALERT: High response time: "
        "[350.2, 420.1, 380.5] ms (threshold: 300ms)",
        "2024-01-15T10:35:01 - RESOLVED: High response time: "
        "[420.1, 380.5, 120.0] ms (threshold: 300ms)",
    ]
    assert engine.firing() == {"high_response_time": False}


def test_high_response_time_needs_consecutive_slow_requests(tmp_path):
    engine, _, log = engine_for(
        tmp_path, AlertRule("high_response_time", 300, consecutive=2)
    )

    assert engine.evaluate(tick(durations=(400.0, 100.0, 400.0))) == []
    assert engine.evaluate(tick(durations=(300.0,))) == []  # equal is not above
    events = engine.evaluate(tick(durations=(301.0, 302.0)))

    assert [event.values for event in events] == [(301.0, 302.0)]
    assert lines(log) == [
        "2024-01-15T10:30:00 - ALERT: High response time: "
        "[301.0, 302.0] ms (threshold: 300ms)"
    ]


def test_low_cache_hit_rate_fires_once_the_window_holds_enough_lookups(tmp_path):
    engine, clock, log = engine_for(tmp_path, AlertRule("low_cache_hit_rate", 70))

    assert engine.evaluate(tick(lookups=19, cache_hit_rate=10.0)) == []
    clock.advance(5)
    fired = engine.evaluate(tick(lookups=20, cache_hit_rate=65.0))
    clock.advance(5)
    resolved = engine.evaluate(tick(lookups=40, cache_hit_rate=72.34))

    assert [(e.state, e.values, e.threshold) for e in fired + resolved] == [
        (AlertState.FIRING, (65.0,), 70.0),
        (AlertState.RESOLVED, (72.3,), 70.0),
    ]
    assert lines(log) == [
        "2024-01-15T10:30:05 - ALERT: Low cache hit rate: 65% (threshold: 70%)",
        "2024-01-15T10:30:10 - RESOLVED: Low cache hit rate: 72.3% (threshold: 70%)",
    ]


def test_resolution_with_an_unknown_value_shows_the_latest_known_one(tmp_path):
    engine, clock, log = engine_for(
        tmp_path,
        AlertRule("low_cache_hit_rate", 70),
        AlertRule("high_error_rate", 5),
    )

    engine.evaluate(
        tick(lookups=30, cache_hit_rate=61.26, requests=25, error_rate=8.04)
    )
    clock.advance(60)
    # The windows fell below their minimums: the values are unknown now.
    events = engine.evaluate(
        tick(lookups=3, cache_hit_rate=100.0, requests=2, error_rate=None)
    )

    assert [(e.rule, e.state, e.values) for e in events] == [
        ("low_cache_hit_rate", AlertState.RESOLVED, (61.3,)),
        ("high_error_rate", AlertState.RESOLVED, (8.0,)),
    ]
    assert lines(log) == [
        "2024-01-15T10:30:00 - ALERT: Low cache hit rate: 61.3% (threshold: 70%)",
        "2024-01-15T10:30:00 - ALERT: High error rate: 8% (threshold: 5%)",
        "2024-01-15T10:31:00 - RESOLVED: Low cache hit rate: 61.3% (threshold: 70%)",
        "2024-01-15T10:31:00 - RESOLVED: High error rate: 8% (threshold: 5%)",
    ]


def test_high_memory_fires_and_resolves(tmp_path):
    engine, clock, log = engine_for(tmp_path, AlertRule("high_memory", 500))

    assert engine.evaluate(tick(memory_mb=500.0)) == []
    clock.advance(10)
    fired = engine.evaluate(tick(memory_mb=520.34))
    clock.advance(10)
    resolved = engine.evaluate(tick(memory_mb=480.06))

    assert [(e.state, e.values, e.message) for e in fired + resolved] == [
        (
            AlertState.FIRING,
            (520.3,),
            "High memory usage: 520.3MB (threshold: 500MB)",
        ),
        (
            AlertState.RESOLVED,
            (480.1,),
            "High memory usage: 480.1MB (threshold: 500MB)",
        ),
    ]
    assert lines(log) == [
        "2024-01-15T10:30:10 - ALERT: High memory usage: 520.3MB (threshold: 500MB)",
        "2024-01-15T10:30:20 - RESOLVED: High memory usage: 480.1MB (threshold: 500MB)",
    ]


def test_high_error_rate_needs_enough_requests(tmp_path):
    engine, clock, log = engine_for(tmp_path, AlertRule("high_error_rate", 5))

    assert engine.evaluate(tick(requests=19, error_rate=50.0)) == []
    clock.advance(1)
    fired = engine.evaluate(tick(requests=20, error_rate=7.5))
    clock.advance(1)
    resolved = engine.evaluate(tick(requests=40, error_rate=2.0))

    assert [(e.state, e.values) for e in fired + resolved] == [
        (AlertState.FIRING, (7.5,)),
        (AlertState.RESOLVED, (2.0,)),
    ]
    assert lines(log) == [
        "2024-01-15T10:30:01 - ALERT: High error rate: 7.5% (threshold: 5%)",
        "2024-01-15T10:30:02 - RESOLVED: High error rate: 2% (threshold: 5%)",
    ]


def test_high_cost_fires_and_resolves(tmp_path):
    engine, clock, log = engine_for(tmp_path, AlertRule("high_cost", 0.05))

    assert engine.evaluate(tick(cost_per_hour=0.05)) == []
    clock.advance(600)
    fired = engine.evaluate(tick(cost_per_hour=0.0523))
    clock.advance(600)
    resolved = engine.evaluate(tick(cost_per_hour=0.0100004))

    assert [(e.state, e.values, e.threshold) for e in fired + resolved] == [
        (AlertState.FIRING, (0.0523,), 0.05),
        (AlertState.RESOLVED, (0.01,), 0.05),
    ]
    assert lines(log) == [
        "2024-01-15T10:40:00 - ALERT: High cost: $0.052300/h (threshold: $0.050000/h)",
        "2024-01-15T10:50:00 - RESOLVED: High cost: $0.010000/h "
        "(threshold: $0.050000/h)",
    ]


def test_a_persisting_condition_repeats_only_after_the_cooldown(tmp_path):
    engine, clock, log = engine_for(
        tmp_path, AlertRule("high_memory", 500), cooldown=300
    )

    assert len(engine.evaluate(tick(memory_mb=600.0))) == 1
    clock.advance(299)
    assert engine.evaluate(tick(memory_mb=610.0)) == []
    clock.advance(1)
    repeated = engine.evaluate(tick(memory_mb=620.0))
    clock.advance(299)
    assert engine.evaluate(tick(memory_mb=630.0)) == []

    assert [(e.state, e.values, e.at) for e in repeated] == [
        (AlertState.FIRING, (620.0,), T0 + timedelta(seconds=300))
    ]
    assert lines(log) == [
        "2024-01-15T10:30:00 - ALERT: High memory usage: 600.0MB (threshold: 500MB)",
        "2024-01-15T10:35:00 - ALERT: High memory usage: 620.0MB (threshold: 500MB)",
    ]
    assert engine.firing() == {"high_memory": True}


def test_a_condition_that_returns_after_resolving_fires_at_once(tmp_path):
    engine, clock, log = engine_for(
        tmp_path, AlertRule("high_memory", 500), cooldown=300
    )

    engine.evaluate(tick(memory_mb=600.0))
    clock.advance(1)
    engine.evaluate(tick(memory_mb=400.0))
    clock.advance(1)
    engine.evaluate(tick(memory_mb=601.0))

    assert lines(log) == [
        "2024-01-15T10:30:00 - ALERT: High memory usage: 600.0MB (threshold: 500MB)",
        "2024-01-15T10:30:01 - RESOLVED: High memory usage: 400.0MB (threshold: 500MB)",
        "2024-01-15T10:30:02 - ALERT: High memory usage: 601.0MB (threshold: 500MB)",
    ]


def test_a_threshold_of_zero_is_valid(tmp_path):
    engine, clock, log = engine_for(
        tmp_path, AlertRule("high_cost", 0), AlertRule("high_memory", 0)
    )

    assert engine.evaluate(tick(cost_per_hour=0.0, memory_mb=0.0)) == []
    clock.advance(1)
    events = engine.evaluate(tick(cost_per_hour=0.000001, memory_mb=0.1))

    assert [(e.rule, e.threshold) for e in events] == [
        ("high_cost", 0.0),
        ("high_memory", 0.0),
    ]
    assert lines(log) == [
        "2024-01-15T10:30:01 - ALERT: High cost: $0.000001/h (threshold: $0.000000/h)",
        "2024-01-15T10:30:01 - ALERT: High memory usage: 0.1MB (threshold: 0MB)",
    ]
    assert parse_rules('[{"id": "high_memory", "threshold": 0}]', DEFAULTS)[
        2
    ] == AlertRule("high_memory", 0.0)


def test_all_rules_fire_in_one_tick_in_rule_order(tmp_path):
    rules = default_rules(response_time_ms=300, memory_mb=500, cost_per_hour=0.05)
    engine, _, log = engine_for(tmp_path, *rules)

    events = engine.evaluate(
        tick(
            durations=(350.2, 420.1, 380.5),
            lookups=20,
            cache_hit_rate=65.0,
            memory_mb=520.3,
            requests=20,
            error_rate=7.5,
            cost_per_hour=0.0523,
        )
    )

    assert [event.rule for event in events] == [
        "high_response_time",
        "low_cache_hit_rate",
        "high_memory",
        "high_error_rate",
        "high_cost",
    ]
    assert lines(log) == [
        "2024-01-15T10:30:00 - ALERT: High response time: "
        "[350.2, 420.1, 380.5] ms (threshold: 300ms)",
        "2024-01-15T10:30:00 - ALERT: Low cache hit rate: 65% (threshold: 70%)",
        "2024-01-15T10:30:00 - ALERT: High memory usage: 520.3MB (threshold: 500MB)",
        "2024-01-15T10:30:00 - ALERT: High error rate: 7.5% (threshold: 5%)",
        "2024-01-15T10:30:00 - ALERT: High cost: $0.052300/h (threshold: $0.050000/h)",
    ]
    assert engine.firing() == {rule.id: True for rule in rules}


def test_a_disabled_rule_never_fires_and_is_not_listed(tmp_path):
    engine, _, log = engine_for(
        tmp_path,
        AlertRule("high_memory", 500, enabled=False),
        AlertRule("high_cost", 0.05),
    )

    assert engine.evaluate(tick(memory_mb=900.0)) == []
    assert engine.firing() == {"high_cost": False}
    assert lines(log) == []


def test_a_slow_run_followed_by_a_fast_request_in_one_tick_still_fires(tmp_path):
    from datetime import UTC, datetime

    from monitoring.alerts import default_rules

    sink = FileSink("alertLog", tmp_path / "alert.log")
    clock = lambda: datetime(2024, 1, 15, 10, 30, tzinfo=UTC)  # noqa: E731
    rules = default_rules(response_time_ms=300, memory_mb=10_000, cost_per_hour=1)
    engine = AlertEngine(rules, cooldown_seconds=300, sink=sink, clock=clock)
    snapshot = MetricsSnapshot(
        at=clock(), environment="development", uptime_seconds=1, requests_total=4,
        requests_per_minute=4, error_rate=0.0,
        response_time_ms=ResponseTimes(None, None, None, None), cache_hits=0,
        cache_misses=0, cache_hit_rate=None, db_queries_total=0, db_queries_per_minute=0,
        memory_mb=50.0, cpu_percent=0.0, disk_free_mb=1000.0, active_subscriptions=0,
        total_cost=0.0, current_period_cost=0.0,
    )  # fmt: skip

    engine.evaluate(
        AlertInputs(snapshot=snapshot, recent_response_ms=(350.2, 420.1, 380.5, 12.0))
    )

    assert (tmp_path / "alert.log").read_text().splitlines() == [
        "2024-01-15T10:30:00 - ALERT: High response time: [350.2, 420.1, 380.5] ms "
        "(threshold: 300ms)"
    ]
