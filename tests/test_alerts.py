"""Alert rules and engine: exact alert.log lines, cooldown, formatting, ALERT_RULES."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from monitoring.alerts import (
    AlertEngine,
    AlertRule,
    default_rules,
    format_rate,
    format_threshold,
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

T0 = datetime(2024, 1, 15, 10, 30, 0, tzinfo=UTC)
DEFAULTS = default_rules(response_time_ms=300, memory_mb=500, cost_per_hour=0.05)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def snapshot(**overrides: Any) -> MetricsSnapshot:
    values: dict[str, Any] = dict(
        at=T0,
        environment="development",
        uptime_seconds=10.0,
        requests_total=0,
        requests_per_minute=0,
        error_rate=None,
        response_time_ms=ResponseTimes(None, None, None, None),
        cache_hits=0,
        cache_misses=0,
        cache_hit_rate=None,
        db_queries_total=0,
        db_queries_per_minute=0,
        memory_mb=100.0,
        cpu_percent=1.0,
        disk_free_mb=10_000.0,
        active_subscriptions=0,
        total_cost=0.0,
        current_period_cost=0.0,
    )
    values.update(overrides)
    return MetricsSnapshot(**values)


def tick(
    *,
    durations: tuple[float, ...] = (),
    lookups: int = 0,
    requests: int = 0,
    cost_per_hour: float = 0.0,
    **snapshot_overrides: Any,
) -> AlertInputs:
    return AlertInputs(
        snapshot=snapshot(**snapshot_overrides),
        recent_response_ms=durations,
        cache_lookups_in_window=lookups,
        requests_in_window=requests,
        cost_per_hour=cost_per_hour,
    )


def engine_for(
    tmp_path: Path, *rules: AlertRule, cooldown: float = 300, clock: Clock | None = None
) -> tuple[AlertEngine, Clock, Path]:
    clock = clock or Clock()
    log_path = tmp_path / "alert.log"
    engine = AlertEngine(
        list(rules),
        cooldown_seconds=cooldown,
        sink=FileSink("alert.log", log_path),
        clock=clock,
    )
    return engine, clock, log_path


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


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


def test_timestamps_are_written_in_utc(tmp_path):
    plus_two = timezone(timedelta(hours=2))
    clock = Clock(datetime(2024, 1, 15, 12, 30, 0, tzinfo=plus_two))
    engine, _, log = engine_for(tmp_path, AlertRule("high_memory", 500), clock=clock)

    (event,) = engine.evaluate(tick(memory_mb=600.0))

    assert event.at == T0
    assert event.at.tzinfo is UTC
    assert lines(log) == [
        "2024-01-15T10:30:00 - ALERT: High memory usage: 600.0MB (threshold: 500MB)"
    ]


@pytest.mark.parametrize(
    ("threshold", "text"),
    [
        (300, "300"),
        (300.0, "300"),
        (7.5, "7.5"),
        (0, "0"),
        (0.0, "0"),
        (0.1, "0.1"),
        (1e-05, "0.00001"),
        (1e16, "10000000000000000"),
        (2.5e-7, "0.00000025"),
    ],
)
def test_thresholds_print_as_given_never_in_scientific_notation(threshold, text):
    assert format_threshold(threshold) == text


@pytest.mark.parametrize(
    ("rate", "text"),
    [
        (65.0, "65"),
        (7.5, "7.5"),
        (64.96, "65"),
        (7.54, "7.5"),
        (0.04, "0"),
        (100.0, "100"),
    ],
)
def test_rates_print_with_one_decimal_without_a_trailing_zero(rate, text):
    assert format_rate(rate) == text


def test_fractional_thresholds_keep_their_digits_in_the_log(tmp_path):
    engine, _, log = engine_for(
        tmp_path,
        AlertRule("high_response_time", 250.5, consecutive=1),
        AlertRule("high_error_rate", 7.25, min_requests=0),
        AlertRule("high_cost", 0.0000125),
    )

    engine.evaluate(
        tick(durations=(251.0,), error_rate=12.0, requests=1, cost_per_hour=1.0)
    )

    assert lines(log) == [
        "2024-01-15T10:30:00 - ALERT: High response time: [251.0] ms "
        "(threshold: 250.5ms)",
        "2024-01-15T10:30:00 - ALERT: High error rate: 12% (threshold: 7.25%)",
        "2024-01-15T10:30:00 - ALERT: High cost: $1.000000/h (threshold: $0.000013/h)",
    ]


def test_default_rules_and_their_parameters():
    rules = default_rules(response_time_ms=500, memory_mb=300, cost_per_hour=1.0)

    assert rules == [
        AlertRule("high_response_time", 500.0, consecutive=3),
        AlertRule("low_cache_hit_rate", 70.0, min_lookups=20),
        AlertRule("high_memory", 300.0),
        AlertRule("high_error_rate", 5.0, min_requests=20, window_s=60.0),
        AlertRule("high_cost", 1.0, window_s=600.0),
    ]
    assert [rule.window_s for rule in rules] == [None, None, None, 60.0, 600.0]
    assert all(rule.enabled for rule in rules)


def test_parse_rules_applies_overrides_over_the_defaults():
    text = """[
        {"id": "high_memory", "threshold": 400},
        {"id": "high_cost", "enabled": false},
        {"id": "high_response_time", "consecutive": 5, "threshold": 250.5},
        {"id": "high_error_rate", "min_requests": 50, "window_s": 120}
    ]"""

    rules = parse_rules(text, DEFAULTS)

    assert rules == [
        AlertRule("high_response_time", 250.5, consecutive=5),
        AlertRule("low_cache_hit_rate", 70.0),
        AlertRule("high_memory", 400.0),
        AlertRule("high_error_rate", 5.0, min_requests=50, window_s=120.0),
        AlertRule("high_cost", 0.05, enabled=False),
    ]


@pytest.mark.parametrize("text", [None, "", "  ", "[]"])
def test_parse_rules_without_overrides_returns_the_defaults(text):
    assert parse_rules(text, DEFAULTS) == DEFAULTS


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[{"id": "slow_disk", "threshold": 1}]',
            "entry 1: unknown rule id 'slow_disk' (known: high_response_time, "
            "low_cache_hit_rate, high_memory, high_error_rate, high_cost)",
        ),
        (
            "[{",
            "invalid JSON: Expecting property name enclosed in double quotes: "
            "line 1 column 3 (char 2)",
        ),
        ("not json", "invalid JSON: Expecting value: line 1 column 1 (char 0)"),
        (
            '{"id": "high_memory"}',
            'expected a JSON list of objects like {"id": ..., ...}',
        ),
        ('["high_memory"]', "entry 1: expected an object, got a string"),
        ('[{"threshold": 1}]', 'entry 1: "id" must be a string'),
        (
            '[{"id": "high_cost"}, {"id": "high_memory", "threshold": -1}]',
            "entry 2 (high_memory): threshold must be >= 0, got -1",
        ),
        (
            '[{"id": "high_memory", "threshold": "400"}]',
            'entry 1 (high_memory): "threshold" must be a number, got a string',
        ),
        (
            '[{"id": "high_memory", "threshold": NaN}]',
            "entry 1 (high_memory): threshold must be a finite number",
        ),
        (
            '[{"id": "high_memory", "enabled": "no"}]',
            'entry 1 (high_memory): "enabled" must be true or false, got a string',
        ),
        (
            '[{"id": "high_response_time", "consecutive": 2.5}]',
            'entry 1 (high_response_time): "consecutive" must be an integer, '
            "got a number",
        ),
        (
            '[{"id": "high_response_time", "consecutive": 0}]',
            "entry 1 (high_response_time): consecutive must be an integer >= 1",
        ),
        (
            '[{"id": "high_error_rate", "window_s": 0}]',
            "entry 1 (high_error_rate): window_s must be a number > 0",
        ),
        (
            '[{"id": "high_memory", "consecutive": 2}]',
            "entry 1 (high_memory): unknown field 'consecutive' "
            "(allowed: enabled, id, threshold)",
        ),
        (
            '[{"id": "high_memory", "treshold": 400}]',
            "entry 1 (high_memory): unknown field 'treshold' "
            "(allowed: enabled, id, threshold)",
        ),
        (
            '[{"id": "high_memory"}, {"id": "high_memory", "threshold": 1}]',
            "entry 2 (high_memory): rule given more than once",
        ),
    ],
)
def test_parse_rules_rejects_bad_input_in_one_line(text, message):
    with pytest.raises(ValueError) as raised:
        parse_rules(text, DEFAULTS)

    assert str(raised.value) == message
    assert "\n" not in message


def test_parse_rules_creates_a_rule_missing_from_the_defaults():
    rules = parse_rules('[{"id": "high_cost", "threshold": 2}]', DEFAULTS[:1])

    assert rules == [DEFAULTS[0], AlertRule("high_cost", 2.0)]
    with pytest.raises(ValueError) as raised:
        parse_rules('[{"id": "high_cost", "enabled": true}]', DEFAULTS[:1])
    assert str(raised.value) == (
        "entry 1 (high_cost): no default for this rule: give a threshold"
    )


def test_the_last_100_events_stay_in_memory(tmp_path):
    engine, clock, log = engine_for(tmp_path, AlertRule("high_memory", 0), cooldown=0)

    for n in range(150):
        engine.evaluate(tick(memory_mb=float(n + 1)))
        clock.advance(1)

    everything = engine.recent(1000)
    assert len(everything) == 100
    assert [event.values for event in everything] == [
        (float(n),) for n in range(51, 151)
    ]
    assert everything[0].at == T0 + timedelta(seconds=50)
    assert engine.recent() == everything[-20:]
    assert [event.values for event in engine.recent(2)] == [(149.0,), (150.0,)]
    assert engine.recent(0) == []
    assert len(lines(log)) == 150


def test_an_unwritable_alert_log_never_raises_and_writing_resumes(tmp_path, caplog):
    log_path = tmp_path / "alert.log"
    log_path.mkdir()  # a directory where the file should be
    sink = FileSink("alert.log", log_path)
    clock = Clock()
    engine = AlertEngine(
        [AlertRule("high_memory", 500)], cooldown_seconds=0, sink=sink, clock=clock
    )

    with caplog.at_level(logging.ERROR, logger="gradepulse.sinks"):
        first = engine.evaluate(tick(memory_mb=600.0))
        clock.advance(1)
        second = engine.evaluate(tick(memory_mb=610.0))

    assert [event.values for event in first + second] == [(600.0,), (610.0,)]
    assert engine.recent() == first + second
    status = sink.status()
    assert (status.ok, status.failures) == (False, 2)
    assert status.last_error is not None
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1

    log_path.rmdir()
    clock.advance(1)
    third = engine.evaluate(tick(memory_mb=620.0))

    assert [event.values for event in third] == [(620.0,)]
    status = sink.status()
    assert (status.ok, status.failures) == (True, 2)
    assert lines(log_path) == [
        "2024-01-15T10:30:02 - ALERT: High memory usage: 620.0MB (threshold: 500MB)"
    ]


def test_an_engine_without_a_sink_still_records_events():
    engine = AlertEngine(
        [AlertRule("high_cost", 0.05)], cooldown_seconds=300, sink=None, clock=Clock()
    )

    events = engine.evaluate(tick(cost_per_hour=0.06))

    assert engine.recent() == events
    assert [event.message for event in events] == [
        "High cost: $0.060000/h (threshold: $0.050000/h)"
    ]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"id": "nope"},
            "unknown rule id 'nope' (known: high_response_time, "
            "low_cache_hit_rate, high_memory, high_error_rate, high_cost)",
        ),
        ({"threshold": -0.5}, "high_memory: threshold must be >= 0, got -0.5"),
        ({"threshold": float("inf")}, "high_memory: threshold must be a finite number"),
    ],
)
def test_alert_rule_validates_itself(changes, message):
    with pytest.raises(ValueError) as raised:
        replace(AlertRule("high_memory", 500), **changes)

    assert str(raised.value) == message


def test_a_slow_run_followed_by_a_fast_request_in_one_tick_still_fires(tmp_path):
    from datetime import UTC, datetime

    from monitoring.alerts import AlertEngine, default_rules
    from monitoring.sinks import FileSink
    from monitoring.snapshot import AlertInputs, MetricsSnapshot, ResponseTimes

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
