"""Helpers of the test_costs_* modules: a clock, meters on the cluster's ledger in a
scratch database, expected rows."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from db.costs import CostLedger
from db.engine import create_database
from db.migrations import upgrade
from monitoring.costs import (
    COSTS_HEADER,
    CostMeter,
)
from monitoring.sinks import FileSink
from monitoring.snapshot import CostRow

DEV, STAGING, PROD = 0.0001, 0.00015, 0.0002
PER_100 = 0.001


def at(hour: int, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime(2024, 1, 15, hour, minute, second, micro, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


MakeMeter = Callable[..., CostMeter]


@asynccontextmanager
async def meters(url: str, tmp_path: Path) -> AsyncIterator[MakeMeter]:
    """A factory of meters (workers, or one worker's restarts) on one migrated
    database, all writing tmp_path/costs.csv; their ledgers closed at the end."""
    database = create_database(url)
    try:
        await upgrade(database)
    finally:
        await database.dispose()
    made: list[CostMeter] = []

    def make(
        clock: Clock,
        *,
        rate: float = DEV,
        interval_s: float = 3600,
        environment: str = "development",
        legacy_state_path: Path | None = None,
    ) -> CostMeter:
        meter = CostMeter(
            environment=environment,
            cost_per_db_query=rate,
            cost_per_100_requests=PER_100,
            interval_s=interval_s,
            sink=FileSink("costs.csv", tmp_path / "costs.csv", header=COSTS_HEADER),
            ledger=CostLedger.connect(url, environment),
            legacy_state_path=legacy_state_path,
            clock=clock,
        )
        made.append(meter)
        return meter

    try:
        yield make
    finally:
        for meter in made:
            await meter.aclose()


def csv_lines(tmp_path: Path) -> list[str]:
    return (tmp_path / "costs.csv").read_text().splitlines()


def row(
    start: datetime,
    db_queries: int,
    api_requests: int,
    db_cost: float,
    api_cost: float,
    total_cost: float,
) -> CostRow:
    return CostRow(
        start, "development", db_queries, api_requests, db_cost, api_cost, total_cost
    )


def empty_row(start: datetime) -> CostRow:
    return row(start, 0, 0, 0.0, 0.0, 0.0)
