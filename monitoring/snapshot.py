"""Immutable values that flow out of the monitor: snapshots, alert events, cost rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum


@dataclass(frozen=True, slots=True)
class ResponseTimes:
    """Milliseconds over the rolling window; None before the first request."""

    avg: float | None
    p50: float | None
    p95: float | None
    p99: float | None


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """What one sampler tick saw. Rates are percentages 0-100 (None without data)."""

    at: datetime  # UTC, timezone-aware
    environment: str
    uptime_seconds: float
    requests_total: int
    requests_per_minute: int
    error_rate: float | None
    response_time_ms: ResponseTimes
    cache_hits: int
    cache_misses: int
    cache_hit_rate: float | None
    db_queries_total: int
    db_queries_per_minute: int
    memory_mb: float
    cpu_percent: float
    disk_free_mb: float
    active_subscriptions: int
    total_cost: float
    current_period_cost: float
    # Live workers merged into it; degraded while a worker of a cluster (REDIS_URL)
    # cannot hear the others and shows itself alone.
    workers: int = 1
    degraded: bool = False


class AlertState(Enum):
    FIRING = "FIRING"
    RESOLVED = "RESOLVED"


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One firing or resolution; `message` is the alert.log text after "ALERT: " or
    "RESOLVED: "."""

    rule: str
    state: AlertState
    message: str
    values: tuple[float, ...]
    threshold: float
    at: datetime  # UTC, timezone-aware


@dataclass(frozen=True, slots=True)
class CostRow:
    """One costs.csv row: the period that starts at `timestamp`."""

    timestamp: datetime  # UTC, timezone-aware: the period's start
    environment: str
    db_queries: int
    api_requests: int
    db_cost: float
    api_cost: float
    total_cost: float


@dataclass(frozen=True, slots=True)
class AlertInputs:
    """What the alert rules read at one tick, beyond the snapshot."""

    snapshot: MetricsSnapshot
    # Durations (ms) of the requests completed since the previous tick, in order.
    recent_response_ms: tuple[float, ...] = ()
    # Lookups in the cache window, requests in the error window (60 s).
    cache_lookups_in_window: int = 0
    requests_in_window: int = 0
    # Dollars per hour over the cost window (ALERT_COST_WINDOW_S, 10 minutes), and
    # whether the cost meter has seen all of it (high_cost is judged only then).
    cost_per_hour: float = 0.0
    cost_window_full: bool = False
