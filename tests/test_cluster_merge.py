"""The pieces of the cluster feed without Redis: what crosses workers survives the
trip exactly (codecs), samples merge into cluster figures, a peer follows another
worker's window exactly from the durations each sample adds (and asks for the whole
window after a gap), other workers' samples drop out after 3 missed ticks, a worker's
listeners are known to the others, and a worker without REDIS_URL is the whole
cluster."""

from __future__ import annotations

import math
import random
from collections import deque
from datetime import UTC, datetime, timedelta, timezone

import orjson

from db.records import GradeRecord
from monitoring.monitor import ALERTS, CODECS, SNAPSHOTS
from monitoring.samples import Peers, WorkerSample, merge, published
from monitoring.snapshot import AlertEvent, AlertState
from monitoring.windows import RESPONSE_WINDOW
from resolvers import live
from tests.factories import Clock

METRICS_QUERY = """
    query { metrics { requestsTotal workers degraded responseTimeMs { p50 } } }
"""


def sample(worker: str = "w1", seq: int = 1, **overrides: object) -> WorkerSample:
    values: dict[str, object] = dict(
        worker=worker,
        seq=seq,
        interval_s=0.1,
        uptime_seconds=12.5,
        requests_total=10,
        requests_in_window=8,
        errors_in_window=2,
        response_ms=(3.0, 1.0, 2.0),
        recent_response_ms=(2.0,),
        cache_hits=30,
        cache_misses=10,
        cache_window_hits=6,
        cache_window_misses=2,
        db_queries_total=40,
        db_queries_in_window=20,
        memory_mb=100.5,
        cpu_percent=12.0,
        disk_free_mb=5000.0,
        active_subscriptions=3,
    )
    values.update(overrides)
    return WorkerSample(**values)  # type: ignore[arg-type]


def trip(topic: str, item: object, codecs: dict[str, object]) -> object:
    """Through JSON bytes and back, as the Redis bus sends it."""
    codec = codecs[topic]
    data = orjson.loads(orjson.dumps(codec.encode(item)))  # type: ignore[attr-defined]
    return codec.decode(data)  # type: ignore[attr-defined]


def reference_percentile(values: list[float], fraction: float) -> float:
    """Nearest rank, written out again here: the value at rank ceil(p * n)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


# --- codecs -------------------------------------------------------------------------


def test_grade_events_cross_workers_exactly() -> None:
    aware = datetime(2025, 10, 1, 9, 0, 0, 123456, tzinfo=UTC)
    offset = datetime(2025, 10, 2, 23, 59, 59, 1, tzinfo=timezone(timedelta(hours=2)))
    naive = datetime(2025, 10, 3, 7, 30)
    write = (
        live.GradeEvent(
            "S1",
            9,
            (
                GradeRecord(1, "S1", "Math", 40.25, 50.0, aware),
                GradeRecord(2, "S1", "Art", 0.1 + 0.2, 100.0, offset),
            ),
        ),
        live.GradeEvent("S2", 10, (GradeRecord(3, "S2", "Bio", 99.0, 100.0, naive),)),
    )

    back = trip(live.GRADES, write, live.CODECS)

    assert back == write
    assert isinstance(back, tuple)
    stamps = [g.recorded_at for event in back for g in event.grades]
    assert [s.tzinfo for s in stamps] == [UTC, offset.tzinfo, None]
    assert stamps[0].microsecond == 123456


def test_alerts_and_job_ids_cross_workers_exactly() -> None:
    event = AlertEvent(
        rule="high_response_time",
        state=AlertState.FIRING,
        message="High response time: [350.2, 420.1, 380.5] ms (threshold: 300ms)",
        values=(350.2, 420.1, 380.5),
        threshold=300.0,
        at=datetime(2024, 1, 15, 10, 30, 0, 5, tzinfo=UTC),
    )

    assert trip(ALERTS, event, CODECS) == event
    assert trip(live.IMPORTS, "job-42", live.CODECS) == "job-42"


def test_a_sample_crosses_workers_exactly() -> None:
    original = sample(
        response_ms=(0.1 + 0.2, 1e-9, 123456.789),
        recent_response_ms=(),
        listeners=2,
        window_wanted=("w7", "w9"),
    )
    without_window = published(original, full=False)

    assert trip(SNAPSHOTS, original, CODECS) == original
    assert trip(SNAPSHOTS, without_window, CODECS) == without_window
    assert without_window.response_ms is None


# --- merging ------------------------------------------------------------------------


def test_merge_sums_counters_and_rates() -> None:
    first = sample("w1")
    second = sample(
        "w2",
        uptime_seconds=99.0,
        requests_total=5,
        requests_in_window=2,
        errors_in_window=0,
        cache_window_hits=0,
        cache_window_misses=2,
        memory_mb=50.25,
        cpu_percent=3.5,
        disk_free_mb=1.0,
    )

    merged = merge([first, second])

    assert merged.workers == 2
    assert merged.requests_total == 15
    assert merged.requests_per_minute == 10
    assert merged.error_rate == 20.0  # 2 failed of 10 in the window
    assert merged.cache_hits == 60
    assert merged.cache_misses == 20
    assert merged.cache_hit_rate == 60.0  # 6 hits of 10 lookups
    assert merged.cache_lookups_in_window == 10
    assert merged.db_queries_total == 80
    assert merged.db_queries_per_minute == 40
    assert merged.memory_mb == 150.75
    assert merged.cpu_percent == 15.5
    assert merged.active_subscriptions == 6
    assert merged.uptime_seconds == 99.0  # the oldest worker's
    assert merged.disk_free_mb == 5000.0  # this worker's (the first)


def test_percentiles_are_over_the_merged_windows() -> None:
    rng = random.Random(7)
    first = [rng.uniform(1, 100) for _ in range(1000)]
    second = [rng.uniform(50, 400) for _ in range(700)]

    merged = merge(
        [
            sample("w1", response_ms=tuple(first)),
            sample("w2", response_ms=tuple(second)),
        ]
    )

    both = first + second
    avg, p50, p95, p99 = merged.response_ms
    assert p50 == reference_percentile(both, 0.50)
    assert p95 == reference_percentile(both, 0.95)
    assert p99 == reference_percentile(both, 0.99)
    assert avg is not None and math.isclose(avg, sum(both) / len(both))
    # Not the mean of the workers' own percentiles.
    own = (reference_percentile(first, 0.95) + reference_percentile(second, 0.95)) / 2
    assert p95 != own


class Sender:
    """A worker's window as its registry keeps it, and its samples as its monitor
    publishes them: the whole window first and when a peer asks, else only what the
    window gained (at most the last RESPONSE_WINDOW durations, as drained)."""

    def __init__(self, worker: str, rng: random.Random) -> None:
        self.worker = worker
        self.rng = rng
        self.window: deque[float] = deque(maxlen=RESPONSE_WINDOW)
        self.seq = 0

    def tick(self, durations: int, asked: bool = False) -> WorkerSample:
        added = [round(self.rng.uniform(1, 900), 3) for _ in range(durations)]
        self.window.extend(added)
        self.seq += 1
        own = sample(
            self.worker,
            self.seq,
            response_ms=tuple(self.window),
            recent_response_ms=tuple(added[-RESPONSE_WINDOW:]),
        )
        sent = published(own, full=self.seq == 1 or asked)
        return trip(SNAPSHOTS, sent, CODECS)  # type: ignore[return-value]


def test_a_peer_follows_a_window_exactly_from_what_each_sample_adds() -> None:
    clock = Clock(100.0)
    peers = Peers("me", clock)
    rng = random.Random(3)
    senders = [Sender("w1", rng), Sender("w2", rng)]
    own = tuple(rng.uniform(1, 900) for _ in range(300))
    # Few durations (moved into the ordered window one by one), many (sorted again),
    # none, more than a window holds; repeated values.
    for count in (40, 1, 0, 125, 126, 700, 3, 1500, 90, 2, 0, 999, 30):
        for sender in senders:
            received = sender.tick(count)
            assert received.response_ms is None or received.seq == 1
            peers.receive(received)
        clock.now += 0.1
        live = peers.live()

        merged = merge(
            [sample("me", response_ms=own), *peers.samples()], peers.ordered(live)
        )

        both = [*own, *senders[0].window, *senders[1].window]
        _, p50, p95, p99 = merged.response_ms
        assert (p50, p95, p99) == tuple(
            reference_percentile(both, f) for f in (0.50, 0.95, 0.99)
        )
        assert [list(peer.window) for peer in live] == [
            list(sender.window) for sender in senders
        ]
        assert peers.wanted() == ()


def test_a_peer_that_missed_a_sample_asks_for_the_whole_window() -> None:
    clock = Clock(100.0)
    peers = Peers("me", clock)
    sender = Sender("w1", random.Random(5))
    peers.receive(sender.tick(50))
    peers.receive(sender.tick(20))
    sender.tick(30)  # lost on the way

    peers.receive(sender.tick(10))

    assert peers.wanted() == ("w1",)
    # Its next sample asks: the sender, hearing it, sends the whole window.
    theirs = Peers("w1", clock)
    theirs.receive(sample("me", seq=1, window_wanted=peers.wanted()))
    assert theirs.want_window_of("w1") is True
    peers.receive(sender.tick(5, asked=True))
    assert peers.wanted() == ()
    (peer,) = peers.live()
    assert list(peer.window) == list(sender.window)
    assert peers.ordered([peer]) == sorted(sender.window)


def test_a_worker_first_heard_without_its_window_asks_for_it() -> None:
    clock = Clock(100.0)
    peers = Peers("me", clock)
    sender = Sender("w1", random.Random(6))
    sender.tick(80)  # before this worker listened

    peers.receive(sender.tick(10))

    assert peers.wanted() == ("w1",)
    peers.receive(sender.tick(0, asked=True))
    assert peers.wanted() == ()
    assert peers.ordered(peers.live()) == sorted(sender.window)


def test_listeners_elsewhere_are_known_from_samples_and_announcements() -> None:
    clock = Clock(100.0)
    peers = Peers("me", clock)
    peers.receive(sample("w1", seq=1, listeners=0))
    assert peers.listening() is False

    peers.announced("w1", 0.1)  # its first listener, before its next sample
    assert peers.listening() is True
    clock.now += 0.31  # past 3 of its ticks, its samples alone count
    peers.receive(sample("w1", seq=2, listeners=0))
    assert peers.listening() is False
    peers.receive(sample("w1", seq=3, listeners=2))
    assert peers.listening() is True
    clock.now += 0.31  # it stopped publishing: dropped, and its listeners with it
    assert peers.listening() is False
    peers.announced("me", 0.1)  # this worker's own announcement
    assert peers.listening() is False


# --- peers --------------------------------------------------------------------------


def test_a_worker_that_misses_3_ticks_drops_out() -> None:
    clock = Clock(100.0)
    peers = Peers("me", clock)
    peers.receive(sample("other", seq=1))
    peers.receive(sample("me", seq=1))  # its own: never a peer

    clock.now += 0.29  # 2.9 of its 100 ms ticks
    assert [s.worker for s in peers.samples()] == ["other"]
    clock.now += 0.02
    assert peers.samples() == []

    peers.receive(sample("other", seq=2))  # it comes back by publishing again
    assert [s.seq for s in peers.samples()] == [2]


def test_older_samples_are_ignored_and_durations_taken_once() -> None:
    clock = Clock(100.0)
    peers = Peers("me", clock)
    peers.receive(sample("other", seq=2, recent_response_ms=(5.0, 6.0)))
    peers.receive(sample("other", seq=1, recent_response_ms=(1.0,)))
    peers.receive(sample("other", seq=3, recent_response_ms=(7.0,)))

    live_peers = peers.live()
    assert [p.sample.seq for p in live_peers] == [3]
    assert peers.take_recent(live_peers) == (5.0, 6.0, 7.0)
    assert peers.take_recent(live_peers) == ()


def test_a_worker_no_longer_listed_is_left_out() -> None:
    clock = Clock(100.0)
    peers = Peers("me", clock)
    peers.receive(sample("gone"))
    peers.receive(sample("listed"))
    clock.now += 0.15  # more than a tick after both were first heard

    peers.members(["me", "listed"], read_at=clock())

    assert [s.worker for s in peers.samples()] == ["listed"]
    # One first heard just now has a tick to appear in the list.
    peers.receive(sample("new"))
    assert [s.worker for s in peers.samples()] == ["listed", "new"]


# --- one worker ---------------------------------------------------------------------


async def test_without_redis_a_worker_is_the_whole_cluster(api) -> None:
    await api.post("{ __typename }")

    body = await api.post(METRICS_QUERY)

    metrics = body["data"]["metrics"]
    assert metrics["workers"] == 1
    assert metrics["degraded"] is False
    assert metrics["requestsTotal"] == 1
    assert api.app.state.monitor.bus.crosses(live.GRADES) is False
