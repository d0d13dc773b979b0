"""Helpers of the test_alerts_* modules: a clock, snapshots, an engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from monitoring.alerts import (
    AlertEngine,
    AlertRule,
    default_rules,
)
from monitoring.sinks import FileSink
from monitoring.snapshot import (
    AlertInputs,
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
    cost_window_full: bool = True,
    **snapshot_overrides: Any,
) -> AlertInputs:
    return AlertInputs(
        snapshot=snapshot(**snapshot_overrides),
        recent_response_ms=durations,
        cache_lookups_in_window=lookups,
        requests_in_window=requests,
        cost_per_hour=cost_per_hour,
        cost_window_full=cost_window_full,
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
