"""The cost meter's storage: the open period and the totals every worker adds to, the
closed periods waiting for (or written to) costs.csv, and the cost of each operation.

Every change runs in one short transaction that first locks the environment's meter
row (SELECT ... FOR UPDATE on PostgreSQL; BEGIN IMMEDIATE on SQLite, which locks the
whole file), so that adding counts, closing a period and writing rows to costs.csv
never race between workers or machines. Money is in whole picodollars (10^-12)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from db import models
from db.engine import Database, create_database

M = models.CostMeter.__table__.c
P = models.CostPeriod.__table__.c
O = models.CostOperation.__table__.c  # noqa: E741
OTHER = "other"  # the operation names past the limit count under it
# Rows of one statement when many operation names are new at once.
_CHUNK = 500


class Counts(Protocol):
    """What a worker adds: statements, HTTP operations and their exact cost."""

    @property
    def db_queries(self) -> int: ...
    @property
    def api_requests(self) -> int: ...
    @property
    def db_cost(self) -> int: ...
    @property
    def api_cost(self) -> int: ...


class OperationCounts(Counts, Protocol):
    @property
    def count(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Tally:
    db_queries: int = 0
    api_requests: int = 0
    db_cost: int = 0
    api_cost: int = 0


@dataclass(frozen=True, slots=True)
class OperationTally:
    operation: str
    count: int
    db_cost: int
    api_cost: int


@dataclass(frozen=True, slots=True)
class MeterView:
    """The cluster's meter as one transaction saw it."""

    period_start: datetime  # UTC, aware
    period: Tally
    totals: Tally
    top_operations: tuple[OperationTally, ...]  # costliest first
    unwritten: int  # closed periods not yet in costs.csv


@dataclass(frozen=True, slots=True)
class ClosedPeriod:
    id: int
    start: datetime  # UTC, aware
    end: datetime
    tally: Tally


# Given the open period's start (under the lock), where to end it: no ends leaves it
# open; several end it in as many rows, the counts in the first.
Plan = Callable[[datetime], Sequence[datetime]]


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC)


def _tally(row: Any, prefix: str = "") -> Tally:
    return Tally(
        db_queries=row[f"{prefix}db_queries"],
        api_requests=row[f"{prefix}api_requests"],
        db_cost=row[f"{prefix}db_cost"],
        api_cost=row[f"{prefix}api_cost"],
    )


def _empty(counts: Counts) -> bool:
    return not (
        counts.db_queries or counts.api_requests or counts.db_cost or counts.api_cost
    )


class CostLedger:
    """The meter of one environment, on an engine of its own: its statements are
    never counted as the operations' DB queries, nor charged."""

    def __init__(
        self,
        database: Database,
        environment: str,
        *,
        max_operations: int = 1000,
        top: int = 10,
        owns_database: bool = False,
    ) -> None:
        self.database = database
        self.environment = environment
        self.max_operations = max_operations
        self.top = top
        self._owns_database = owns_database

    @classmethod
    def connect(
        cls, url: str, environment: str, *, busy_timeout_ms: int = 5000
    ) -> CostLedger:
        database = create_database(
            url, pool_size=1, max_overflow=1, busy_timeout_ms=busy_timeout_ms
        )
        return cls(database, environment, owns_database=True)

    async def dispose(self) -> None:
        if self._owns_database:
            await self.database.dispose()

    # --- the transactions ----------------------------------------------------------

    async def sync(
        self,
        period: Counts,
        operations: Mapping[str, OperationCounts],
        *,
        start: datetime,
        plan: Plan | None = None,
        totals: Counts | None = None,
    ) -> tuple[MeterView, list[ClosedPeriod]]:
        """Add `period` to the open period and to the totals (or `totals` to these:
        an imported state), and `operations` to theirs; then close the open period at
        the ends `plan` gives; read the meter back. `start` opens the first period
        of a new meter. With nothing to add and no plan it only reads, without the
        lock (no write transaction: SQLite's writers do not wait on it)."""
        quiet = _empty(period) and not operations and plan is None and totals is None
        if quiet:
            async with self.database.sessions() as session:
                if (view := await self._view(session)) is not None:
                    return view, []
        async with self.database.writing() as session:
            row = await self._lock(session, start)
            if not _empty(period) or (totals is not None and not _empty(totals)):
                await self._add(session, period, totals or period)
            if operations:
                await self._add_operations(session, operations)
            closed: list[ClosedPeriod] = []
            if plan is not None:
                ends = list(plan(_aware(row["period_start"])))
                if ends:
                    closed = await self._close(session, ends)
            view = await self._view(session)
            assert view is not None  # the lock made the row
        return view, closed

    async def view(self, *, start: datetime) -> MeterView:
        return (await self.sync(Tally(), {}, start=start))[0]

    async def write_unwritten(
        self, write: Callable[[list[ClosedPeriod]], bool], *, now: datetime
    ) -> list[ClosedPeriod] | None:
        """Under the lock: the closed periods not yet in costs.csv, oldest first, to
        `write` (run in a thread; it must skip what the file already ends with), then
        marked written. None when `write` failed: they stay unwritten."""
        async with self.database.writing() as session:
            await self._lock(session, now)
            result = await session.execute(
                select(P.id, P.period_start, P.period_end, *_COUNTS)
                .where(P.environment == self.environment, P.written_at.is_(None))
                .order_by(P.id)
            )
            rows = [
                ClosedPeriod(
                    id=r.id,
                    start=_aware(r.period_start),
                    end=_aware(r.period_end),
                    tally=_tally(r._mapping),
                )
                for r in result
            ]
            if not rows:
                return []
            if not await asyncio.to_thread(write, rows):
                return None
            # A worker dying here leaves them unwritten, and in the file: the next
            # write finds them at its end and does not write them again.
            await session.execute(
                update(models.CostPeriod)
                .where(P.id.in_([r.id for r in rows]))
                .values(written_at=_naive(now))
            )
        return rows

    # --- steps (inside a transaction) -------------------------------------------------

    async def _lock(self, session: AsyncSession, start: datetime) -> Any:
        query = (
            select(M.period_start)
            .where(M.environment == self.environment)
            # PostgreSQL waits here for any other worker's transaction on the
            # meter; SQLite's BEGIN IMMEDIATE already holds the file.
            .with_for_update()
        )
        row = (await session.execute(query)).mappings().first()
        if row is None:
            await session.execute(
                _dialect_insert(self.database.dialect)(models.CostMeter)
                .values(
                    environment=self.environment,
                    period_start=_naive(start),
                    **dict.fromkeys(_METER_COUNTS, 0),
                )
                .on_conflict_do_nothing()
            )
            row = (await session.execute(query)).mappings().one()
        return row

    async def _add(self, session: AsyncSession, period: Counts, totals: Counts) -> None:
        # Increments in SQL: nothing another worker added is overwritten.
        await session.execute(
            update(models.CostMeter)
            .where(M.environment == self.environment)
            .values(
                db_queries=M.db_queries + period.db_queries,
                api_requests=M.api_requests + period.api_requests,
                db_cost=M.db_cost + period.db_cost,
                api_cost=M.api_cost + period.api_cost,
                total_db_queries=M.total_db_queries + totals.db_queries,
                total_api_requests=M.total_api_requests + totals.api_requests,
                total_db_cost=M.total_db_cost + totals.db_cost,
                total_api_cost=M.total_api_cost + totals.api_cost,
            )
        )

    async def _add_operations(
        self, session: AsyncSession, operations: Mapping[str, OperationCounts]
    ) -> None:
        names = list(operations)
        known: set[str] = set()
        for at in range(0, len(names), _CHUNK):
            chunk = names[at : at + _CHUNK]
            known.update(
                await session.scalars(
                    select(O.operation).where(
                        O.environment == self.environment, O.operation.in_(chunk)
                    )
                )
            )
        merged: dict[str, list[int]] = {}
        room: int | None = None
        for name, counts in operations.items():
            if name not in known:
                if room is None:
                    kept = await session.scalar(
                        select(func.count()).where(O.environment == self.environment)
                    )
                    room = self.max_operations - int(kept or 0)
                if room > 0:
                    room -= 1
                else:
                    name = OTHER
            into = merged.setdefault(name, [0, 0, 0])
            into[0] += counts.count
            into[1] += counts.db_cost
            into[2] += counts.api_cost
        rows = [
            {
                "environment": self.environment,
                "operation": name,
                "count": count,
                "db_cost": db_cost,
                "api_cost": api_cost,
            }
            for name, (count, db_cost, api_cost) in merged.items()
        ]
        statement = _dialect_insert(self.database.dialect)(models.CostOperation)
        statement = statement.on_conflict_do_update(
            index_elements=[O.environment, O.operation],
            set_={
                "count": O.count + statement.excluded.count,
                "db_cost": O.db_cost + statement.excluded.db_cost,
                "api_cost": O.api_cost + statement.excluded.api_cost,
            },
        )
        for at in range(0, len(rows), _CHUNK):
            await session.execute(statement, rows[at : at + _CHUNK])

    async def _close(
        self, session: AsyncSession, ends: list[datetime]
    ) -> list[ClosedPeriod]:
        row = (
            (
                await session.execute(
                    select(M.period_start, *_PERIOD_COUNTS).where(
                        M.environment == self.environment
                    )
                )
            )
            .mappings()
            .one()
        )
        start = _aware(row["period_start"])
        tallies = [_tally(row), *(Tally() for _ in ends[1:])]
        values = []
        for end, tally in zip(ends, tallies, strict=True):
            values.append(
                {
                    "environment": self.environment,
                    "period_start": _naive(start),
                    "period_end": _naive(end),
                    "db_queries": tally.db_queries,
                    "api_requests": tally.api_requests,
                    "db_cost": tally.db_cost,
                    "api_cost": tally.api_cost,
                    "written_at": None,
                }
            )
            start = end
        result = await session.execute(
            insert(models.CostPeriod).returning(P.id, P.period_start), values
        )
        ids = {  # one statement; ids matched by start, never by RETURNING's order
            _aware(r.period_start): r.id for r in result
        }
        await session.execute(
            update(models.CostMeter)
            .where(M.environment == self.environment)
            .values(
                period_start=_naive(ends[-1]),
                **dict.fromkeys(
                    ("db_queries", "api_requests", "db_cost", "api_cost"), 0
                ),
            )
        )
        closed = []
        start = _aware(row["period_start"])
        for end, tally in zip(ends, tallies, strict=True):
            closed.append(ClosedPeriod(ids[start], start, end, tally))
            start = end
        return closed

    async def _view(self, session: AsyncSession) -> MeterView | None:
        """The meter as it stands; None before its first period."""
        row = (
            (
                await session.execute(
                    select(M.period_start, *_PERIOD_COUNTS, *_TOTAL_COUNTS).where(
                        M.environment == self.environment
                    )
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        top = await session.execute(
            select(O.operation, O.count, O.db_cost, O.api_cost)
            .where(O.environment == self.environment)
            .order_by((O.db_cost + O.api_cost).desc(), O.count.desc(), O.operation)
            .limit(self.top)
        )
        unwritten = await session.scalar(
            select(func.count()).where(
                P.environment == self.environment, P.written_at.is_(None)
            )
        )
        return MeterView(
            period_start=_aware(row["period_start"]),
            period=_tally(row),
            totals=_tally(row, "total_"),
            top_operations=tuple(
                OperationTally(r.operation, r.count, r.db_cost, r.api_cost) for r in top
            ),
            unwritten=int(unwritten or 0),
        )


_METER_COUNTS = (
    "db_queries",
    "api_requests",
    "db_cost",
    "api_cost",
    "total_db_queries",
    "total_api_requests",
    "total_db_cost",
    "total_api_cost",
)
_PERIOD_COUNTS = (M.db_queries, M.api_requests, M.db_cost, M.api_cost)
_TOTAL_COUNTS = (
    M.total_db_queries,
    M.total_api_requests,
    M.total_db_cost,
    M.total_api_cost,
)
_COUNTS = (P.db_queries, P.api_requests, P.db_cost, P.api_cost)


def _dialect_insert(dialect: str) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert
