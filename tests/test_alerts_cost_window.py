"""high_cost waits for a full window of the cost meter (ALERT_COST_WINDOW_S), and
the costs feed's costPerHour is the figure it compares; low_cache_hit_rate resolves
without lookups as "no cache lookups in the last 60s"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from monitoring.alerts import (
    HIGH_COST,
    AlertEngine,
    AlertRule,
    default_rules,
    parse_rules,
)
from monitoring.costs import CostMeter
from monitoring.leader import Leadership
from monitoring.monitor import ALERTS, COSTS, Monitor
from monitoring.registry import Registry
from monitoring.sinks import FileSink
from monitoring.snapshot import AlertState
from monitoring.system import PsutilReader
from settings import SettingsError, load_settings
from tests.factories.alerts import Clock, engine_for, lines, tick

WINDOW_S = 600
THRESHOLD = 0.05  # dollars per hour
# The bug report: 41 operations in a new server's first second. Each runs 3
# statements ($0.0001 each) and is one API request ($0.00001): $0.01271 in all.
BURST = 41
BURST_PER_HOUR = 0.07626  # $0.01271 over the 10-minute window, per hour


class Watched:
    """A monitor on real parts (registry, cost meter, alert engine writing
    alert.log, in-process bus) whose cost meter and rules read one clock."""

    def __init__(self, tmp_path: Path, window_s: float = WINDOW_S) -> None:
        self.clock = Clock()
        self.meter = CostMeter(
            environment="development",
            cost_per_db_query=0.0001,
            cost_per_100_requests=0.001,
            rate_window_s=window_s,
            clock=self.clock,
        )
        self.log = tmp_path / "alert.log"
        rules = [AlertRule(HIGH_COST, THRESHOLD, window_s=window_s)]
        self.monitor = Monitor(
            environment="development",
            registry=Registry(),
            costs=self.meter,
            alerts=AlertEngine(
                rules,
                cooldown_seconds=300,
                sink=FileSink("alert.log", self.log),
                clock=self.clock,
            ),
            system=PsutilReader(tmp_path),
            cache_stats=dict,
            worker="w1",
            leader=Leadership("w1"),  # without Redis this worker leads
        )
        self.costs: list[Any] = []
        self.alerts: list[Any] = []
        self.monitor.bus.listen(COSTS, lambda item: self.costs.append(item[0]))
        self.monitor.bus.listen(ALERTS, self.alerts.append)

    def tick_after(self, seconds: float) -> Any:
        """Advance the clock, tick once; the costs snapshot the tick published."""
        self.clock.advance(seconds)
        self.monitor.tick()
        return self.costs[-1]


def test_high_cost_waits_for_a_full_window_then_fires(tmp_path: Path) -> None:
    watched = Watched(tmp_path)
    watched.clock.advance(1)  # the server's first second
    for _ in range(BURST):
        watched.meter.record("Students", 3, 1)

    early = watched.tick_after(0)
    almost = watched.tick_after(WINDOW_S - 2)  # 599 s old
    assert (early.cost_per_hour, early.cost_window_full) == (BURST_PER_HOUR, False)
    assert (almost.cost_per_hour, almost.cost_window_full) == (BURST_PER_HOUR, False)
    assert watched.alerts == []
    assert lines(watched.log) == []

    full = watched.tick_after(1)  # 600 s old: the window is full

    assert (full.cost_per_hour, full.cost_window_full) == (BURST_PER_HOUR, True)
    assert [(e.rule, e.state, e.values) for e in watched.alerts] == [
        (HIGH_COST, AlertState.FIRING, (BURST_PER_HOUR,))
    ]
    assert lines(watched.log) == [
        "2024-01-15T10:40:00 - ALERT: High cost: $0.076260/h (threshold: $0.050000/h)"
    ]


def test_the_feeds_cost_per_hour_is_what_the_rule_compares(tmp_path: Path) -> None:
    watched = Watched(tmp_path, window_s=60)
    watched.tick_after(60)  # a full window of nothing
    spent: list[tuple[float, bool]] = []
    # Spending that moves across the threshold and back: each tick's costs
    # snapshot against each tick's events.
    for statements in (1, 2, 0, 0, 0, 0):
        for _ in range(3):
            watched.meter.record("Students", statements, 1)
        before = len(watched.alerts)
        snapshot = watched.tick_after(20)
        spent.append((snapshot.cost_per_hour, snapshot.cost_window_full))
        for event in watched.alerts[before:]:
            assert event.values == (snapshot.cost_per_hour,)

    # In the last minute: $0.00033 (3 operations of 1 statement) is $0.0198/h,
    # $0.00063 (2 statements each) $0.0378/h, $0.00003 (no statement) $0.0018/h.
    assert spent == [
        (0.0198, True),
        (0.0576, True),  # both: above $0.05/h
        (0.0396, True),  # the first has left the window
        (0.0036, True),
        (0.0036, True),
        (0.0036, True),
    ]
    assert [(e.state, e.values) for e in watched.alerts] == [
        (AlertState.FIRING, (0.0576,)),
        (AlertState.RESOLVED, (0.0396,)),
    ]
    assert lines(watched.log) == [
        "2024-01-15T10:31:40 - ALERT: High cost: $0.057600/h (threshold: $0.050000/h)",
        "2024-01-15T10:32:00 - RESOLVED: High cost: $0.039600/h "
        "(threshold: $0.050000/h)",
    ]


def test_a_rule_that_waits_neither_fires_nor_resolves(tmp_path: Path) -> None:
    engine, clock, log = engine_for(tmp_path, AlertRule(HIGH_COST, THRESHOLD))

    engine.evaluate(tick(cost_per_hour=0.06))
    clock.advance(60)
    # a new leader's meter, younger than its window: judged again once it is full
    waiting = engine.evaluate(tick(cost_per_hour=0.0, cost_window_full=False))
    clock.advance(60)
    resolved = engine.evaluate(tick(cost_per_hour=0.01))

    assert waiting == []
    assert [(e.state, e.values) for e in resolved] == [(AlertState.RESOLVED, (0.01,))]
    assert lines(log) == [
        "2024-01-15T10:30:00 - ALERT: High cost: $0.060000/h (threshold: $0.050000/h)",
        "2024-01-15T10:32:00 - RESOLVED: High cost: $0.010000/h "
        "(threshold: $0.050000/h)",
    ]


def test_alert_cost_window_sets_the_rules_window_and_alert_rules_override_it():
    defaults = default_rules(
        response_time_ms=500, memory_mb=300, cost_per_hour=1.0, cost_window_s=120
    )

    assert [r.window_s for r in defaults if r.id == HIGH_COST] == [120.0]
    (rule,) = [
        r
        for r in parse_rules('[{"id": "high_cost", "window_s": 900}]', defaults)
        if r.id == HIGH_COST
    ]
    assert rule.window_s == 900.0
    with pytest.raises(ValueError) as refused:
        parse_rules('[{"id": "high_cost", "window_s": 3601}]', defaults)
    assert str(refused.value) == ("entry 1 (high_cost): window_s must be at most 3600")


def test_low_cache_hit_rate_resolves_without_lookups_saying_so(tmp_path: Path):
    engine, clock, log = engine_for(tmp_path, AlertRule("low_cache_hit_rate", 70))

    fired = engine.evaluate(tick(lookups=25, cache_hit_rate=0.0))
    clock.advance(60)
    resolved = engine.evaluate(tick(lookups=0, cache_hit_rate=None))

    assert [(e.state, e.values) for e in fired + resolved] == [
        (AlertState.FIRING, (0.0,)),
        (AlertState.RESOLVED, ()),
    ]
    assert resolved[0].message == (
        "Low cache hit rate: no cache lookups in the last 60s (threshold: 70%)"
    )
    assert lines(log) == [
        "2024-01-15T10:30:00 - ALERT: Low cache hit rate: 0% (threshold: 70%)",
        "2024-01-15T10:31:00 - RESOLVED: Low cache hit rate: no cache lookups in "
        "the last 60s (threshold: 70%)",
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "ALERT_COST_WINDOW_S: Input should be greater than 0"),
        ("3601", "ALERT_COST_WINDOW_S: Input should be less than or equal to 3600"),
    ],
)
def test_alert_cost_window_is_above_0_and_at_most_an_hour(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("ALERT_COST_WINDOW_S", value)

    with pytest.raises(SettingsError) as refused:
        load_settings()

    assert str(refused.value) == f"invalid settings: {message}"


COSTS_RATE = "{ costs { totalCost costPerHour costWindowFull } }"


async def test_costs_query_shows_the_rules_figure(
    make_api: Any, scratch_url: str
) -> None:
    # An hour's window: everything this young server spent is in it, so its
    # dollars per hour over the window are exactly the dollars spent.
    api = await make_api(scratch_url, alert_cost_window_s=3600)
    for _ in range(5):
        await api.post("{ students(first: 3) { totalCount } }")

    body = await api.post(COSTS_RATE)

    costs = body["data"]["costs"]
    assert costs["totalCost"] > 0
    assert costs == {
        "totalCost": costs["totalCost"],
        "costPerHour": costs["totalCost"],
        "costWindowFull": False,
    }
    meter = api.app.state.monitor.costs
    assert meter.rate_window_s == 3600.0
    rule = next(r for r in api.app.state.monitor.alerts.rules if r.id == HIGH_COST)
    assert rule.window_s == 3600.0
