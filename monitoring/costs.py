"""The cost meter: prices operations, counts them, and adds the counts to the cluster's
open cost period in the database (a ledger, db/costs.py, injected by app.py); the
leader closes periods into costs.csv rows that never overlap and survive restarts.

Money is kept exactly (whole picodollars: counts times the configured rates) and
rounded to 6 decimals only where it is shown, so the rows always add up to the
running totals."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Protocol

from monitoring.sinks import FileSink
from monitoring.snapshot import CostRow

log = logging.getLogger("gradepulse.costs")

COSTS_HEADER = (
    "timestamp,environment,db_queries,api_requests,db_cost,api_cost,total_cost"
)
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
ANONYMOUS = "anonymous"
OTHER = "other"
MAX_OPERATIONS = 1000  # distinct names kept; further ones count as OTHER
MAX_OPERATION_NAME = 200  # longer names are cut (the database column's size)
TOP_OPERATIONS = 10
RING_S = 3600  # how far back cost_per_hour can look
RATE_WINDOW_S = 600.0  # the high_cost rule's window by default (ALERT_COST_WINDOW_S)
STATE_VERSION = 1  # of the state file that earlier versions kept
PICO = 10**12  # money is counted in picodollars
PRICES_KEPT = 1000  # distinct (statements, requests) prices remembered

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = Decimal("0.000001")


def round_money(amount: Decimal) -> float:
    """Dollars rounded half up to 6 decimals."""
    return float(amount.quantize(_MICRO, rounding=ROUND_HALF_UP))


def _dollars(pico: int) -> float:
    return round_money(Decimal(pico).scaleb(-12))


def format_row(row: CostRow) -> str:
    """One costs.csv line (without the newline)."""
    stamp = row.timestamp.astimezone(UTC).strftime(TIME_FORMAT)
    return (
        f"{stamp},{row.environment},{row.db_queries},{row.api_requests},"
        f"{row.db_cost:.6f},{row.api_cost:.6f},{row.total_cost:.6f}"
    )


@dataclass(frozen=True, slots=True)
class OperationCost:
    operation: str
    count: int
    total_cost: float


@dataclass(frozen=True, slots=True)
class CostRate:
    """Dollars per hour spent over the last `window_s` (rounded to 6 decimals), and
    whether the meter has seen that whole window (high_cost judges it only then)."""

    per_hour: float
    window_full: bool


@dataclass(frozen=True, slots=True)
class CostSnapshot:
    total_cost: float
    db_cost: float
    api_cost: float
    db_queries: int
    api_requests: int
    current_period: CostRow  # the open period so far
    top_operations: list[OperationCost]  # the 10 costliest, costliest first
    # The meter's rate over its window: what the high_cost rule compares.
    cost_per_hour: float = 0.0
    cost_window_full: bool = False


# --- what the ledger (db/costs.py) is to the meter ---------------------------------


class CountsLike(Protocol):
    @property
    def db_queries(self) -> int: ...
    @property
    def api_requests(self) -> int: ...
    @property
    def db_cost(self) -> int: ...
    @property
    def api_cost(self) -> int: ...


class OperationLike(Protocol):
    @property
    def operation(self) -> str: ...
    @property
    def count(self) -> int: ...
    @property
    def db_cost(self) -> int: ...
    @property
    def api_cost(self) -> int: ...


class ViewLike(Protocol):
    @property
    def period_start(self) -> datetime: ...
    @property
    def period(self) -> CountsLike: ...
    @property
    def totals(self) -> CountsLike: ...
    @property
    def top_operations(self) -> Sequence[OperationLike]: ...
    @property
    def unwritten(self) -> int: ...


class ClosedLike(Protocol):
    @property
    def start(self) -> datetime: ...
    @property
    def tally(self) -> CountsLike: ...


class Ledger(Protocol):
    """The cluster's meter in the database (db.costs.CostLedger)."""

    async def sync(
        self,
        period: Any,
        operations: Mapping[str, Any],
        *,
        start: datetime,
        plan: Callable[[datetime], Sequence[datetime]] | None = None,
        totals: Any = None,
    ) -> tuple[Any, list[Any]]: ...

    async def write_unwritten(
        self, write: Callable[[list[Any]], bool], *, now: datetime
    ) -> list[Any] | None: ...

    async def dispose(self) -> None: ...


class _Tally:
    """Operations, counts and exact picodollars."""

    __slots__ = ("count", "db_queries", "api_requests", "db_cost", "api_cost")

    def __init__(self) -> None:
        self.count = 0
        self.db_queries = 0
        self.api_requests = 0
        self.db_cost = 0
        self.api_cost = 0

    def add(self, db_queries: int, api_requests: int, db: int, api: int) -> None:
        self.count += 1
        self.db_queries += db_queries
        self.api_requests += api_requests
        self.db_cost += db
        self.api_cost += api

    def merge(self, other: _Tally) -> None:
        self.count += other.count
        self.db_queries += other.db_queries
        self.api_requests += other.api_requests
        self.db_cost += other.db_cost
        self.api_cost += other.api_cost

    def copy(self) -> _Tally:
        other = _Tally()
        other.merge(self)
        return other

    @classmethod
    def of(cls, counts: CountsLike) -> _Tally:
        tally = cls()
        tally.db_queries = counts.db_queries
        tally.api_requests = counts.api_requests
        tally.db_cost = counts.db_cost
        tally.api_cost = counts.api_cost
        return tally

    @classmethod
    def from_state(cls, data: Any) -> _Tally:
        """A tally of the state file of earlier versions (dollars as decimal text)."""
        if not isinstance(data, dict):
            raise ValueError("a tally must be an object")
        tally = cls()
        for name in ("count", "db_queries", "api_requests"):
            value = data[name]
            if type(value) is not int or value < 0:
                raise ValueError(f"{name} must be a non-negative integer")
            setattr(tally, name, value)
        for name in ("db_cost", "api_cost"):
            value = data[name]
            if not isinstance(value, str):
                raise ValueError(f"{name} must be a decimal string")
            amount = Decimal(value)
            if not amount.is_finite() or amount < 0:
                raise ValueError(f"{name} must be a non-negative amount")
            setattr(tally, name, int(amount.scaleb(12).to_integral_value()))
        return tally


class _Bucket:
    __slots__ = ("second", "cost")

    def __init__(self, second: int, cost: int) -> None:
        self.second = second
        self.cost = cost


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _rate(value: float, name: str) -> int:
    """The rate in picodollars, exactly: repr() is the shortest form that reads back
    as the same float (0.00015, not 0.000149999999999999987...)."""
    rate = Decimal(repr(float(value)))
    if not rate.is_finite() or rate < 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    pico = rate.scaleb(12)
    if pico != pico.to_integral_value():
        raise ValueError(f"{name} has more than 12 decimals: {value!r}")
    return int(pico)


class CostMeter:
    """Per-operation prices and counts of this worker, and the cluster's meter.

    `record` is called on the request path (a few additions under a lock). `sync`
    (beside the sampler, every few seconds and at a boundary) adds what was recorded
    since to the cluster's open period in the database and reads the cluster's
    totals back; with `close=True` (the leader) it also closes the period
    `close_delay_s` after a boundary and writes the rows to costs.csv. `close_now` (costSummaryWrite, on any worker) closes it early.
    `snapshot` is the cluster's meter as last read plus what this worker has not
    sent yet. Periods end on multiples of `interval_s` since the Unix epoch."""

    def __init__(
        self,
        *,
        environment: str,
        cost_per_db_query: float,
        cost_per_100_requests: float,
        interval_s: float = 3600,
        sink: FileSink | None = None,
        ledger: Ledger | None = None,
        legacy_state_path: str | Path | None = None,
        close_delay_s: float = 0.0,
        rate_window_s: float = RATE_WINDOW_S,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s!r}")
        if not 0 < rate_window_s <= RING_S:
            raise ValueError(
                f"rate_window_s must be above 0 and at most {RING_S}, "
                f"got {rate_window_s!r}"
            )
        self.rate_window_s = float(rate_window_s)
        self.environment = environment
        self.interval = timedelta(seconds=interval_s)
        if self.interval <= timedelta(0):
            raise ValueError(f"interval_s is below a microsecond: {interval_s!r}")
        self._db_rate = _rate(cost_per_db_query, "cost_per_db_query")
        per_100 = _rate(cost_per_100_requests, "cost_per_100_requests")
        if per_100 % 100:
            raise ValueError(
                "cost_per_100_requests has more than 10 decimals: "
                f"{cost_per_100_requests!r}"
            )
        self._api_rate = per_100 // 100
        self._sink = sink
        self._ledger = ledger
        self._legacy = Path(legacy_state_path) if legacy_state_path else None
        self._clock = clock
        # The leader closes a period this long after its boundary, so that the other
        # workers' counts of it (added at their first sync past it) are in its row.
        self._close_delay = timedelta(seconds=close_delay_s)

        self._lock = threading.Lock()  # guards the pending tallies and the ring
        self._serial = asyncio.Lock()  # one ledger exchange of this worker at a time
        self._failing = False
        self.failures = 0  # exchanges with the ledger that failed

        self._started_at = self._now()
        self._ring: deque[_Bucket] = deque()
        self._pending = _Tally()  # recorded here, not in the ledger yet
        self._pending_operations: dict[str, _Tally] = {}
        self._prices: dict[tuple[int, int], dict[str, int | float]] = {}
        self._view: Any = None  # the ledger's last answer (ViewLike)
        # (second, the cluster's total in picodollars) at each sync, RING_S long.
        self._totals_seen: deque[tuple[int, int]] = deque()

    # -- pricing and recording (the request path) ---------------------------------

    def price(self, db_queries: int, api_requests: int) -> dict[str, int | float]:
        """What one operation costs: the `extensions.cost` of a GraphQL response.
        Operations mostly run a handful of statements: their prices are kept."""
        key = (db_queries, api_requests)
        known = self._prices.get(key)
        if known is None:
            db = self._db_rate * db_queries
            api = self._api_rate * api_requests
            known = {
                "dbQueries": db_queries,
                "apiRequests": api_requests,
                "dbCost": _dollars(db),
                "apiCost": _dollars(api),
                "totalCost": _dollars(db + api),
            }
            if len(self._prices) < PRICES_KEPT:
                self._prices[key] = known
        return dict(known)

    def record(self, operation: str | None, db_queries: int, api_requests: int) -> None:
        """Count one operation, to be added to the cluster's meter at the next sync."""
        if db_queries < 0 or api_requests < 0:
            raise ValueError("counts cannot be negative")
        now = self._now()
        db = self._db_rate * db_queries
        api = self._api_rate * api_requests
        name = ANONYMOUS if operation is None else operation[:MAX_OPERATION_NAME]
        second = int(now.timestamp())
        with self._lock:
            self._pending.add(db_queries, api_requests, db, api)
            tally = self._pending_operations.get(name)
            if tally is None:
                if len(self._pending_operations) >= MAX_OPERATIONS:
                    name = OTHER
                    tally = self._pending_operations.get(name)
                if tally is None:
                    tally = self._pending_operations[name] = _Tally()
            tally.add(db_queries, api_requests, db, api)
            ring = self._ring
            if ring and ring[-1].second >= second:  # same second (or a clock step back)
                ring[-1].cost += db + api
            else:
                ring.append(_Bucket(second, db + api))
                horizon = second - RING_S
                while ring[0].second <= horizon:
                    ring.popleft()

    # -- reading -------------------------------------------------------------------

    def cost_per_hour(self, window_s: float | None = None) -> float:
        """`rate(window_s).per_hour`."""
        return self.rate(window_s).per_hour

    def rate(self, window_s: float | None = None) -> CostRate:
        """The cluster's dollars per hour over the last `window_s` seconds (the
        meter's `rate_window_s` by default; at most RING_S): how much the cluster's
        running total grew, as read at each sync, plus this worker's counts not sent
        yet; before the first sync, this worker's own spending (whole-second
        buckets). Always the spending of the window over the window: a meter younger
        than it shows what it saw (nothing is extrapolated from its first seconds)
        and says its window is not full yet."""
        window = self.rate_window_s if window_s is None else float(window_s)
        now = self._now()
        second = int(now.timestamp())
        horizon = second - window
        with self._lock:
            if self._totals_seen:
                pending = self._pending.db_cost + self._pending.api_cost
                first_second, base = self._totals_seen[0]
                for seen_second, total in self._totals_seen:
                    if seen_second > horizon:
                        break
                    first_second, base = seen_second, total
                spent = self._totals_seen[-1][1] + pending - base
                full = first_second <= horizon
            else:
                spent = sum(b.cost for b in self._ring if b.second > horizon)
                full = (now - self._started_at).total_seconds() >= window
        per_hour = round_money(
            Decimal(spent).scaleb(-12) * 3600 / Decimal(repr(window))
        )
        return CostRate(per_hour, full)

    def _saw(self, view: Any) -> None:
        """Keep the cluster's running total as this sync read it (for cost_per_hour)."""
        second = int(self._now().timestamp())
        total = view.totals.db_cost + view.totals.api_cost
        with self._lock:
            seen = self._totals_seen
            if seen and seen[-1][0] >= second:  # same second: the latest stands
                seen[-1] = (seen[-1][0], total)
            else:
                seen.append((second, total))
            while seen[0][0] <= second - RING_S - 1 and len(seen) > 1:
                seen.popleft()

    def snapshot(self) -> CostSnapshot:
        with self._lock:
            pending = self._pending.copy()
            operations = {n: t.copy() for n, t in self._pending_operations.items()}
        view = self._view
        period, totals = pending.copy(), pending.copy()
        costs: dict[str, list[int]] = {}
        if view is not None:
            start = view.period_start
            period.merge(_Tally.of(view.period))
            totals.merge(_Tally.of(view.totals))
            for kept in view.top_operations:
                costs[kept.operation] = [kept.db_cost + kept.api_cost, kept.count]
        else:
            start = self._floor_boundary(self._started_at)
        for name, tally in operations.items():
            cost = costs.setdefault(name, [0, 0])
            cost[0] += tally.db_cost + tally.api_cost
            cost[1] += tally.count
        top = sorted(costs.items(), key=lambda c: (-c[1][0], -c[1][1], c[0]))
        rate = self.rate()
        return CostSnapshot(
            total_cost=_dollars(totals.db_cost + totals.api_cost),
            db_cost=_dollars(totals.db_cost),
            api_cost=_dollars(totals.api_cost),
            db_queries=totals.db_queries,
            api_requests=totals.api_requests,
            current_period=self._row(start, period),
            top_operations=[
                OperationCost(operation=name, count=count, total_cost=_dollars(cost))
                for name, (cost, count) in top[:TOP_OPERATIONS]
            ],
            cost_per_hour=rate.per_hour,
            cost_window_full=rate.window_full,
        )

    # -- the cluster's meter -------------------------------------------------------

    def boundary_passed(self) -> bool:
        """Whether the open period as last read has ended (or the meter was never
        read): each worker adds its counts then, before the leader closes it."""
        view = self._view
        if view is None:
            return True
        return self._now() >= self._next_boundary(view.period_start)

    async def sync(self, *, close: bool = False) -> list[CostRow]:
        """Add what was recorded to the cluster's open period and read the meter
        back; with `close` (the leader) close the period when a boundary has passed
        (at the last boundary <= now, in one row) and append the closed rows not yet
        in costs.csv. The rows appended; a failure is logged once, never raised."""
        if self._ledger is None:
            return []
        rows: list[CostRow] = []
        async with self._serial:
            try:
                await self._import_legacy_state()
                now = self._now()
                view = self._view
                # Judged again under the database's lock; here only whether a
                # boundary may have passed since the meter was last read.
                due = close and (
                    view is None
                    or view.unwritten
                    or now >= self._next_boundary(view.period_start) + self._close_delay
                )
                closed = await self._push(self._boundary_plan(now) if due else None)
                if close and (closed or self._view.unwritten):
                    rows = await self._write(now) or []
            except Exception as exc:  # the database: counts stay pending
                self._failed(exc)
                return []
        self._recovered()
        return rows

    async def close_now(self) -> CostRow | None:
        """Close the cluster's open period early, at now (whole seconds), with what
        this worker recorded so far, and append its row (after any row not yet
        written): the row, or None when costs.csv could not be written (the row is
        kept and appended later). Database errors are raised."""
        if self._ledger is None:
            raise RuntimeError("the cost meter has no ledger")
        async with self._serial:
            now = self._now()
            closed = await self._push(self._early_plan(now))
            written = await self._write(now)
        if written is None or not closed:
            return None
        return self._closed_row(closed[-1])

    async def _push(
        self, plan: Callable[[datetime], Sequence[datetime]] | None
    ) -> list[Any]:
        assert self._ledger is not None
        with self._lock:
            taken, self._pending = self._pending, _Tally()
            operations, self._pending_operations = self._pending_operations, {}
        try:
            view, closed = await self._ledger.sync(
                taken,
                operations,
                # A new meter opens its first period where this worker started.
                start=self._floor_boundary(self._started_at),
                plan=plan,
            )
        except BaseException:
            with self._lock:  # back, with whatever was recorded meanwhile
                taken.merge(self._pending)
                self._pending = taken
                for name, tally in self._pending_operations.items():
                    operations.setdefault(name, _Tally()).merge(tally)
                self._pending_operations = operations
            raise
        self._view = view
        self._saw(view)
        return closed

    async def _write(self, now: datetime) -> list[CostRow] | None:
        """Append the closed rows not yet in costs.csv (under the ledger's lock)."""
        assert self._ledger is not None
        sink = self._sink

        def append(closed: list[Any]) -> bool:
            if sink is None:
                return True
            lines = [format_row(self._closed_row(period)) for period in closed]
            return sink.append(lines, resume=True)

        written = await self._ledger.write_unwritten(append, now=now)
        if written is None:
            return None
        return [self._closed_row(period) for period in written]

    def _boundary_plan(self, now: datetime) -> Callable[[datetime], list[datetime]]:
        def plan(start: datetime) -> list[datetime]:
            if now >= self._next_boundary(start) + self._close_delay:
                return [self._floor_boundary(now)]
            return []

        return plan

    def _early_plan(self, now: datetime) -> Callable[[datetime], list[datetime]]:
        def plan(start: datetime) -> list[datetime]:
            end = max(now.replace(microsecond=0), start)
            ends: list[datetime] = []
            if now >= self._next_boundary(start):
                # A boundary passed without a close: end a row there first, so
                # that rows never straddle a boundary.
                boundary = self._floor_boundary(now)
                ends.append(boundary)
                end = max(end, boundary)
            if not ends or end > ends[-1]:
                ends.append(end)
            return ends

        return plan

    async def aclose(self) -> None:
        """Let the ledger go (its engine): at shutdown, after the last sync."""
        if self._ledger is not None:
            await self._ledger.dispose()

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        if not self._failing:
            self._failing = True
            log.warning(
                "cannot reach the cost meter in the database (%s): this worker's "
                "counts wait and are added when it answers",
                type(exc).__name__,
            )

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            log.warning("the cost meter in the database answers again")

    # -- the state file of earlier versions ----------------------------------------

    async def _import_legacy_state(self) -> None:
        """Once: add the open period, totals and operations of the state file that
        earlier versions kept (COSTS_CSV_PATH.state.json) to the cluster's meter,
        and rename it to .imported. The rename comes first and claims the file, so
        that two workers starting together never import it twice."""
        path, self._legacy = self._legacy, None
        if path is None:
            return
        claimed = path.with_name(path.name + ".imported")
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("cannot claim the old cost state %s: %s", path, exc)
            return
        try:
            start, period, totals, operations = self._read_state(claimed)
        except (OSError, ValueError, KeyError, TypeError, InvalidOperation) as exc:
            log.warning("old cost state %s not imported: %s", claimed, exc)
            return
        assert self._ledger is not None
        try:
            view, _ = await self._ledger.sync(
                period, operations, start=start, totals=totals
            )
        except BaseException:
            os.rename(claimed, path)  # the next start tries again
            raise
        self._view = view
        log.info("imported the open cost period of %s into the database", path)

    def _read_state(
        self, path: Path
    ) -> tuple[datetime, _Tally, _Tally, dict[str, _Tally]]:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError(f"not a version {STATE_VERSION} cost state")
        if data["environment"] != self.environment:
            raise ValueError(
                f"it belongs to {data['environment']!r}, not {self.environment!r}"
            )
        start = datetime.fromisoformat(data["period"]["start"])
        if start.tzinfo is None:
            raise ValueError("the period start has no time zone")
        if not isinstance(data["operations"], dict):
            raise ValueError("operations must be an object")
        operations = {
            str(name)[:MAX_OPERATION_NAME]: _Tally.from_state(tally)
            for name, tally in data["operations"].items()
        }
        return (
            start.astimezone(UTC),
            _Tally.from_state(data["period"]),
            _Tally.from_state(data["totals"]),
            operations,
        )

    # -- helpers -------------------------------------------------------------------

    def _now(self) -> datetime:
        moment = self._clock()
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)

    def _floor_boundary(self, moment: datetime) -> datetime:
        """The last boundary at or before `moment`."""
        return _EPOCH + ((moment - _EPOCH) // self.interval) * self.interval

    def _next_boundary(self, moment: datetime) -> datetime:
        """The first boundary strictly after `moment`."""
        return _EPOCH + ((moment - _EPOCH) // self.interval + 1) * self.interval

    def _closed_row(self, period: Any) -> CostRow:
        return self._row(period.start, _Tally.of(period.tally))

    def _row(self, start: datetime, tally: _Tally) -> CostRow:
        return CostRow(
            timestamp=start,
            environment=self.environment,
            db_queries=tally.db_queries,
            api_requests=tally.api_requests,
            db_cost=_dollars(tally.db_cost),
            api_cost=_dollars(tally.api_cost),
            total_cost=_dollars(tally.db_cost + tally.api_cost),
        )
