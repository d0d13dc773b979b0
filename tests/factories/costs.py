"""Helpers of the test_costs_* modules: a clock, a meter, expected rows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

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


def make_meter(
    tmp_path: Path,
    clock: Clock,
    *,
    rate: float = DEV,
    interval_s: float = 3600,
    environment: str = "development",
) -> CostMeter:
    return CostMeter(
        environment=environment,
        cost_per_db_query=rate,
        cost_per_100_requests=PER_100,
        interval_s=interval_s,
        sink=FileSink("costs.csv", tmp_path / "costs.csv", header=COSTS_HEADER),
        state_path=tmp_path / "costs-state.json",
        clock=clock,
    )


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
