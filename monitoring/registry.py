"""The metrics registry: what the request path records, read once per sampler tick.

Everything here is cheap to record (a few additions under the GIL) and is read by
the sampler and /metrics, never by the request path itself."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from monitoring.subscriptions import SubscriptionSignals
from monitoring.windows import RESPONSE_WINDOW, DurationWindow, SlidingCounter

MAX_OPERATION_LABELS = 50
MAX_TRACKED_OPERATIONS = 10_000
MAX_HTTP_SERIES = 200
OTHER = "other"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class ResolverStats:
    field: str
    count: int
    avg_ms: float
    p95_ms: float
    p99_ms: float


class Registry:
    """Counters and windows for one process, plus its Prometheus collectors."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        # GraphQL operations over HTTP: what costs.csv calls api_requests.
        self.operations_total = 0
        self.operation_errors_total = 0
        self.operations_per_minute = SlidingCounter(60, clock)
        self.errors_per_minute = SlidingCounter(60, clock)
        self.response_times = DurationWindow(RESPONSE_WINDOW)
        # Drained by the sampler: what the window gained since (its last RESPONSE_WINDOW).
        self._recent: deque[float] = deque(maxlen=RESPONSE_WINDOW)
        self.db_queries_total = 0
        self.db_time_ms = 0.0
        self.db_queries_per_minute = SlidingCounter(60, clock)
        self.resolvers: dict[str, DurationWindow] = {}
        self._resolver_entries: dict[str, tuple[DurationWindow, Any]] = {}
        # Operation names seen (bounded) and the ones that have their own label.
        self._operation_counts: dict[str, int] = {}
        self._operation_labels: set[str] = set()

        self.prometheus = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "http_requests",
            "HTTP requests by method and status.",
            ("method", "status"),
            registry=self.prometheus,
        )
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request duration.",
            buckets=_LATENCY_BUCKETS,
            registry=self.prometheus,
        )
        self.operation_duration = Histogram(
            "graphql_operation_duration_seconds",
            "GraphQL operation duration; names beyond the first 50 count as 'other'.",
            ("operation_type", "operation"),
            buckets=_LATENCY_BUCKETS,
            registry=self.prometheus,
        )
        self.resolver_duration = Histogram(
            "graphql_resolver_duration_seconds",
            "Duration of non-trivial resolvers.",
            ("field",),
            buckets=_LATENCY_BUCKETS,
            registry=self.prometheus,
        )
        self.db_queries = Counter(
            "db_queries",
            "SQL statements sent to the database.",
            registry=self.prometheus,
        )
        self.plan_fallbacks = Counter(
            "graphql_plan_fallbacks",
            "HTTP operations the compiled plans did not answer, by reason: run by "
            "the general executor instead.",
            ("reason",),
            registry=self.prometheus,
        )
        self._fallback_children: dict[str, Any] = {}
        self.persisted_operations = Counter(
            "graphql_persisted_operations",
            "Operations by what persisted operations made of them: trusted (in the "
            "manifest), untrusted (outside it, run), not_found (an unknown hash), "
            "refused (outside it under PERSISTED_OPERATIONS=require).",
            ("outcome",),
            registry=self.prometheus,
        )
        self._persisted_children = {
            outcome: self.persisted_operations.labels(outcome)
            for outcome in ("trusted", "untrusted", "not_found", "refused")
        }
        # Per subscription root field: active, events sent and dropped, fan-out.
        self.subscriptions = SubscriptionSignals(self.prometheus)
        self._http_children: dict[tuple[str, int], Any] = {}
        self._duration_children: dict[tuple[str, str], Any] = {}

    # --- recording (request path) ---------------------------------------------------

    def record_http(self, method: str, status: int, duration_s: float) -> None:
        key = (method, status)
        child = self._http_children.get(key)
        if child is None:
            # labels() costs more than the observation: each pair is looked up once
            # (methods and statuses are few: the server answers unknown methods 405).
            child = self.http_requests.labels(method, str(status))
            if len(self._http_children) < MAX_HTTP_SERIES:
                self._http_children[key] = child
        child.inc()
        self.http_duration.observe(duration_s)

    def record_operation(
        self,
        *,
        operation_type: str,
        operation: str | None,
        duration_s: float,
        failed: bool,
        over_http: bool,
    ) -> None:
        label = self._label(operation)
        key = (operation_type, label)
        child = self._duration_children.get(key)
        if child is None:
            child = self._duration_children[key] = self.operation_duration.labels(
                operation_type, label
            )
        child.observe(duration_s)
        if not over_http:
            return
        duration_ms = duration_s * 1000.0
        self.operations_total += 1
        self.operations_per_minute.add()
        self.response_times.add(duration_ms)
        self._recent.append(duration_ms)
        if failed:
            self.operation_errors_total += 1
            self.errors_per_minute.add()

    def _label(self, operation: str | None) -> str:
        """The operation's own label while it is among the 50 most frequent names;
        'other' otherwise, so that clients cannot blow up the label set."""
        name = operation or "anonymous"
        counts = self._operation_counts
        if name not in counts and len(counts) >= MAX_TRACKED_OPERATIONS:
            return OTHER
        count = counts[name] = counts.get(name, 0) + 1
        labels = self._operation_labels
        if name in labels:
            return name
        if len(labels) < MAX_OPERATION_LABELS:
            labels.add(name)
            return name
        least = min(labels, key=lambda label: counts[label])
        if count <= counts[least]:
            return OTHER
        # `name` is now more frequent than `least`: it takes over the label slot, and
        # `least`'s series go (its future operations count as 'other').
        labels.discard(least)
        labels.add(name)
        for kind in ("query", "mutation", "subscription", "unknown"):
            self._duration_children.pop((kind, least), None)
            with contextlib.suppress(KeyError):
                self.operation_duration.remove(kind, least)
        return name

    def record_plan_fallback(self, reason: str) -> None:
        child = self._fallback_children.get(reason)
        if child is None:
            child = self._fallback_children[reason] = self.plan_fallbacks.labels(reason)
        child.inc()

    def record_persisted(self, outcome: str) -> None:
        child = self._persisted_children.get(outcome)
        if child is None:
            child = self._persisted_children[outcome] = (
                self.persisted_operations.labels(outcome)
            )
        child.inc()

    def record_resolver(self, field: str, duration_s: float) -> None:
        entry = self._resolver_entries.get(field)
        if entry is None:
            # labels() costs more than the observation: look each field up once.
            self.resolvers[field] = DurationWindow(500)
            entry = (self.resolvers[field], self.resolver_duration.labels(field))
            self._resolver_entries[field] = entry
        window, histogram = entry
        window.add(duration_s * 1000.0)
        histogram.observe(duration_s)

    def record_db_query(self, duration_s: float = 0.0) -> None:
        self.db_queries_total += 1
        self.db_time_ms += duration_s * 1000.0
        self.db_queries_per_minute.add()
        self.db_queries.inc()

    def subscription_started(self, field: str) -> None:
        self.subscriptions.started(field)

    def subscription_ended(self, field: str) -> None:
        self.subscriptions.ended(field)

    @property
    def active_subscriptions(self) -> int:
        """Open subscriptions of every field (graphql_subscriptions_active's sum)."""
        return sum(self.subscriptions.active.values())

    # --- reading (sampler, /metrics, queries) -----------------------------------

    def drain_recent_response_ms(self) -> tuple[float, ...]:
        """Durations completed since the last call, oldest first."""
        drained = tuple(self._recent)
        self._recent.clear()
        return drained

    def uptime_seconds(self) -> float:
        return self.clock() - self.started

    def error_rate(self) -> tuple[float | None, int]:
        """(percentage of failed operations over the last 60 s, operations in it)."""
        requests = int(self.operations_per_minute.total())
        if not requests:
            return None, 0
        return 100.0 * self.errors_per_minute.total() / requests, requests

    def slowest_resolvers(self, first: int = 10) -> list[ResolverStats]:
        stats = []
        for field, window in list(self.resolvers.items()):
            avg, _, p95, p99 = window.summary()
            if avg is None or p95 is None or p99 is None:
                continue
            stats.append(ResolverStats(field, window.count, avg, p95, p99))
        stats.sort(key=lambda s: (-s.p95_ms, s.field))
        return stats[:first]
