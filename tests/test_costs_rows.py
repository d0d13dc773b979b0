"""The cost meter: row format, prices and periods in costs.csv (the meter's ledger in
a scratch database, SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitoring.costs import (
    COSTS_HEADER,
    CostMeter,
    format_row,
)
from tests.factories.costs import (
    DEV,
    PER_100,
    PROD,
    STAGING,
    Clock,
    MakeMeter,
    at,
    csv_lines,
    empty_row,
    row,
)


def test_format_row_matches_the_contract() -> None:
    given = row(at(10), 150, 1200, 0.015, 0.012, 0.027)

    assert format_row(given) == (
        "2024-01-15T10:00:00,development,150,1200,0.015000,0.012000,0.027000"
    )


@pytest.mark.parametrize(
    ("rate", "db_cost", "total_cost"),
    [(DEV, 0.0007, 0.00073), (STAGING, 0.00105, 0.00108), (PROD, 0.0014, 0.00143)],
)
def test_price_for_each_profile_rate(
    rate: float, db_cost: float, total_cost: float
) -> None:
    meter = CostMeter(
        environment="development",
        cost_per_db_query=rate,
        cost_per_100_requests=PER_100,
        clock=Clock(at(10)),
    )

    assert meter.price(7, 3) == {
        "dbQueries": 7,
        "apiRequests": 3,
        "dbCost": db_cost,
        "apiCost": 0.00003,
        "totalCost": total_cost,
    }


def test_price_rounds_half_up_to_6_decimals_from_the_exact_sum() -> None:
    meter = CostMeter(
        environment="development",
        cost_per_db_query=0.0000015,
        cost_per_100_requests=0.00005,
        clock=Clock(at(10)),
    )

    # 0.0000015 and 0.0000005 round up alone; their exact sum is 0.000002.
    assert meter.price(1, 1) == {
        "dbQueries": 1,
        "apiRequests": 1,
        "dbCost": 0.000002,
        "apiCost": 0.000001,
        "totalCost": 0.000002,
    }


def test_price_of_the_contract_row() -> None:
    meter = CostMeter(
        environment="development",
        cost_per_db_query=DEV,
        cost_per_100_requests=PER_100,
        clock=Clock(at(10)),
    )

    assert meter.price(150, 1200) == {
        "dbQueries": 150,
        "apiRequests": 1200,
        "dbCost": 0.015,
        "apiCost": 0.012,
        "totalCost": 0.027,
    }


async def test_costs_csv_has_the_header_once_and_exact_rows(
    make_meter: MakeMeter, tmp_path: Path
) -> None:
    clock = Clock(at(10))
    meter = make_meter(clock)
    for _ in range(50):
        meter.record("Students", 2, 1)
    for _ in range(50):
        meter.record("Student", 1, 1)
    for _ in range(1100):
        meter.record("Ping", 0, 1)

    clock.now = at(10, 59, 59, 999999)
    assert await meter.sync(close=True) == []
    clock.now = at(11)
    assert await meter.sync(close=True) == [row(at(10), 150, 1200, 0.015, 0.012, 0.027)]
    clock.now = at(12)
    assert await meter.sync(close=True) == [empty_row(at(11))]

    assert (tmp_path / "costs.csv").read_text() == (
        "timestamp,environment,db_queries,api_requests,db_cost,api_cost,total_cost\n"
        "2024-01-15T10:00:00,development,150,1200,0.015000,0.012000,0.027000\n"
        "2024-01-15T11:00:00,development,0,0,0.000000,0.000000,0.000000\n"
    )


async def test_hour_boundary_ends_the_row_and_starts_the_next_period(
    make_meter: MakeMeter, tmp_path: Path
) -> None:
    clock = Clock(at(10, 15))
    meter = make_meter(clock)
    for _ in range(3):
        meter.record("Students", 4, 1)

    clock.now = at(11)
    assert await meter.sync(close=True) == [
        row(at(10), 12, 3, 0.0012, 0.00003, 0.00123)
    ]
    assert meter.snapshot().current_period == empty_row(at(11))

    clock.now = at(11, 30)
    meter.record("Students", 10, 1)
    clock.now = at(12, 0, 30)
    assert await meter.sync(close=True) == [row(at(11), 10, 1, 0.001, 0.00001, 0.00101)]
    assert meter.snapshot().current_period == empty_row(at(12))
    assert csv_lines(tmp_path)[1:] == [
        "2024-01-15T10:00:00,development,12,3,0.001200,0.000030,0.001230",
        "2024-01-15T11:00:00,development,10,1,0.001000,0.000010,0.001010",
    ]


async def test_several_boundaries_passed_close_in_one_row_at_the_last(
    make_meter: MakeMeter, tmp_path: Path
) -> None:
    clock = Clock(at(10, 10))
    meter = make_meter(clock)
    meter.record("Students", 5, 2)

    clock.now = at(13, 25)
    assert await meter.sync(close=True) == [row(at(10), 5, 2, 0.0005, 0.00002, 0.00052)]
    assert meter.snapshot().current_period == empty_row(at(13))
    clock.now = at(13, 59, 59)
    assert await meter.sync(close=True) == []
    clock.now = at(14)
    assert await meter.sync(close=True) == [empty_row(at(13))]

    assert csv_lines(tmp_path) == [
        COSTS_HEADER,
        "2024-01-15T10:00:00,development,5,2,0.000500,0.000020,0.000520",
        "2024-01-15T13:00:00,development,0,0,0.000000,0.000000,0.000000",
    ]


async def test_close_now_then_the_period_continues_from_there(
    make_meter: MakeMeter, tmp_path: Path
) -> None:
    clock = Clock(at(10))
    meter = make_meter(clock)
    meter.record("Students", 20, 4)

    clock.now = at(10, 20, 30, 700000)
    assert await meter.close_now() == row(at(10), 20, 4, 0.002, 0.00004, 0.00204)
    assert meter.snapshot().current_period == empty_row(at(10, 20, 30))

    clock.now = at(10, 40)
    meter.record("Students", 1, 1)
    clock.now = at(11)
    assert await meter.sync(close=True) == [
        row(at(10, 20, 30), 1, 1, 0.0001, 0.00001, 0.00011)
    ]
    assert csv_lines(tmp_path) == [
        COSTS_HEADER,
        "2024-01-15T10:00:00,development,20,4,0.002000,0.000040,0.002040",
        "2024-01-15T10:20:30,development,1,1,0.000100,0.000010,0.000110",
    ]


async def test_close_now_after_a_missed_boundary_ends_a_row_on_the_boundary_first(
    make_meter: MakeMeter, tmp_path: Path
) -> None:
    clock = Clock(at(10))
    meter = make_meter(clock)
    meter.record("Students", 3, 1)

    clock.now = at(11, 15)
    assert await meter.close_now() == empty_row(at(11))
    assert meter.snapshot().current_period == empty_row(at(11, 15))
    assert csv_lines(tmp_path)[1:] == [
        "2024-01-15T10:00:00,development,3,1,0.000300,0.000010,0.000310",
        "2024-01-15T11:00:00,development,0,0,0.000000,0.000000,0.000000",
    ]


async def test_close_now_exactly_on_a_boundary_writes_one_row(
    make_meter: MakeMeter, tmp_path: Path
) -> None:
    clock = Clock(at(10))
    meter = make_meter(clock)
    meter.record("Students", 3, 1)

    clock.now = at(11)
    assert await meter.close_now() == row(at(10), 3, 1, 0.0003, 0.00001, 0.00031)
    assert csv_lines(tmp_path)[1:] == [
        "2024-01-15T10:00:00,development,3,1,0.000300,0.000010,0.000310"
    ]
    assert meter.snapshot().current_period == empty_row(at(11))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"cost_per_db_query": 1e-13},
            "invalid settings: COST_PER_DB_QUERY: has more than 12 decimals: 1e-13",
        ),
        (
            {"cost_per_100_requests": 1.5e-11},
            "invalid settings: COST_PER_100_REQUESTS: has more than 10 decimals: "
            "1.5e-11",
        ),
    ],
)
def test_a_rate_the_meter_cannot_keep_exactly_stops_start_up(
    overrides: dict[str, float], message: str
) -> None:
    from app import create_app
    from settings import SettingsError
    from tests.conftest import make_settings

    with pytest.raises(SettingsError) as raised:
        create_app(make_settings("sqlite+aiosqlite:///unused.db", **overrides))

    assert str(raised.value) == message
