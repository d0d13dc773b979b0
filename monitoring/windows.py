"""Rolling windows: per-second counters over a sliding minute, and a bounded sample
of durations for percentiles."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

RESPONSE_WINDOW = 1000  # the durations a worker's percentiles are taken over


class SlidingCounter:
    """Counts events per whole second; `total()` sums the last `window_s` seconds."""

    def __init__(
        self, window_s: int = 60, clock: Callable[[], float] | None = None
    ) -> None:
        import time

        self.window_s = window_s
        self._clock = clock or time.monotonic
        self._buckets: deque[tuple[int, float]] = deque()

    def add(self, amount: float = 1.0) -> None:
        second = int(self._clock())
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1] = (second, self._buckets[-1][1] + amount)
        else:
            self._buckets.append((second, amount))
            self._expire(second)

    def _expire(self, now: int) -> None:
        horizon = now - self.window_s
        while self._buckets and self._buckets[0][0] <= horizon:
            self._buckets.popleft()

    def total(self) -> float:
        self._expire(int(self._clock()))
        return sum(amount for _, amount in self._buckets)


def percentile(ordered: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class DurationWindow:
    """The last `size` durations (milliseconds) with count and sum since start."""

    def __init__(self, size: int = 1000) -> None:
        self.samples: deque[float] = deque(maxlen=size)
        self.count = 0
        self.total_ms = 0.0

    def add(self, duration_ms: float) -> None:
        self.samples.append(duration_ms)
        self.count += 1
        self.total_ms += duration_ms

    def summary(self) -> tuple[float | None, float | None, float | None, float | None]:
        """(avg, p50, p95, p99) over the window."""
        return summarise(sorted(self.samples))


def summarise(
    ordered: list[float],
) -> tuple[float | None, float | None, float | None, float | None]:
    """(avg, p50, p95, p99) of an ascending list, nearest rank."""
    if not ordered:
        return None, None, None, None
    return (
        sum(ordered) / len(ordered),
        percentile(ordered, 0.50),
        percentile(ordered, 0.95),
        percentile(ordered, 0.99),
    )
