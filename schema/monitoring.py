"""Monitoring: metrics, alert, cost and timing types and their root fields."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import strawberry

from resolvers import feed, live
from resolvers.feed import AlertState
from schema.common import ctx, mapped
from schema.errors import Error

T = TypeVar("T")
R = TypeVar("R")

# Monitoring reads are nullable so that a refused one is null beside the rest.
OPERATOR_READS = " Admins and teachers only: FORBIDDEN (and null) for students."
OPERATOR_STREAMS = " Admins and teachers only: FORBIDDEN for students."

IntervalMs = Annotated[
    int,
    strawberry.argument(
        description="Milliseconds between two items, 1000 to 60000; each goes out at "
        "the first sampler tick at or after its time."
    ),
]

# The monitor's enum is the GraphQL enum itself.
strawberry.enum(AlertState, description="FIRING or RESOLVED.")


def money(value: float) -> float:
    """Dollars, rounded to 6 decimals wherever they are shown."""
    return round(value, 6)


@strawberry.type(
    description="Response times in milliseconds over the last 1,000 operations "
    "of each live worker."
)
class ResponseTimes:
    avg: float | None = strawberry.field(description="Mean.")
    p50: float | None = strawberry.field(description="Median.")
    p95: float | None = strawberry.field(description="95th percentile.")
    p99: float | None = strawberry.field(description="99th percentile.")


@strawberry.type(
    description="What the monitor saw at one moment, for the whole cluster: "
    "counters, rates, memory and CPU summed over the live workers, response times "
    "over their merged windows; costs as the meter keeps them. Rates are "
    "percentages 0-100."
)
class MetricsSnapshot:
    at: datetime = strawberry.field(description="When (UTC).")
    environment: str = strawberry.field(description="The settings profile.")
    uptime_seconds: float = strawberry.field(description="Seconds since start.")
    requests_total: int = strawberry.field(description="GraphQL operations over HTTP.")
    requests_per_minute: int = strawberry.field(description="Over the last 60 s.")
    error_rate: float | None = strawberry.field(
        description="Operations failing with a server error, over the last 60 s."
    )
    response_time_ms: ResponseTimes = strawberry.field(
        description="Operation durations."
    )
    cache_hits: int = strawberry.field(description="Shared cache hits since start.")
    cache_misses: int = strawberry.field(description="Shared cache misses since start.")
    cache_hit_rate: float | None = strawberry.field(description="Over the last 60 s.")
    db_queries_total: int = strawberry.field(description="SQL statements since start.")
    db_queries_per_minute: int = strawberry.field(description="Over the last 60 s.")
    memory_mb: float = strawberry.field(
        description="Resident memory, MB of 2^20 bytes."
    )
    cpu_percent: float = strawberry.field(
        description="Process CPU since the last sample."
    )
    disk_free_mb: float = strawberry.field(description="Free disk where the files are.")
    active_subscriptions: int = strawberry.field(
        description="Subscriptions being served."
    )
    total_cost: float = strawberry.field(description="Dollars since the meter started.")
    current_period_cost: float = strawberry.field(
        description="Dollars in the open period."
    )
    workers: int = strawberry.field(
        description="Live workers merged into these figures (1 without a cluster)."
    )
    degraded: bool = strawberry.field(
        description="True while this worker of a cluster cannot hear the others "
        "(Redis down or its subscription not connected) and shows itself alone."
    )

    @classmethod
    def from_model(cls, s: feed.MetricsSnapshot) -> MetricsSnapshot:
        times = s.response_time_ms
        return cls(
            at=s.at,
            environment=s.environment,
            uptime_seconds=s.uptime_seconds,
            requests_total=s.requests_total,
            requests_per_minute=s.requests_per_minute,
            error_rate=s.error_rate,
            response_time_ms=ResponseTimes(
                avg=times.avg, p50=times.p50, p95=times.p95, p99=times.p99
            ),
            cache_hits=s.cache_hits,
            cache_misses=s.cache_misses,
            cache_hit_rate=s.cache_hit_rate,
            db_queries_total=s.db_queries_total,
            db_queries_per_minute=s.db_queries_per_minute,
            memory_mb=round(s.memory_mb, 3),
            cpu_percent=s.cpu_percent,
            disk_free_mb=round(s.disk_free_mb, 3),
            active_subscriptions=s.active_subscriptions,
            total_cost=money(s.total_cost),
            current_period_cost=money(s.current_period_cost),
            workers=s.workers,
            degraded=s.degraded,
        )


@strawberry.type(
    description="An alert firing or resolving; the text of its alert.log line."
)
class AlertEvent:
    rule: str = strawberry.field(description="The rule id, e.g. high_response_time.")
    state: AlertState = strawberry.field(description="FIRING or RESOLVED.")
    message: str = strawberry.field(
        description='The text after "ALERT: " or "RESOLVED: ".'
    )
    values: list[float] = strawberry.field(description="The values the message shows.")
    threshold: float = strawberry.field(description="The rule's threshold.")
    at: datetime = strawberry.field(description="When (UTC).")

    @classmethod
    def from_model(cls, event: feed.AlertEvent) -> AlertEvent:
        return cls(
            rule=event.rule,
            state=event.state,
            message=event.message,
            values=list(event.values),
            threshold=event.threshold,
            at=event.at,
        )


@strawberry.type(
    description="One costs.csv row: the period that starts at `timestamp`."
)
class CostRow:
    timestamp: datetime = strawberry.field(description="The period's start (UTC).")
    environment: str = strawberry.field(description="The settings profile.")
    db_queries: int = strawberry.field(description="SQL statements in the period.")
    api_requests: int = strawberry.field(description="GraphQL operations over HTTP.")
    db_cost: float = strawberry.field(description="Dollars.")
    api_cost: float = strawberry.field(description="Dollars.")
    total_cost: float = strawberry.field(description="Dollars.")

    @classmethod
    def from_model(cls, row: feed.CostRow) -> CostRow:
        return cls(
            timestamp=row.timestamp,
            environment=row.environment,
            db_queries=row.db_queries,
            api_requests=row.api_requests,
            db_cost=money(row.db_cost),
            api_cost=money(row.api_cost),
            total_cost=money(row.total_cost),
        )


@strawberry.type(description="What one operation name has cost so far.")
class OperationCost:
    operation: str = strawberry.field(
        description="Operation name ('anonymous' without)."
    )
    count: int = strawberry.field(description="How many times it ran.")
    total_cost: float = strawberry.field(description="Dollars.")


@strawberry.type(
    description="Running costs since the meter started, and the open period."
)
class CostSnapshot:
    total_cost: float = strawberry.field(description="Dollars.")
    db_cost: float = strawberry.field(description="Dollars.")
    api_cost: float = strawberry.field(description="Dollars.")
    db_queries: int = strawberry.field(description="SQL statements charged.")
    api_requests: int = strawberry.field(description="GraphQL operations over HTTP.")
    current_period: CostRow = strawberry.field(description="The open period so far.")
    top_operations: list[OperationCost] = strawberry.field(
        description="The 10 costliest."
    )
    cost_per_hour: float = strawberry.field(
        description="Dollars per hour spent over the last ALERT_COST_WINDOW_S "
        "(10 minutes): the figure the high_cost alert compares with "
        "ALERT_COST_PER_HOUR. Never extrapolated: a server younger than the window "
        "shows what it spent so far, spread over the whole window."
    )
    cost_window_full: bool = strawberry.field(
        description="Whether the meter has seen the whole window: high_cost judges "
        "costPerHour only then (it neither fires nor resolves before)."
    )

    @classmethod
    def from_model(cls, s: Any) -> CostSnapshot:
        return cls(
            total_cost=money(s.total_cost),
            db_cost=money(s.db_cost),
            api_cost=money(s.api_cost),
            db_queries=s.db_queries,
            api_requests=s.api_requests,
            current_period=CostRow.from_model(s.current_period),
            top_operations=[
                OperationCost(
                    operation=o.operation, count=o.count, total_cost=money(o.total_cost)
                )
                for o in s.top_operations
            ],
            cost_per_hour=money(s.cost_per_hour),
            cost_window_full=s.cost_window_full,
        )


@strawberry.type(
    description="Timing of one resolver, 'Type.field', over its last 500 calls."
)
class ResolverTiming:
    field: str = strawberry.field(description="Type.field")
    count: int = strawberry.field(description="Calls since start.")
    avg_ms: float = strawberry.field(description="Mean, milliseconds.")
    p95_ms: float = strawberry.field(description="95th percentile, milliseconds.")
    p99_ms: float = strawberry.field(description="99th percentile, milliseconds.")

    @classmethod
    def from_model(cls, s: feed.ResolverStats) -> ResolverTiming:
        return cls(
            field=s.field,
            count=s.count,
            avg_ms=s.avg_ms,
            p95_ms=s.p95_ms,
            p99_ms=s.p99_ms,
        )


@strawberry.type(
    description="The row was appended to costs.csv; a new period has begun."
)
class CostSummaryWriteSuccess:
    row: CostRow = strawberry.field(description="The row appended.")


@strawberry.type(
    description="costs.csv cannot be written now; the period is closed and its row "
    "is appended once the file can be written."
)
class SinkUnavailableError(Error):
    pass


CostSummaryWriteResult = Annotated[
    CostSummaryWriteSuccess | SinkUnavailableError,
    strawberry.union(
        "CostSummaryWriteResult", description="Result of costSummaryWrite."
    ),
]


@strawberry.type
class MonitoringQuery:
    @strawberry.field(description="A fresh metrics snapshot." + OPERATOR_READS)
    def metrics(self, info: strawberry.Info) -> MetricsSnapshot | None:
        return MetricsSnapshot.from_model(feed.current_metrics(ctx(info)))

    @strawberry.field(
        description="The latest alert events, newest last (at most 100 kept)."
        + OPERATOR_READS
    )
    def alerts(
        self,
        info: strawberry.Info,
        last: Annotated[
            int, strawberry.argument(description="How many, 1 to 100.")
        ] = 20,
    ) -> list[AlertEvent] | None:
        return [AlertEvent.from_model(e) for e in feed.recent_alerts(ctx(info), last)]

    @strawberry.field(description="Running costs and the open period." + OPERATOR_READS)
    def costs(self, info: strawberry.Info) -> CostSnapshot | None:
        return CostSnapshot.from_model(feed.cost_snapshot(ctx(info)))

    @strawberry.field(
        description="The resolvers with the highest p95 duration." + OPERATOR_READS
    )
    def slowest_resolvers(
        self,
        info: strawberry.Info,
        first: Annotated[
            int, strawberry.argument(description="How many, 1 to 100.")
        ] = 10,
    ) -> list[ResolverTiming] | None:
        return [
            ResolverTiming.from_model(s)
            for s in feed.slowest_resolvers(ctx(info), first)
        ]


@strawberry.type
class MonitoringMutation:
    @strawberry.mutation(
        description="Close the open cost period now and append its row to costs.csv. "
        "Admins only: FORBIDDEN for other roles, and nothing is written."
    )
    async def cost_summary_write(self, info: strawberry.Info) -> CostSummaryWriteResult:
        try:
            row = await feed.write_cost_summary(ctx(info))
        except feed.SinkUnavailable as exc:
            return SinkUnavailableError(message=str(exc))
        return CostSummaryWriteSuccess(row=CostRow.from_model(row))


def _shared(convert: Callable[[T], R]) -> Callable[[T], R]:
    """Convert each published value once, not once per subscriber: the monitor hands
    the same immutable snapshot to every subscription."""
    last: list[Any] = [None, None]

    def convert_once(item: T) -> R:
        if last[0] is not item:
            last[1] = convert(item)
            last[0] = item
        result: R = last[1]
        return result

    return convert_once


_metrics_type = _shared(MetricsSnapshot.from_model)
_costs_type = _shared(CostSnapshot.from_model)


@strawberry.type
class MonitoringSubscription:
    # Plain functions that check their arguments before the stream starts, so that
    # bad input is refused with an error message rather than a failed first event.
    @strawberry.subscription(
        description="Metrics snapshots, one per interval." + OPERATOR_STREAMS
    )
    def metrics(
        self, info: strawberry.Info, interval_ms: IntervalMs = 1000
    ) -> AsyncIterator[MetricsSnapshot]:
        live.check_operator(ctx(info))
        live.check_interval(interval_ms)
        return mapped(live.metrics(ctx(info), interval_ms), _metrics_type)

    @strawberry.subscription(
        description="Every alert firing and resolution as it happens."
        + OPERATOR_STREAMS
    )
    def alerts(self, info: strawberry.Info) -> AsyncIterator[AlertEvent]:
        live.check_operator(ctx(info))
        return mapped(live.alerts(ctx(info)), AlertEvent.from_model)

    @strawberry.subscription(
        description="Running costs and the open period, one per interval."
        + OPERATOR_STREAMS
    )
    def costs(
        self, info: strawberry.Info, interval_ms: IntervalMs = 1000
    ) -> AsyncIterator[CostSnapshot]:
        live.check_operator(ctx(info))
        live.check_interval(interval_ms)
        return mapped(live.costs(ctx(info), interval_ms), _costs_type)
