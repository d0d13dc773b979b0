"""Monitoring reads and the cost summary write, for operators (admins and teachers)."""

from __future__ import annotations

from monitoring.costs import CostSnapshot
from monitoring.monitor import Monitor
from monitoring.registry import ResolverStats as ResolverStats
from monitoring.snapshot import AlertEvent as AlertEvent
from monitoring.snapshot import AlertState as AlertState
from monitoring.snapshot import CostRow as CostRow
from monitoring.snapshot import MetricsSnapshot as MetricsSnapshot
from resolvers.context import Context
from resolvers.errors import BadUserInput

MAX_ALERTS = 100


class SinkUnavailable(Exception):
    """costs.csv could not be written; the closed row waits in the database."""


def _monitor(ctx: Context) -> Monitor:
    ctx.viewer.require("admin", "teacher")
    monitor: Monitor = ctx.services.monitor
    return monitor


def current_metrics(ctx: Context) -> MetricsSnapshot:
    """A fresh snapshot (the sampler's cadence is for the live feed, not queries)."""
    return _monitor(ctx).snapshot()


def recent_alerts(ctx: Context, last: int = 20) -> list[AlertEvent]:
    monitor = _monitor(ctx)  # the role first: arguments are checked for operators
    if not 1 <= last <= MAX_ALERTS:
        raise BadUserInput(f"last must be between 1 and {MAX_ALERTS}, got {last}")
    events: list[AlertEvent] = monitor.recent_alerts(last)
    return events


def cost_snapshot(ctx: Context) -> CostSnapshot:
    return _monitor(ctx).costs.snapshot()


def slowest_resolvers(ctx: Context, first: int = 10) -> list[ResolverStats]:
    monitor = _monitor(ctx)
    if not 1 <= first <= 100:
        raise BadUserInput(f"first must be between 1 and 100, got {first}")
    return monitor.registry.slowest_resolvers(first)


async def write_cost_summary(ctx: Context) -> CostRow:
    """Close the cluster's open cost period now and append its row to costs.csv."""
    ctx.viewer.require("admin")
    row: CostRow | None = await ctx.services.monitor.costs.close_now()
    if row is None:
        raise SinkUnavailable(
            "costs.csv cannot be written; the period's row is kept and appended "
            "once it can be"
        )
    return row
