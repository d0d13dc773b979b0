"""costs.csv read back: its rows summed per day, ISO week or month (UTC), exactly (the
6-decimal amounts as decimals), for `gradepulse costs report`."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Literal

from monitoring.costs import COSTS_HEADER, TIME_FORMAT

Period = Literal["day", "week", "month"]
PERIODS: tuple[Period, ...] = ("day", "week", "month")
COLUMNS = ("db_queries", "api_requests", "db_cost", "api_cost", "total_cost")


class CostsFileError(Exception):
    """costs.csv is not as the server writes it; the message names the line."""


@dataclass(frozen=True, slots=True)
class CostLine:
    """One costs.csv row: the period that starts at `start` (UTC)."""

    start: datetime
    db_queries: int
    api_requests: int
    db_cost: Decimal
    api_cost: Decimal
    total_cost: Decimal


@dataclass(frozen=True, slots=True)
class Totals:
    """The sums of the rows of one day, week or month (or of all of them)."""

    period: str
    rows: int = 0
    db_queries: int = 0
    api_requests: int = 0
    db_cost: Decimal = Decimal(0)
    api_cost: Decimal = Decimal(0)
    total_cost: Decimal = Decimal(0)

    def add(self, line: CostLine) -> Totals:
        return Totals(
            period=self.period,
            rows=self.rows + 1,
            db_queries=self.db_queries + line.db_queries,
            api_requests=self.api_requests + line.api_requests,
            db_cost=self.db_cost + line.db_cost,
            api_cost=self.api_cost + line.api_cost,
            total_cost=self.total_cost + line.total_cost,
        )


def read_costs(text: str) -> list[CostLine]:
    """The rows of a costs.csv; CostsFileError at the first line that is not one."""
    lines = text.splitlines()
    if not lines:
        return []
    if lines[0] != COSTS_HEADER:
        raise CostsFileError(f"line 1: expected the header {COSTS_HEADER}")
    rows = []
    for number, fields in enumerate(csv.reader(lines[1:]), start=2):
        if fields:
            rows.append(_row(number, fields))
    return rows


def _row(number: int, fields: list[str]) -> CostLine:
    if len(fields) != 7:
        raise CostsFileError(f"line {number}: {len(fields)} fields, not 7")
    stamp, _environment, *values = fields
    try:
        start = datetime.strptime(stamp, TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise CostsFileError(
            f"line {number}: {stamp!r} is not a timestamp (YYYY-MM-DDTHH:MM:SS)"
        ) from None
    for name, value in zip(COLUMNS, values, strict=True):
        if not _number(value, whole=name in ("db_queries", "api_requests")):
            raise CostsFileError(f"line {number}: {name} {value!r} is not a number")
    return CostLine(
        start=start,
        db_queries=int(values[0]),
        api_requests=int(values[1]),
        db_cost=Decimal(values[2]),
        api_cost=Decimal(values[3]),
        total_cost=Decimal(values[4]),
    )


def _number(text: str, *, whole: bool) -> bool:
    if whole:
        return text.isdigit()
    try:
        value = Decimal(text)
    except InvalidOperation:
        return False
    return value.is_finite() and value >= 0


def period_of(moment: datetime, by: Period) -> str:
    """`2024-01-15` (day), `2024-W03` (ISO week, from Monday) or `2024-01` (month)."""
    if by == "day":
        return moment.strftime("%Y-%m-%d")
    if by == "week":
        year, week, _ = moment.isocalendar()
        return f"{year}-W{week:02d}"
    return moment.strftime("%Y-%m")


def totals_by(
    lines: Iterable[CostLine], by: Period, since: date | None = None
) -> tuple[list[Totals], Totals]:
    """Per period (oldest first) and overall, of the rows that start on or after
    `since` (midnight UTC)."""
    periods: dict[str, Totals] = {}
    overall = Totals(period="total")
    for line in sorted(lines, key=lambda line: line.start):
        if since is not None and line.start.date() < since:
            continue
        key = period_of(line.start, by)
        periods[key] = periods.get(key, Totals(period=key)).add(line)
        overall = overall.add(line)
    return list(periods.values()), overall
