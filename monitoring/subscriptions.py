"""Subscription signals for /metrics, per root field: the subscriptions being served,
the events sent and the events dropped (and why), and how long a published item
takes to reach the last subscriber of a group that sends it.

Counting is a dictionary addition (read at scrape time), since events are counted
once per subscriber: a thousand `metrics` subscribers count a thousand per tick."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

# Why an event did not reach a subscriber.
OVERFLOW = "overflow"  # a full backlog (alerts, gradeEvents): the oldest goes
SUPERSEDED = "superseded"  # a latest-only stream (metrics, costs): a newer replaced it
SLOW_CLIENT_CLOSED = "slow_client_closed"  # still queued when a slow client was closed
REASONS = (OVERFLOW, SUPERSEDED, SLOW_CLIENT_CLOSED)
_FANOUT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class SubscriptionSignals(Collector):
    """The counts of one worker, by subscription root field."""

    def __init__(self, prometheus: CollectorRegistry) -> None:
        self.active: dict[str, int] = {}
        self.events: dict[str, int] = {}
        self.dropped: dict[tuple[str, str], int] = {}
        self.fanout = Histogram(
            "graphql_subscription_fanout_seconds",
            "From an item's publication to its send to the last subscriber of a "
            "group that sends it (a shared metrics group, or one subscription).",
            buckets=_FANOUT_BUCKETS,
            registry=prometheus,
        )
        prometheus.register(self)

    def declare(self, fields: Iterable[str]) -> None:
        """The schema's subscription root fields: their series start at 0."""
        for name in fields:
            self.active.setdefault(name, 0)
            self.events.setdefault(name, 0)
            for reason in REASONS:
                self.dropped.setdefault((name, reason), 0)

    def started(self, field: str) -> None:
        self.active[field] = self.active.get(field, 0) + 1

    def ended(self, field: str) -> None:
        self.active[field] = max(0, self.active.get(field, 0) - 1)

    def sent(self, field: str, events: int = 1) -> None:
        self.events[field] = self.events.get(field, 0) + events

    def drop(self, field: str, reason: str, events: int = 1) -> None:
        key = (field, reason)
        self.dropped[key] = self.dropped.get(key, 0) + events

    def fanned_out(self, seconds: float) -> None:
        self.fanout.observe(max(0.0, seconds))

    def collect(self) -> Iterator[Any]:
        active = GaugeMetricFamily(
            "graphql_subscriptions_active",
            "Subscriptions being served, by root field.",
            labels=["field"],
        )
        for name, count in sorted(self.active.items()):
            active.add_metric([name], count)
        yield active
        events = CounterMetricFamily(
            "graphql_subscription_events",
            "Events sent to subscribers (one per subscriber), by root field.",
            labels=["field"],
        )
        for name, count in sorted(self.events.items()):
            events.add_metric([name], count)
        yield events
        dropped = CounterMetricFamily(
            "graphql_subscription_dropped",
            "Events a subscriber did not get, by root field and reason: overflow "
            "(its backlog was full), superseded (a newer snapshot replaced it), "
            "slow_client_closed (still queued when the slow client was closed).",
            labels=["field", "reason"],
        )
        for (name, reason), count in sorted(self.dropped.items()):
            dropped.add_metric([name, reason], count)
        yield dropped
