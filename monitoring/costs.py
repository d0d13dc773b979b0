"""The cost meter: prices operations, keeps running and per-operation totals, and
closes periods into costs.csv rows that never overlap and survive a restart.

Money is kept as exact decimals (counts times the configured rates) and rounded to
6 decimals only where it is shown, so the rows always add up to the running totals."""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import os
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

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
MAX_OPERATION_NAME = 200  # longer names are cut, so the state file stays small
TOP_OPERATIONS = 10
RING_S = 3600  # how far back cost_per_hour can look
STATE_VERSION = 1

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = Decimal("0.000001")
_ZERO = Decimal(0)


def round_money(amount: Decimal) -> float:
    """Dollars rounded half up to 6 decimals."""
    return float(amount.quantize(_MICRO, rounding=ROUND_HALF_UP))


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
class CostSnapshot:
    total_cost: float
    db_cost: float
    api_cost: float
    db_queries: int
    api_requests: int
    current_period: CostRow  # the open period so far
    top_operations: list[OperationCost]  # the 10 costliest, costliest first


class _Tally:
    """Operations, counts and exact dollars."""

    __slots__ = ("count", "db_queries", "api_requests", "db_cost", "api_cost")

    def __init__(self) -> None:
        self.count = 0
        self.db_queries = 0
        self.api_requests = 0
        self.db_cost = _ZERO
        self.api_cost = _ZERO

    def add(
        self, db_queries: int, api_requests: int, db: Decimal, api: Decimal
    ) -> None:
        self.count += 1
        self.db_queries += db_queries
        self.api_requests += api_requests
        self.db_cost += db
        self.api_cost += api

    def copy(self) -> _Tally:
        other = _Tally()
        other.count = self.count
        other.db_queries = self.db_queries
        other.api_requests = self.api_requests
        other.db_cost = self.db_cost
        other.api_cost = self.api_cost
        return other

    def subtract(self, other: _Tally) -> None:
        self.count -= other.count
        self.db_queries -= other.db_queries
        self.api_requests -= other.api_requests
        self.db_cost -= other.db_cost
        self.api_cost -= other.api_cost

    @property
    def total_cost(self) -> Decimal:
        return self.db_cost + self.api_cost

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "db_queries": self.db_queries,
            "api_requests": self.api_requests,
            "db_cost": str(self.db_cost),
            "api_cost": str(self.api_cost),
        }

    @classmethod
    def from_json(cls, data: Any) -> _Tally:
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
            setattr(tally, name, amount)
        return tally


class _Bucket:
    __slots__ = ("second", "cost")

    def __init__(self, second: int, cost: Decimal) -> None:
        self.second = second
        self.cost = cost


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _rate(value: float, name: str) -> Decimal:
    # repr() is the shortest form that reads back as the same float: 0.00015, not
    # 0.000149999999999999987...
    rate = Decimal(repr(float(value)))
    if not rate.is_finite() or rate < 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return rate


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class CostMeter:
    """Running, per-operation and per-period costs of one process.

    `record` is called on the request path (a few additions under a lock); `tick`
    (from the sampler), `close_now` (costSummaryWrite) and `save` (at shutdown) do
    the file work. Periods end on multiples of `interval_s` since the Unix epoch."""

    def __init__(
        self,
        *,
        environment: str,
        cost_per_db_query: float,
        cost_per_100_requests: float,
        interval_s: float = 3600,
        sink: FileSink | None = None,
        state_path: str | Path | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s!r}")
        self.environment = environment
        self.interval = timedelta(seconds=interval_s)
        if self.interval <= timedelta(0):
            raise ValueError(f"interval_s is below a microsecond: {interval_s!r}")
        self._db_rate = _rate(cost_per_db_query, "cost_per_db_query")
        self._api_rate = _rate(cost_per_100_requests, "cost_per_100_requests") / 100
        self._sink = sink
        self._state_path = Path(state_path) if state_path is not None else None
        self._clock = clock

        self._lock = threading.Lock()  # guards the tallies, the ring and _start
        self._close_lock = threading.Lock()  # one close at a time
        self._save_lock = threading.Lock()  # one state write at a time
        self._dirty = False
        self._state_failing = False
        self.state_failures = 0

        self._started_at = self._now()
        self._ring: deque[_Bucket] = deque()
        self._totals = _Tally()
        self._period = _Tally()
        self._operations: dict[str, _Tally] = {}
        self._start = self._floor_boundary(self._started_at)
        if self._state_path is not None:
            self._load(self._state_path)

    # -- pricing and recording (the request path) ---------------------------------

    def price(self, db_queries: int, api_requests: int) -> dict[str, int | float]:
        """What one operation costs: the `extensions.cost` of a GraphQL response."""
        db = self._db_rate * db_queries
        api = self._api_rate * api_requests
        return {
            "dbQueries": db_queries,
            "apiRequests": api_requests,
            "dbCost": round_money(db),
            "apiCost": round_money(api),
            "totalCost": round_money(db + api),
        }

    def record(self, operation: str | None, db_queries: int, api_requests: int) -> None:
        """Count one operation in the totals, its operation's totals and the period."""
        if db_queries < 0 or api_requests < 0:
            raise ValueError("counts cannot be negative")
        now = self._now()
        db = self._db_rate * db_queries
        api = self._api_rate * api_requests
        name = ANONYMOUS if operation is None else operation[:MAX_OPERATION_NAME]
        second = int(now.timestamp())
        with self._lock:
            self._totals.add(db_queries, api_requests, db, api)
            self._period.add(db_queries, api_requests, db, api)
            tally = self._operations.get(name)
            if tally is None:
                if len(self._operations) >= MAX_OPERATIONS:
                    name = OTHER
                    tally = self._operations.get(name)
                if tally is None:
                    tally = self._operations[name] = _Tally()
            tally.add(db_queries, api_requests, db, api)
            ring = self._ring
            if ring and ring[-1].second >= second:  # same second (or a clock step back)
                ring[-1].cost += db + api
            else:
                ring.append(_Bucket(second, db + api))
                horizon = second - RING_S
                while ring[0].second <= horizon:
                    ring.popleft()
            self._dirty = True

    # -- reading -------------------------------------------------------------------

    def cost_per_hour(self, window_s: float = 600) -> float:
        """Dollars per hour over the last `window_s` seconds (whole-second buckets, at
        most RING_S), or over the meter's age when it is younger (at least 1 s)."""
        now = self._now()
        horizon = int(now.timestamp()) - window_s
        with self._lock:
            spent = sum((b.cost for b in self._ring if b.second > horizon), _ZERO)
        age = (now - self._started_at).total_seconds()
        span = max(1.0, min(float(window_s), age))
        return round_money(spent * 3600 / Decimal(repr(span)))

    def snapshot(self) -> CostSnapshot:
        with self._lock:
            totals = self._totals.copy()
            current = self._row(self._start, self._period)
            costs = [
                (tally.total_cost, tally.count, name)
                for name, tally in self._operations.items()
            ]
        top = heapq.nsmallest(TOP_OPERATIONS, costs, key=lambda c: (-c[0], -c[1], c[2]))
        return CostSnapshot(
            total_cost=round_money(totals.total_cost),
            db_cost=round_money(totals.db_cost),
            api_cost=round_money(totals.api_cost),
            db_queries=totals.db_queries,
            api_requests=totals.api_requests,
            current_period=current,
            top_operations=[
                OperationCost(operation=name, count=count, total_cost=round_money(cost))
                for cost, count, name in top
            ],
        )

    # -- closing periods -----------------------------------------------------------

    def tick(self) -> list[CostRow]:
        """Close the open period when a boundary has passed (at the last boundary
        <= now, in one row); persist the state when anything changed."""
        rows: list[CostRow] = []
        with self._close_lock:
            now = self._now()
            if now >= self._next_boundary(self._start):
                rows = self._close([self._floor_boundary(now)]) or []
        if self._dirty:
            self.save()
        return rows

    def close_now(self) -> CostRow | None:
        """Close the open period early, at now (whole seconds): the row appended, or
        None when the sink failed (the period then stays open with its counts)."""
        with self._close_lock:
            now = self._now()
            end = max(now.replace(microsecond=0), self._start)
            ends: list[datetime] = []
            if now >= self._next_boundary(self._start):
                # A boundary passed without a tick: end a row there first, so that
                # rows never straddle a boundary.
                boundary = self._floor_boundary(now)
                ends.append(boundary)
                end = max(end, boundary)
            if not ends or end > ends[-1]:
                ends.append(end)
            rows = self._close(ends)
        return rows[-1] if rows else None

    def _close(self, ends: list[datetime]) -> list[CostRow] | None:
        """Append one row per end (the counts go in the first) in one write; on
        success start the next period at the last end. Holds _close_lock."""
        with self._lock:
            taken = self._period.copy()
            start = self._start
        rows = []
        for index, end in enumerate(ends):
            rows.append(self._row(start, taken if index == 0 else _Tally()))
            start = end
        # Records that arrive during the write stay in the period that follows.
        if self._sink is not None and not self._sink.append(
            [format_row(row) for row in rows]
        ):
            return None
        with self._lock:
            self._period.subtract(taken)
            self._start = ends[-1]
            self._dirty = True
        self.save()
        return rows

    # -- state ---------------------------------------------------------------------

    def save(self) -> bool:
        """Write the open period and the totals to the state file (atomically);
        False when it cannot be written (logged once until it works again)."""
        if self._state_path is None:
            self._dirty = False
            return True
        with self._save_lock:
            with self._lock:
                start = self._start
                period = self._period.copy()
                totals = self._totals.copy()
                operations = [(n, t.copy()) for n, t in self._operations.items()]
                self._dirty = False
            state = {
                "version": STATE_VERSION,
                "environment": self.environment,
                "saved_at": _iso(self._now()),
                "period": {"start": _iso(start), **period.to_json()},
                "totals": totals.to_json(),
                "operations": {name: tally.to_json() for name, tally in operations},
            }
            try:
                _write_atomically(self._state_path, json.dumps(state, indent=1))
            except OSError as exc:
                with self._lock:
                    self._dirty = True
                self.state_failures += 1
                if not self._state_failing:
                    log.warning(
                        "cannot write the cost state %s: %s", self._state_path, exc
                    )
                self._state_failing = True
                return False
            if self._state_failing:
                log.warning("the cost state %s is writable again", self._state_path)
            self._state_failing = False
            return True

    def _load(self, path: Path) -> None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            log.info("no cost state at %s: starting fresh", path)
            return
        except OSError as exc:
            log.warning("cannot read the cost state %s (%s): starting fresh", path, exc)
            return
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
                raise ValueError(f"not a version {STATE_VERSION} cost state")
            if data["environment"] != self.environment:
                log.warning(
                    "the cost state %s belongs to %r, not %r: starting fresh",
                    path,
                    data["environment"],
                    self.environment,
                )
                return
            start = datetime.fromisoformat(data["period"]["start"])
            if start.tzinfo is None:
                raise ValueError("the period start has no time zone")
            period = _Tally.from_json(data["period"])
            totals = _Tally.from_json(data["totals"])
            if not isinstance(data["operations"], dict):
                raise ValueError("operations must be an object")
            operations = {
                str(name): _Tally.from_json(tally)
                for name, tally in data["operations"].items()
            }
        except (ValueError, KeyError, TypeError, InvalidOperation) as exc:
            log.warning("corrupt cost state %s (%s): starting fresh", path, exc)
            return
        self._start = start.astimezone(UTC)
        self._period = period
        self._totals = totals
        self._operations = operations

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

    def _row(self, start: datetime, tally: _Tally) -> CostRow:
        return CostRow(
            timestamp=start,
            environment=self.environment,
            db_queries=tally.db_queries,
            api_requests=tally.api_requests,
            db_cost=round_money(tally.db_cost),
            api_cost=round_money(tally.api_cost),
            total_cost=round_money(tally.total_cost),
        )


def _write_atomically(path: Path, text: str) -> None:
    """Write a temp file next to `path`, flush it to disk, then rename it over."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
