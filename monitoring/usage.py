"""Field usage: how many operations selected each field of the schema, for /metrics
(`graphql_field_usage_total`, `graphql_deprecated_field_usage_total`) and, added by
the hour to the cluster's usage in the database (a ledger, db/usage.py, injected by
app.py), for fieldUsage(since:).

The request path hands `record` the cells of an operation's fields, which its
cached document keeps (server/usage.py): a clock read and an increment per field.
The counts go to the database beside the sampler (`flush`, every USAGE_FLUSH_S of
ticks, and at stop), each in the UTC hour it was counted in."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("gradepulse.usage")

HOUR_S = 3600
FieldKey = tuple[str, str]  # (type, field)


@dataclass(frozen=True, slots=True)
class SchemaField:
    """A field of the schema that can be used: `field` is its name, or
    "name(argument:)" for a deprecated argument."""

    type_name: str
    field_name: str
    deprecated: bool = False


@dataclass(frozen=True, slots=True)
class HourCount:
    """One field's uses in one UTC hour, as they go to the ledger."""

    type_name: str
    field_name: str
    hour: datetime  # UTC, on the hour
    count: int
    last_used_at: datetime  # UTC


@dataclass(frozen=True, slots=True)
class Usage:
    """One field's uses over a span, and the last of them."""

    type_name: str
    field_name: str
    count: int
    last_used_at: datetime | None
    deprecated: bool


class UsageLedgerLike(Protocol):
    async def add(self, rows: Sequence[HourCount]) -> None: ...
    async def dispose(self) -> None: ...


class TotalLike(Protocol):
    """A field's uses as the database sums them (db.usage.UsageTotal)."""

    @property
    def type_name(self) -> str: ...
    @property
    def field_name(self) -> str: ...
    @property
    def count(self) -> int: ...
    @property
    def last_used_at(self) -> datetime: ...


class FieldCell:
    """One field's counts in this worker: `total` since start (/metrics), `taken`
    the part of it already moved to an hour's pending counts, `last` its last use
    (epoch seconds)."""

    __slots__ = ("deprecated", "field_name", "last", "taken", "total", "type_name")

    def __init__(self, type_name: str, field_name: str, deprecated: bool) -> None:
        self.type_name = type_name
        self.field_name = field_name
        self.deprecated = deprecated
        self.total = 0
        self.taken = 0
        self.last = 0.0


def _hour_of(moment: float) -> float:
    return moment - moment % HOUR_S


def hour_start(moment: datetime) -> datetime:
    """The start of the UTC hour that holds `moment` (fieldUsage's granularity)."""
    return _utc(_hour_of(moment.timestamp()))


def _utc(moment: float) -> datetime:
    return datetime.fromtimestamp(moment, UTC)


class FieldUsageMeter(Collector):
    """This worker's field counts, by hour until they are in the ledger."""

    def __init__(
        self,
        *,
        ledger: UsageLedgerLike | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ledger = ledger
        self._clock = clock
        self._cells: dict[FieldKey, FieldCell] = {}
        # The hour the cells' untaken counts belong to: a use in a later hour first
        # moves them to `_pending` (so that each count lands in its own hour).
        self._hour = float("-inf")
        self._hour_end = float("-inf")
        # (type, field, hour) -> [count, last use], not yet in the ledger.
        self._pending: dict[tuple[str, str, float], list[float]] = {}
        # One exchange with the ledger at a time; a read of the ledger plus the
        # unflushed counts never sees a flush half done.
        self._serial = asyncio.Lock()
        self._failing = False
        self.failures = 0

    # --- the schema's fields ---------------------------------------------------------

    def declare(self, fields: Iterable[SchemaField]) -> None:
        """The fields of the schema: each has its series from the start, at 0."""
        for declared in fields:
            key = (declared.type_name, declared.field_name)
            cell = self._cells.get(key)
            if cell is None:
                self._cells[key] = FieldCell(*key, declared.deprecated)
            else:
                cell.deprecated = declared.deprecated

    def fields(self) -> list[SchemaField]:
        return [
            SchemaField(c.type_name, c.field_name, c.deprecated)
            for c in self._cells.values()
        ]

    def cells(self, keys: Iterable[FieldKey]) -> tuple[FieldCell, ...]:
        """The cells of an operation's fields (what `record` takes), in order."""
        found = []
        for key in keys:
            cell = self._cells.get(key)
            if cell is None:  # not declared (a schema built without it): kept too
                cell = self._cells[key] = FieldCell(*key, False)
            found.append(cell)
        return tuple(found)

    # --- the request path ------------------------------------------------------------

    def record(self, cells: tuple[FieldCell, ...]) -> None:
        """One operation that selected these fields."""
        now = self._clock()
        if now >= self._hour_end:
            self._turn(now)
        for cell in cells:
            cell.total += 1
            cell.last = now

    def _turn(self, now: float) -> None:
        self._take()
        self._hour = _hour_of(now)
        self._hour_end = self._hour + HOUR_S

    def _take(self) -> None:
        """Move the untaken counts to the pending counts of their hour."""
        hour = self._hour
        pending = self._pending
        for cell in self._cells.values():
            count = cell.total - cell.taken
            if count:
                cell.taken = cell.total
                key = (cell.type_name, cell.field_name, hour)
                entry = pending.get(key)
                if entry is None:
                    pending[key] = [count, cell.last]
                else:
                    entry[0] += count
                    entry[1] = max(entry[1], cell.last)

    # --- reading -----------------------------------------------------------------------

    def collect(self) -> Iterator[Any]:
        used = CounterMetricFamily(
            "graphql_field_usage",
            "Operations that selected the field (once per operation, whatever the "
            "number of objects), by the type it was selected on.",
            labels=["type", "field"],
        )
        deprecated = CounterMetricFamily(
            "graphql_deprecated_field_usage",
            "Operations that selected a deprecated field, or gave a deprecated "
            'argument (field "name(argument:)").',
            labels=["type", "field"],
        )
        for cell in sorted(
            self._cells.values(), key=lambda c: (c.type_name, c.field_name)
        ):
            labels = [cell.type_name, cell.field_name]
            used.add_metric(labels, cell.total)
            if cell.deprecated:
                deprecated.add_metric(labels, cell.total)
        yield used
        yield deprecated

    def unflushed(self, since: datetime | None = None) -> dict[FieldKey, list[float]]:
        """This worker's counts not yet in the ledger, from the hour that holds
        `since` (all when None): (type, field) -> [count, last use]."""
        start = float("-inf") if since is None else _hour_of(since.timestamp())
        found: dict[FieldKey, list[float]] = {}

        def add(key: FieldKey, count: float, last: float) -> None:
            entry = found.get(key)
            if entry is None:
                found[key] = [count, last]
            else:
                entry[0] += count
                entry[1] = max(entry[1], last)

        for (type_name, field_name, hour), (count, last) in self._pending.items():
            if hour >= start:
                add((type_name, field_name), count, last)
        if self._hour >= start:
            for key, cell in self._cells.items():
                if cell.total > cell.taken:
                    add(key, cell.total - cell.taken, cell.last)
        return found

    async def usage(
        self,
        read: Callable[[], Awaitable[Sequence[TotalLike]]],
        since: datetime | None = None,
    ) -> list[Usage]:
        """Every field, by type and field name: what `read` finds in the ledger
        (the hours from the one holding `since`) plus this worker's unflushed
        counts; no flush of this worker runs meanwhile."""
        async with self._serial:
            stored = await read()
            unflushed = self.unflushed(since)
        totals: dict[FieldKey, list[Any]] = {key: [0, None] for key in self._cells}
        for row in stored:
            entry = totals.setdefault((row.type_name, row.field_name), [0, None])
            entry[0] += row.count
            entry[1] = _later(entry[1], row.last_used_at)
        for key, (count, last) in unflushed.items():
            entry = totals.setdefault(key, [0, None])
            entry[0] += int(count)
            entry[1] = _later(entry[1], _utc(last))
        return [
            Usage(
                type_name,
                field_name,
                count,
                last,
                cell.deprecated
                if (cell := self._cells.get((type_name, field_name)))
                else False,
            )
            for (type_name, field_name), (count, last) in sorted(totals.items())
        ]

    # --- the ledger --------------------------------------------------------------------

    async def flush(self) -> None:
        """Add the counts so far to the ledger, each to its hour. A failure is
        logged once, never raised: the counts wait for the next flush."""
        if self._ledger is None:
            return
        async with self._serial:
            self._take()
            if not self._pending:
                return
            sending, self._pending = self._pending, {}
            rows = [
                HourCount(type_name, field_name, _utc(hour), int(count), _utc(last))
                for (type_name, field_name, hour), (count, last) in sending.items()
            ]
            try:
                await self._ledger.add(rows)
            except Exception as exc:
                for key, (count, last) in sending.items():
                    entry = self._pending.setdefault(key, [0, last])
                    entry[0] += count
                    entry[1] = max(entry[1], last)
                self.failures += 1
                if not self._failing:
                    self._failing = True
                    log.warning(
                        "cannot add the field usage to the database (%s): the "
                        "counts wait and are added when it answers",
                        type(exc).__name__,
                    )
                return
        if self._failing:
            self._failing = False
            log.warning("the field usage is added to the database again")

    async def aclose(self) -> None:
        """Let the ledger go (its engine): at shutdown, after the last flush."""
        if self._ledger is not None:
            await self._ledger.dispose()


def _later(known: datetime | None, other: datetime) -> datetime:
    return other if known is None or other > known else known
