"""/metrics: Prometheus text exposition of the registry plus values read at scrape
time (caches, costs, firing alerts, process memory and CPU)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class ScrapeTimeCollector(Collector):
    def __init__(
        self,
        *,
        cache_stats: Callable[[], dict[str, tuple[int, int]]],
        cost_totals: Callable[[], dict[str, float]],
        alerts_firing: Callable[[], dict[str, bool]],
        active_subscriptions: Callable[[], int],
    ) -> None:
        self.cache_stats = cache_stats
        self.cost_totals = cost_totals
        self.alerts_firing = alerts_firing
        self.active_subscriptions = active_subscriptions

    def collect(self) -> Iterator[Any]:
        hits = CounterMetricFamily("cache_hits", "Shared cache hits.", labels=["cache"])
        misses = CounterMetricFamily(
            "cache_misses", "Shared cache misses.", labels=["cache"]
        )
        for name, (cache_hits, cache_misses) in sorted(self.cache_stats().items()):
            hits.add_metric([name], cache_hits)
            misses.add_metric([name], cache_misses)
        yield hits
        yield misses
        cost = CounterMetricFamily(
            "cost_dollars", "Running cost in dollars.", labels=["kind"]
        )
        for kind, value in sorted(self.cost_totals().items()):
            cost.add_metric([kind], value)
        yield cost
        firing = GaugeMetricFamily(
            "alerts_firing", "1 while a rule fires.", labels=["rule"]
        )
        for rule, state in sorted(self.alerts_firing().items()):
            firing.add_metric([rule], 1.0 if state else 0.0)
        yield firing
        yield GaugeMetricFamily(
            "graphql_active_subscriptions",
            "Subscriptions being served.",
            value=self.active_subscriptions(),
        )


def install_collectors(registry: Any, collector: ScrapeTimeCollector) -> None:
    registry.register(collector)
    ProcessCollector(registry=registry)


def render(registry: Any) -> tuple[bytes, str]:
    return generate_latest(registry), CONTENT_TYPE_LATEST
