"""One worker's raw numbers at a sampler tick, the latest of every other worker, and
their merge into cluster figures: sums of the counters and rates, percentiles over
the merged response-time windows, memory and CPU summed.

A worker's window of durations crosses workers in full only when a peer asks for
it; every other sample carries what the window gained since the previous one (the
durations of its tick), and each peer keeps the window up to date from those. A
peer that missed a sample (a gap in the sequence numbers) or has not heard the
window yet asks for it in its own samples (`window_wanted`), and gets it in full
in the next one."""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from itertools import chain, count
from typing import Any

from monitoring.bus import Codec
from monitoring.cluster import TICKS_ALIVE
from monitoring.windows import RESPONSE_WINDOW, summarise

RECENT_KEPT = 1000  # durations of a peer waiting for this worker's next tick
# Up to this many new durations are moved into a peer's ordered window one by one;
# more, and the window is sorted again.
SORTED_IN_PLACE = RESPONSE_WINDOW // 8


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
    # Its window of the last RESPONSE_WINDOW durations; None when the sample carries
    # only what the window gained since the previous one (recent_response_ms).
    response_ms: tuple[float, ...] | None
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
    listeners: int = 0  # its subscribers of the listened topic (gradeEvents)
    # The workers whose whole window it asks for (it lacks or missed part of it).
    window_wanted: tuple[str, ...] = ()


_FIELDS = WorkerSample.__slots__


def encode_sample(sample: WorkerSample) -> list[Any]:
    return [getattr(sample, name) for name in _FIELDS]


def decode_sample(data: Any) -> WorkerSample:
    if not isinstance(data, list) or len(data) != len(_FIELDS):
        raise ValueError("a sample is a list of its fields")
    values = dict(zip(_FIELDS, data, strict=True))
    values["recent_response_ms"] = tuple(map(float, values["recent_response_ms"]))
    values["window_wanted"] = tuple(map(str, values["window_wanted"]))
    if values["response_ms"] is not None:
        values["response_ms"] = tuple(map(float, values["response_ms"]))
    return WorkerSample(**values)


SAMPLE_CODEC = Codec(encode_sample, decode_sample)


def published(sample: WorkerSample, *, full: bool) -> WorkerSample:
    """The sample as it goes to the other workers: its window only when `full`."""
    return sample if full else replace(sample, response_ms=None)


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


def merge(
    samples: Sequence[WorkerSample], others: Sequence[float] | None = None
) -> Merged:
    """The first sample is this worker's (its disk is the one shown); the oldest
    worker's uptime is the cluster's. `others` are the other workers' windows merged
    in ascending order (`Peers.ordered`); without it, the samples' own windows."""
    if others is None:
        durations = chain.from_iterable(s.response_ms or () for s in samples)
    else:
        # An ascending run is merged by the sort in linear time.
        durations = chain(samples[0].response_ms or (), others)
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
        response_ms=summarise(sorted(durations)),
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


_VERSIONS = count(1)


@dataclass(slots=True)
class _Peer:
    sample: WorkerSample
    received: float
    first_seen: float
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_KEPT))
    # Its window as this worker holds it: exact once a full window came and every
    # sample since (no gap in the sequence); until then what it has (maybe nothing).
    window: deque[float] = field(default_factory=lambda: deque(maxlen=RESPONSE_WINDOW))
    exact: bool = False
    # A new number whenever the window changes (never the same for two windows).
    version: int = 0
    _ordered: list[float] | None = None

    def update_window(self, sample: WorkerSample, follows: bool) -> None:
        """`follows`: the sample is the next one after the last taken."""
        added = sample.recent_response_ms
        if sample.response_ms is not None:
            self.window.clear()
            self.window.extend(sample.response_ms)
            self.exact = True
            self._ordered = None
        elif added:
            self.exact = self.exact and follows
            ordered = self._ordered
            if ordered is not None and len(added) <= SORTED_IN_PLACE:
                # A few durations: cheaper to move them in and out of the ordered
                # window than to sort it again.
                window = self.window
                for index in range(len(window) + len(added) - RESPONSE_WINDOW):
                    del ordered[bisect_left(ordered, window[index])]
                ordered.extend(added)
                ordered.sort()  # one long run and a short one: a merge
            else:
                self._ordered = None
            self.window.extend(added)
        else:
            self.exact = self.exact and follows
            return  # unchanged
        self.version = next(_VERSIONS)

    def ordered(self) -> list[float]:
        if self._ordered is None:
            self._ordered = sorted(self.window)
        return self._ordered


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
        # The live peers' windows merged, ascending, for the versions it was made of.
        self._ordered: tuple[tuple[tuple[str, int], ...], list[float]] = ((), [])
        # Workers that said they have listeners, until when that holds without
        # their samples saying so.
        self._announced: dict[str, float] = {}

    def receive(self, sample: WorkerSample) -> None:
        if sample.worker == self.own:
            return
        now = self._clock()
        peer = self._peers.get(sample.worker)
        if peer is None:
            peer = self._peers[sample.worker] = _Peer(sample, now, now)
            follows = False
        elif sample.seq <= peer.sample.seq:
            return  # older than what this worker has
        else:
            follows = sample.seq == peer.sample.seq + 1
            peer.sample, peer.received = sample, now
        peer.recent.extend(sample.recent_response_ms)
        peer.update_window(sample, follows)

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

    def ordered(self, peers: Sequence[_Peer]) -> list[float]:
        """These peers' windows merged, ascending: made again only once one of
        them changed (about once a tick), not for every query."""
        key = tuple((peer.sample.worker, peer.version) for peer in peers)
        if key != self._ordered[0]:
            merged = sorted(chain.from_iterable(peer.ordered() for peer in peers))
            self._ordered = (key, merged)
        return self._ordered[1]

    def wanted(self) -> tuple[str, ...]:
        """The workers whose whole window this worker asks for."""
        return tuple(sorted(w for w, peer in self._peers.items() if not peer.exact))

    def want_window_of(self, worker: str) -> bool:
        """Whether a peer asks for `worker`'s whole window in its latest sample."""
        return any(worker in peer.sample.window_wanted for peer in self._peers.values())

    def take_recent(self, peers: Sequence[_Peer]) -> tuple[float, ...]:
        """The durations these peers completed since this worker last took them."""
        taken: list[float] = []
        for peer in peers:
            taken.extend(peer.recent)
            peer.recent.clear()
        return tuple(taken)

    def announced(self, worker: str, interval_s: float) -> None:
        """`worker` has just got its first listener: count it as listening for
        TICKS_ALIVE of its ticks, time for its samples to say so."""
        if worker != self.own:
            self._announced[worker] = self._clock() + TICKS_ALIVE * interval_s

    def listening(self) -> bool:
        """Whether another live worker has listeners (or has just announced one)."""
        if any(peer.sample.listeners > 0 for peer in self.live()):
            return True
        now = self._clock()
        for worker, until in list(self._announced.items()):
            if until >= now:
                return True
            del self._announced[worker]
        return False

    def clear(self) -> None:
        self._peers.clear()
