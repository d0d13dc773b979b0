"""The monitor: one sampler task reads the registry and the system once per tick,
builds an immutable snapshot, feeds the alert engine and the cost meter, and
publishes on the bus. Nothing on the request path waits for it.

With a bus shared by workers, each tick also publishes this worker's raw sample
(SNAPSHOTS) and the snapshot is the merge of it with the other workers' latest.
Samples also say how many subscribers each worker has on the `listened` topic, so
that a write publishes on it only while someone, somewhere, listens."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Protocol

from monitoring.alerts import CACHE_WINDOW_S, AlertHistory, AlertRule
from monitoring.bus import Codec, EventBus
from monitoring.leader import Leadership, Role
from monitoring.registry import Registry
from monitoring.samples import SAMPLE_CODEC, Peers, WorkerSample, merge, published
from monitoring.snapshot import (
    AlertEvent,
    AlertInputs,
    AlertState,
    MetricsSnapshot,
    ResponseTimes,
)
from monitoring.system import SystemReader
from monitoring.tally import count_statement
from monitoring.usage import FieldUsageMeter
from monitoring.windows import SlidingCounter

log = logging.getLogger("gradepulse.monitor")

METRICS = "metrics"
ALERTS = "alerts"
COSTS = "costs"
SNAPSHOTS = "snapshots"  # each worker's own raw sample, for the others to merge
LISTENING = "listening"  # a worker got its first listener: (worker, its tick in s)
# The cost meter's exchange with the database (a write transaction on the one meter
# row when there is something to add, else a read) runs every this many seconds of
# ticks, not at every tick; and besides at a period boundary, at an early close
# (costSummaryWrite) and at stop. Between, the snapshot adds this worker's unsent
# counts to the cluster's meter as last read.
COST_SYNC_S = 5.0
START_SYNC_TIMEOUT_S = 5.0
# The field usage counted here goes to the database every this many seconds of
# ticks, beside the sampler, and at stop.
USAGE_FLUSH_S = 60.0
STOP_SYNC_TIMEOUT_S = 5.0
_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "PRAGMA")


class CostMeterLike(Protocol):
    def price(self, db_queries: int, api_requests: int) -> dict[str, Any]: ...
    def record(
        self, operation: str | None, db_queries: int, api_requests: int
    ) -> None: ...
    def snapshot(self) -> Any: ...
    def boundary_passed(self) -> bool: ...
    def cost_per_hour(self, window_s: float | None = None) -> float: ...
    async def sync(self, *, close: bool = False) -> list[Any]: ...
    async def close_now(self) -> Any: ...
    async def aclose(self) -> None: ...


class AlertEngineLike(Protocol):
    """What the monitor, the feed and the composition root use of the engine."""

    rules: tuple[AlertRule, ...]

    def evaluate(
        self, inputs: AlertInputs, *, write: bool = True
    ) -> list[AlertEvent]: ...
    def firing(self) -> dict[str, bool]: ...
    def export_state(self) -> dict[str, Any]: ...
    def import_state(self, state: dict[str, Any]) -> None: ...


class Monitor:
    def __init__(
        self,
        *,
        environment: str,
        registry: Registry,
        costs: CostMeterLike,
        alerts: AlertEngineLike,
        system: SystemReader,
        cache_stats: Callable[[], dict[str, tuple[int, int]]],
        worker: str,
        leader: Leadership,
        bus: EventBus | None = None,
        interval_s: float = 1.0,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        heartbeat: Callable[[Monitor], Coroutine[Any, Any, None]] | None = None,
        listened: str | None = None,
        usage: FieldUsageMeter | None = None,
    ) -> None:
        self.environment = environment
        self.registry = registry
        self.costs = costs
        self.alerts = alerts
        self.system = system
        self.cache_stats = cache_stats
        self.bus = bus or EventBus()
        self.interval_s = interval_s
        self.wall = wall
        # heartbeat(self), once per tick of the running sampler (not by tick()): it
        # runs beside the sampler, never delays it, and is skipped while the last one
        # is unfinished.
        self.heartbeat = heartbeat
        self._beating: asyncio.Task[None] | None = None
        self._costing: asyncio.Task[None] | None = None
        self._cost_every = max(1, round(COST_SYNC_S / interval_s))
        self._cost_ticks = 0  # since the last sync
        # Without Redis (a leadership without a client) this worker alone leads.
        self.leader = leader
        # The cluster's alert events as they reach this worker (its own included).
        self.history = AlertHistory()
        self.latest: MetricsSnapshot | None = None
        # The cost meter's snapshot of the latest tick: the one its rules judged.
        self.latest_costs: Any = None
        self._cache_hits = SlidingCounter(CACHE_WINDOW_S, registry.clock)
        self._cache_misses = SlidingCounter(CACHE_WINDOW_S, registry.clock)
        self._last_cache = (0, 0)
        self._task: asyncio.Task[None] | None = None
        # The other workers' samples (when the bus crosses workers), and ours.
        self.worker = worker
        self.peers = Peers(worker, registry.clock)
        # Timed as they arrive (a worker is dropped by the age of its last sample).
        self._peer_feed = self.bus.listen(SNAPSHOTS, self.peers.receive)
        self._alert_feed = self.bus.listen(ALERTS, self.history.add)
        self._seq = 0
        # The topic whose subscribers the samples count (gradeEvents': app.py).
        self.listened = listened
        self._announcements = self.bus.listen(
            LISTENING, lambda item: self.peers.announced(*item)
        )
        # How often operations select each field (/metrics and fieldUsage).
        self.usage = usage or FieldUsageMeter()
        registry.prometheus.register(self.usage)
        self._flushing: asyncio.Task[None] | None = None
        self._usage_every = max(1, round(USAGE_FLUSH_S / interval_s))
        self._usage_ticks = 0

    # --- request path --------------------------------------------------------------

    def price(self, db_queries: int, api_requests: int) -> dict[str, Any]:
        return self.costs.price(db_queries, api_requests)

    def record_operation(
        self,
        *,
        operation_type: str,
        operation: str | None,
        duration_s: float,
        failed: bool,
        over_http: bool,
        db_queries: int,
    ) -> None:
        self.registry.record_operation(
            operation_type=operation_type,
            operation=operation,
            duration_s=duration_s,
            failed=failed,
            over_http=over_http,
        )
        self.costs.record(operation, db_queries, 1 if over_http else 0)

    def on_statement(self, statement: str, duration_s: float) -> None:
        """Every SQL statement the engine sends (app.py attaches the listener)."""
        if statement.lstrip()[:9].upper().startswith(_CONTROL):
            return
        self.registry.record_db_query(duration_s)
        count_statement()

    def listening(self) -> bool:
        """Whether the listened topic has a subscriber here or, as far as this
        worker has heard, on another live worker (then a write publishes on it)."""
        topic = self.listened
        if topic is None:
            return True
        if self.bus.subscribers(topic) > 0:
            return True
        return self.bus.crosses(topic) and self.peers.listening()

    def listener_started(self) -> None:
        """Call after a subscription to the listened topic has started: the first
        one here is announced at once, so that a write on another worker right
        after it does not wait for this worker's next sample to publish."""
        topic = self.listened
        if (
            topic is not None
            and self.bus.subscribers(topic) == 1
            and self.bus.crosses(LISTENING)
        ):
            self.bus.publish(LISTENING, (self.worker, self.interval_s))

    # --- sampler -------------------------------------------------------------------

    def cache_totals(self) -> tuple[int, int]:
        hits = misses = 0
        for cache_hits, cache_misses in self.cache_stats().values():
            hits += cache_hits
            misses += cache_misses
        return hits, misses

    def sample(self, recent: tuple[float, ...] = (), seq: int = 0) -> WorkerSample:
        """This worker's own numbers now."""
        registry = self.registry
        hits, misses = self.cache_totals()
        reading = self.system.read()
        return WorkerSample(
            worker=self.worker,
            seq=seq,
            interval_s=self.interval_s,
            uptime_seconds=round(registry.uptime_seconds(), 3),
            requests_total=registry.operations_total,
            requests_in_window=int(registry.operations_per_minute.total()),
            errors_in_window=int(registry.errors_per_minute.total()),
            response_ms=tuple(registry.response_times.samples),
            recent_response_ms=recent,
            cache_hits=hits,
            cache_misses=misses,
            cache_window_hits=int(self._cache_hits.total()),
            cache_window_misses=int(self._cache_misses.total()),
            db_queries_total=registry.db_queries_total,
            db_queries_in_window=int(registry.db_queries_per_minute.total()),
            memory_mb=reading.memory_mb,
            cpu_percent=reading.cpu_percent,
            disk_free_mb=reading.disk_free_mb,
            active_subscriptions=registry.active_subscriptions,
            listeners=self.bus.subscribers(self.listened) if self.listened else 0,
            window_wanted=self.peers.wanted() if seq else (),
        )

    def snapshot(self) -> MetricsSnapshot:
        """The cluster's figures now (this worker's alone without a shared bus)."""
        snapshot, _ = self._merged(self.sample())
        return snapshot

    def _merged(
        self, own: WorkerSample, take_recent: bool = False, costs: Any = None
    ) -> tuple[MetricsSnapshot, AlertInputs]:
        degraded = self.bus.degraded
        peers = self.peers.live() if self.bus.crosses(SNAPSHOTS) else []
        recent = self.peers.take_recent(peers) if take_recent else ()
        if degraded:
            peers, recent = [], ()  # this worker alone: it cannot hear the others
        merged = merge(
            [own, *(peer.sample for peer in peers)], self.peers.ordered(peers)
        )
        if costs is None:
            costs = self.costs.snapshot()
        snapshot = MetricsSnapshot(
            at=self.wall(),
            environment=self.environment,
            uptime_seconds=merged.uptime_seconds,
            requests_total=merged.requests_total,
            requests_per_minute=merged.requests_per_minute,
            error_rate=merged.error_rate,
            response_time_ms=ResponseTimes(*merged.response_ms),
            cache_hits=merged.cache_hits,
            cache_misses=merged.cache_misses,
            cache_hit_rate=merged.cache_hit_rate,
            db_queries_total=merged.db_queries_total,
            db_queries_per_minute=merged.db_queries_per_minute,
            memory_mb=merged.memory_mb,
            cpu_percent=merged.cpu_percent,
            disk_free_mb=merged.disk_free_mb,
            active_subscriptions=merged.active_subscriptions,
            # The cost meter's figures are the cluster's already (its open period
            # lives in the database): taken as they are, never summed.
            total_cost=costs.total_cost,
            current_period_cost=costs.current_period.total_cost,
            workers=merged.workers,
            degraded=degraded,
        )
        inputs = AlertInputs(
            snapshot=snapshot,
            recent_response_ms=(*own.recent_response_ms, *recent),
            cache_lookups_in_window=merged.cache_lookups_in_window,
            requests_in_window=merged.requests_per_minute,
            # The figure the costs feed shows (costPerHour), judged only once
            # the meter has seen its whole window.
            cost_per_hour=costs.cost_per_hour,
            cost_window_full=costs.cost_window_full,
        )
        return snapshot, inputs

    def tick(self) -> MetricsSnapshot:
        """One sample, synchronously: snapshot, alerts, publication (the cost meter's
        exchange with the database is the running sampler's, or `sync_costs`)."""
        snapshot = self._sample()
        self._publish_costs([], self.latest_costs)
        return snapshot

    def _sample(self) -> MetricsSnapshot:
        hits, misses = self.cache_totals()
        self._cache_hits.add(max(0, hits - self._last_cache[0]))
        self._cache_misses.add(max(0, misses - self._last_cache[1]))
        self._last_cache = (hits, misses)
        recent = self.registry.drain_recent_response_ms()
        if self.bus.crosses(SNAPSHOTS):
            self._seq += 1
            own = self.sample(recent, self._seq)
            # The whole window goes out first and when a peer asks for it; other
            # samples carry what it gained (`recent`), from which peers follow it.
            full = self._seq == 1 or self.peers.want_window_of(self.worker)
            self.bus.publish(SNAPSHOTS, published(own, full=full))
        else:
            own = self.sample(recent)
        costs = self.costs.snapshot()
        snapshot, inputs = self._merged(own, take_recent=True, costs=costs)
        events = self._judge_alerts(inputs)
        self.latest = snapshot
        self.latest_costs = costs
        self.bus.publish(METRICS, snapshot)
        for event in events:
            self.bus.publish(ALERTS, event)  # to the history too (its listener)
        return snapshot

    def _judge_alerts(self, inputs: AlertInputs) -> list[AlertEvent]:
        """The leader alone judges the rules for the cluster and writes alert.log;
        the others leave it to it. While Redis is unreachable and the lease has run
        out nobody can know the leader: each worker judges for its own feed, and
        alert.log waits for a leader."""
        role = self.leader.role
        if role is Role.FOLLOW:
            return []
        events = self.alerts.evaluate(inputs, write=role is Role.LEAD)
        if events and role is Role.LEAD:
            self.leader.rules_changed()  # the next leader takes over from here
        return events

    def recent_alerts(self, last: int = 20) -> list[AlertEvent]:
        """The cluster's latest alert events as this worker received them."""
        return self.history.recent(last)

    def alerts_firing(self) -> dict[str, bool]:
        """Which rules fire: the engine's own state where this worker judges, else
        what the leader's latest events received here say."""
        if self.leader.role is Role.FOLLOW:
            return self.history.firing(rule.id for rule in self.alerts.rules)
        return self.alerts.firing()

    def _publish_costs(self, rows: list[Any], costs: Any = None) -> None:
        """The cost feed: `costs` (the tick's own, whose rate the rules judged), or
        the meter as it stands (after a sync)."""
        self.bus.publish(COSTS, (costs or self.costs.snapshot(), rows))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            try:
                self._sample()
                self._beat()
                if not self._sync_costs_beside():
                    # with this worker's unsent counts
                    self._publish_costs([], self.latest_costs)
                self._flush_usage_beside()
            except Exception:  # a bad tick must not stop monitoring
                log.exception("monitor tick failed")
            # A fixed cadence: the time a tick takes does not stretch the interval
            # (a late tick is not made up for by a burst).
            deadline = max(deadline + self.interval_s, loop.time())
            await asyncio.sleep(deadline - loop.time())

    # --- the cluster's cost meter (beside the sampler) ------------------------------

    async def read_costs(self) -> None:
        """Before serving: the cluster's cost meter read once, so that `costs`
        answers its totals from the first request. A database that does not answer
        within START_SYNC_TIMEOUT_S does not hold start-up up: the sampler reads the
        meter at its first sync."""
        try:
            await asyncio.wait_for(self.costs.sync(), START_SYNC_TIMEOUT_S)
        except TimeoutError:
            log.warning(
                "the cost meter was not read before serving: the database did not "
                "answer within %g s; it is read beside the sampler",
                START_SYNC_TIMEOUT_S,
            )

    def _sync_costs_beside(self) -> bool:
        """Every COST_SYNC_S of ticks, and at every tick once a period boundary has
        passed (until the meter read shows the period closed), beside the sampler
        (skipped while the last is unfinished): this worker's counts go to the
        cluster's open period in the database, and the leader closes the period
        (costs.csv). Whether a sync started (it publishes the costs when done)."""
        if self._costing is not None and not self._costing.done():
            return False
        self._cost_ticks += 1
        if self._cost_ticks < self._cost_every and not self.costs.boundary_passed():
            return False
        self._cost_ticks = 0
        self._costing = asyncio.get_running_loop().create_task(
            self.sync_costs(), name="costs"
        )
        return True

    async def sync_costs(self) -> None:
        # The leader closes periods. The database's lock makes a close safe from
        # any worker (a period closes once whoever gets there first), so while
        # Redis is unreachable and nobody can know the leader, each worker closes.
        rows = await self.costs.sync(close=self.leader.role is not Role.FOLLOW)
        self._publish_costs(rows)

    def _flush_usage_beside(self) -> None:
        """Every USAGE_FLUSH_S of ticks, beside the sampler (skipped while the last
        is unfinished): the field usage counted here goes to the database."""
        if self._flushing is not None and not self._flushing.done():
            return
        self._usage_ticks += 1
        if self._usage_ticks < self._usage_every:
            return
        self._usage_ticks = 0
        self._flushing = asyncio.get_running_loop().create_task(
            self.usage.flush(), name="usage"
        )

    def _beat(self) -> None:
        if self.heartbeat is None:
            return
        if self._beating is not None and not self._beating.done():
            return
        self._beating = asyncio.get_running_loop().create_task(
            self.heartbeat(self), name="heartbeat"
        )

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self.run(), name="monitor"
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._beating is not None:
            # Let a heartbeat in flight land (it is bounded), so that none arrives
            # after the worker has said goodbye.
            with contextlib.suppress(Exception):
                await self._beating
            self._beating = None
        # What this worker counted since its last sync stays in the open period
        # (a database that does not answer does not hold the shutdown up, nor does
        # a sync in flight that waits on it).
        try:
            await asyncio.wait_for(self._last_sync(), STOP_SYNC_TIMEOUT_S)
        except TimeoutError:
            log.warning("the last cost counts were not saved: the database is slow")
        self._costing = None
        # Likewise the field usage counted since the last flush.
        try:
            await asyncio.wait_for(self._last_flush(), STOP_SYNC_TIMEOUT_S)
        except TimeoutError:
            log.warning("the last field usage was not saved: the database is slow")
        self._flushing = None

    async def _last_flush(self) -> None:
        if self._flushing is not None:
            with contextlib.suppress(Exception):
                await self._flushing
        await self.usage.flush()

    async def _last_sync(self) -> None:
        if self._costing is not None:
            with contextlib.suppress(Exception):
                await self._costing
        await self.costs.sync()


def _encode_alert(event: AlertEvent) -> list[Any]:
    return [
        event.rule,
        event.state.value,
        event.message,
        list(event.values),
        event.threshold,
        event.at.isoformat(),
    ]


def _decode_alert(data: Any) -> AlertEvent:
    rule, state, message, values, threshold, at = data
    return AlertEvent(
        rule=rule,
        state=AlertState(state),
        message=message,
        values=tuple(float(value) for value in values),
        threshold=float(threshold),
        at=datetime.fromisoformat(at),
    )


def _decode_announcement(data: Any) -> tuple[str, float]:
    worker, interval_s = data
    return str(worker), float(interval_s)


# What the monitor's topics carry between workers (the others stay per worker:
# metrics is each worker's merge, costs its meter's).
CODECS: dict[str, Codec] = {
    ALERTS: Codec(_encode_alert, _decode_alert),
    SNAPSHOTS: SAMPLE_CODEC,
    LISTENING: Codec(list, _decode_announcement),
}
