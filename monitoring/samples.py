"""One worker's raw numbers at a sampler tick, the latest of every other worker, and
their merge into cluster figures: sums of the counters and rates, percentiles over
the merged response-time windows, memory and CPU summed."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from monitoring.bus import Codec
from monitoring.cluster import TICKS_ALIVE
from monitoring.windows import percentile

RECENT_KEPT = 1000  # durations of a peer waiting for this worker's next tick


@dataclass(frozen=True, slots=True)
class WorkerSample:
    """What one worker counted, as it stood at one moment. Windows are 60 s."""

    worker: str
    seq: int  # 1, 2, ... per published tick of that worker (0: not published)
    interval_s: float  # its sampler tick
    uptime_seconds: float
    requests_total: int
    requests_in_window: int
    errors_in_window: int
    response_ms: tuple[float, ...]  # its window of the last 1,000 durations
    # Durations completed since its previous tick, in order (alert rules read them).
    recent_response_ms: tuple[float, ...]
    cache_hits: int
    cache_misses: int
    cache_window_hits: int
    cache_window_misses: int
    db_queries_total: int
    db_queries_in_window: int
    memory_mb: float
    cpu_percent: float
    disk_free_mb: float
    active_subscriptions: int


_FIELDS = WorkerSample.__slots__
_TUPLES = ("response_ms", "recent_response_ms")


def encode_sample(sample: WorkerSample) -> list[Any]:
    return [getattr(sample, name) for name in _FIELDS]


def decode_sample(data: Any) -> WorkerSample:
    if not isinstance(data, list) or len(data) != len(_FIELDS):
        raise ValueError("a sample is a list of its fields")
    values = dict(zip(_FIELDS, data, strict=True))
    for name in _TUPLES:
        values[name] = tuple(float(value) for value in values[name])
    return WorkerSample(**values)


SAMPLE_CODEC = Codec(encode_sample, decode_sample)


@dataclass(frozen=True, slots=True)
class Merged:
    """Cluster figures from one or more samples."""

    workers: int
    uptime_seconds: float
    requests_total: int
    requests_per_minute: int
    error_rate: float | None
    response_ms: tuple[float | None, float | None, float | None, float | None]
    cache_hits: int
    cache_misses: int
    cache_hit_rate: float | None
    cache_lookups_in_window: int
    db_queries_total: int
    db_queries_per_minute: int
    memory_mb: float
    cpu_percent: float
    disk_free_mb: float
    active_subscriptions: int


def merge(samples: Sequence[WorkerSample]) -> Merged:
    """The first sample is this worker's (its disk is the one shown); the oldest
    worker's uptime is the cluster's."""
    requests = sum(s.requests_in_window for s in samples)
    errors = sum(s.errors_in_window for s in samples)
    hits = sum(s.cache_window_hits for s in samples)
    lookups = hits + sum(s.cache_window_misses for s in samples)
    return Merged(
        workers=len(samples),
        uptime_seconds=max(s.uptime_seconds for s in samples),
        requests_total=sum(s.requests_total for s in samples),
        requests_per_minute=requests,
        error_rate=100.0 * errors / requests if requests else None,
        response_ms=summary(chain.from_iterable(s.response_ms for s in samples)),
        cache_hits=sum(s.cache_hits for s in samples),
        cache_misses=sum(s.cache_misses for s in samples),
        cache_hit_rate=100.0 * hits / lookups if lookups else None,
        cache_lookups_in_window=lookups,
        db_queries_total=sum(s.db_queries_total for s in samples),
        db_queries_per_minute=sum(s.db_queries_in_window for s in samples),
        memory_mb=sum(s.memory_mb for s in samples),
        cpu_percent=sum(s.cpu_percent for s in samples),
        disk_free_mb=samples[0].disk_free_mb,
        active_subscriptions=sum(s.active_subscriptions for s in samples),
    )


def summary(
    durations: Iterable[float],
) -> tuple[float | None, float | None, float | None, float | None]:
    """(avg, p50, p95, p99), nearest rank, as DurationWindow.summary computes them."""
    ordered = sorted(durations)
    if not ordered:
        return None, None, None, None
    return (
        sum(ordered) / len(ordered),
        percentile(ordered, 0.50),
        percentile(ordered, 0.95),
        percentile(ordered, 0.99),
    )


@dataclass(slots=True)
class _Peer:
    sample: WorkerSample
    received: float
    first_seen: float
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_KEPT))


class Peers:
    """The latest sample of every other worker, as this worker received them.
    A worker whose samples stop is dropped once it has missed TICKS_ALIVE ticks.

    A worker is live while its latest sample is at most TICKS_ALIVE of its ticks
    old and (once this worker has heard the cluster's list) it is listed among the
    live workers; one first heard less than a tick before the list was read is given
    that tick to appear in it."""

    def __init__(self, own: str, clock: Callable[[], float]) -> None:
        self.own = own
        self._clock = clock
        self._peers: dict[str, _Peer] = {}
        self._members: frozenset[str] | None = None
        self._members_at = 0.0

    def receive(self, sample: WorkerSample) -> None:
        if sample.worker == self.own:
            return
        now = self._clock()
        peer = self._peers.get(sample.worker)
        if peer is None:
            peer = self._peers[sample.worker] = _Peer(sample, now, now)
        elif sample.seq <= peer.sample.seq:
            return  # older than what this worker has
        else:
            peer.sample, peer.received = sample, now
        peer.recent.extend(sample.recent_response_ms)

    def members(self, ids: Iterable[str], read_at: float) -> None:
        """The cluster's live workers, as read (started) at `read_at`."""
        self._members = frozenset(ids)
        self._members_at = read_at

    def live(self) -> list[_Peer]:
        now = self._clock()
        live = []
        for worker, peer in list(self._peers.items()):
            if now - peer.received > TICKS_ALIVE * peer.sample.interval_s:
                del self._peers[worker]  # missed its ticks
                continue
            if (
                self._members is not None
                and worker not in self._members
                and peer.first_seen + peer.sample.interval_s < self._members_at
            ):
                continue  # not (or no longer) listed as alive
            live.append(peer)
        live.sort(key=lambda peer: peer.sample.worker)
        return live

    def samples(self) -> list[WorkerSample]:
        return [peer.sample for peer in self.live()]

    def take_recent(self, peers: Sequence[_Peer]) -> tuple[float, ...]:
        """The durations these peers completed since this worker last took them."""
        taken: list[float] = []
        for peer in peers:
            taken.extend(peer.recent)
            peer.recent.clear()
        return tuple(taken)

    def clear(self) -> None:
        self._peers.clear()
