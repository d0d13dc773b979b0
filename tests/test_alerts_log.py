"""The alert log: UTC timestamps, number formats, events in memory, unwritable log."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta, timezone

import pytest

from monitoring.alerts import (
    AlertEngine,
    AlertHistory,
    AlertRule,
    format_rate,
    format_threshold,
)
from monitoring.bus import EventBus
from monitoring.monitor import ALERTS
from monitoring.sinks import FileSink
from tests.factories.alerts import T0, Clock, engine_for, lines, tick


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


def test_the_last_100_events_stay_in_memory(tmp_path):
    engine, clock, log = engine_for(tmp_path, AlertRule("high_memory", 0), cooldown=0)
    # As the monitor keeps them: what the engine publishes on `alerts`, heard once.
    bus, history = EventBus(), AlertHistory()
    bus.listen(ALERTS, history.add)

    for n in range(150):
        for event in engine.evaluate(tick(memory_mb=float(n + 1))):
            bus.publish(ALERTS, event)
        clock.advance(1)

    everything = history.recent(1000)
    assert len(everything) == 100
    assert [event.values for event in everything] == [
        (float(n),) for n in range(51, 151)
    ]
    assert everything[0].at == T0 + timedelta(seconds=50)
    assert history.recent() == everything[-20:]
    assert [event.values for event in history.recent(2)] == [(149.0,), (150.0,)]
    assert history.recent(0) == []
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
    assert engine.firing() == {"high_memory": True}
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

    assert engine.firing() == {"high_cost": True}
    assert [event.message for event in events] == [
        "High cost: $0.060000/h (threshold: $0.050000/h)"
    ]
