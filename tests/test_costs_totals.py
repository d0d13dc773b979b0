"""The cost meter: running totals, top operations, rates, unwritable files (the
meter's ledger in a scratch database, SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from monitoring.costs import (
    COSTS_HEADER,
    CostMeter,
    CostRate,
    OperationCost,
)
from tests.factories.costs import (
    DEV,
    PER_100,
    STAGING,
    Clock,
    MakeMeter,
    at,
    csv_lines,
    empty_row,
    row,
)


async def test_rows_and_the_open_period_add_up_to_the_running_totals(
    make_meter: MakeMeter, tmp_path: Path
) -> None:
    clock = Clock(at(10, 3))
    meter = make_meter(clock, rate=STAGING)
    for i in range(1, 40):
        clock.now += timedelta(minutes=7, seconds=13)
        meter.record(f"op{i % 5}", i % 7, 1)
        if i % 5 == 0:
            assert await meter.close_now() is not None
        if i % 11 == 0:  # a restart
            await meter.sync()
            meter = make_meter(clock, rate=STAGING)
        await meter.sync(close=True)

    fields = [line.split(",") for line in csv_lines(tmp_path)[1:]]
    snapshot = meter.snapshot()
    current = snapshot.current_period
    assert (snapshot.db_queries, snapshot.api_requests) == (115, 39)
    totals = ("0.01725", "0.00039", "0.01764")
    assert (snapshot.db_cost, snapshot.api_cost, snapshot.total_cost) == tuple(
        float(total) for total in totals
    )
    assert len(fields) == 11  # 7 early closes and 4 hour boundaries
    assert sum(int(f[2]) for f in fields) + current.db_queries == 115
    assert sum(int(f[3]) for f in fields) + current.api_requests == 39
    open_money = (current.db_cost, current.api_cost, current.total_cost)
    for column, open_part, total in zip((4, 5, 6), open_money, totals, strict=True):
        written = sum(Decimal(f[column]) for f in fields)
        assert written + Decimal(repr(open_part)) == Decimal(total)
    # Each row starts where the previous one ended: no overlaps, no gaps.
    starts = [datetime.fromisoformat(f[0]) for f in fields]
    assert starts == sorted(set(starts))


async def test_a_short_summary_interval(make_meter: MakeMeter, tmp_path: Path) -> None:
    clock = Clock(at(10, 0, 10))
    meter = make_meter(clock, interval_s=60)
    meter.record("Students", 1, 1)

    clock.now = at(10, 0, 59)
    assert await meter.sync(close=True) == []
    clock.now = at(10, 1)
    assert await meter.sync(close=True) == [row(at(10), 1, 1, 0.0001, 0.00001, 0.00011)]
    clock.now = at(10, 1, 30)
    meter.record("Students", 2, 0)
    clock.now = at(10, 3, 5)
    assert await meter.sync(close=True) == [row(at(10, 1), 2, 0, 0.0002, 0.0, 0.0002)]
    assert meter.snapshot().current_period == empty_row(at(10, 3))
    assert csv_lines(tmp_path)[1:] == [
        "2024-01-15T10:00:00,development,1,1,0.000100,0.000010,0.000110",
        "2024-01-15T10:01:00,development,2,0,0.000200,0.000000,0.000200",
    ]


async def test_top_operations_are_the_10_costliest_in_order(
    make_meter: MakeMeter, tmp_path: Path
) -> None:
    meter = make_meter(Clock(at(10)))
    meter.record("heavy", 50, 1)
    for _ in range(5):
        meter.record("busy", 10, 1)
    meter.record("beta", 20, 1)
    meter.record("alpha", 20, 1)
    meter.record("epsilon", 20, 0)
    meter.record("delta", 10, 0)
    meter.record("delta", 10, 0)
    meter.record(None, 30, 1)
    for i in range(1, 9):
        meter.record(f"s{i}", i, 0)
    pending = meter.snapshot().top_operations
    await meter.sync()  # now read back from the database

    assert pending == meter.snapshot().top_operations
    assert meter.snapshot().top_operations == [
        OperationCost("busy", 5, 0.00505),
        OperationCost("heavy", 1, 0.00501),
        OperationCost("anonymous", 1, 0.00301),
        OperationCost("alpha", 1, 0.00201),
        OperationCost("beta", 1, 0.00201),
        OperationCost("delta", 2, 0.002),
        OperationCost("epsilon", 1, 0.002),
        OperationCost("s8", 1, 0.0008),
        OperationCost("s7", 1, 0.0007),
        OperationCost("s6", 1, 0.0006),
    ]


async def test_operation_names_beyond_1000_count_as_other(
    make_meter: MakeMeter, tmp_path: Path
) -> None:
    meter = make_meter(Clock(at(10)))
    for i in range(1000):
        meter.record(f"n{i}", 0, 0)
    meter.record("late1", 1, 0)
    meter.record("late2", 2, 0)
    meter.record("n0", 1, 0)
    await meter.sync()

    top = meter.snapshot().top_operations
    assert top[:2] == [
        OperationCost("other", 2, 0.0003),
        OperationCost("n0", 2, 0.0001),
    ]
    assert meter.snapshot().db_queries == 4


async def test_the_1000_names_are_counted_over_the_cluster(
    make_meter: MakeMeter, tmp_path: Path
) -> None:
    clock = Clock(at(10))
    first, second = make_meter(clock), make_meter(clock)
    for i in range(600):
        first.record(f"a{i}", 0, 0)
    await first.sync()
    for i in range(600):
        second.record(f"b{i}", 1, 0)
    second.record("a0", 1, 0)
    await second.sync()
    await first.sync()

    top = first.snapshot().top_operations
    assert top[:2] == [
        OperationCost("other", 200, 0.02),
        OperationCost("a0", 2, 0.0001),
    ]
    assert first.snapshot().db_queries == 601


async def test_cost_per_hour_over_the_last_10_minutes(
    make_meter: MakeMeter, tmp_path: Path
) -> None:
    clock = Clock(at(10))
    meter = make_meter(clock)
    clock.now = at(10, 0, 30)
    meter.record("Students", 100, 0)  # $0.01

    # $0.01 in the last 10 minutes, however young the meter: never extrapolated
    # from its 30 s (that would say $1.20/h), and the window is not full yet.
    assert meter.rate() == CostRate(0.06, window_full=False)
    clock.now = at(10, 1)
    assert meter.rate() == CostRate(0.06, window_full=False)
    assert meter.rate(window_s=60) == CostRate(0.6, window_full=True)
    clock.now = at(10, 9, 59)
    assert meter.rate() == CostRate(0.06, window_full=False)
    clock.now = at(10, 10)
    assert meter.rate() == CostRate(0.06, window_full=True)
    clock.now = at(10, 10, 29)
    assert meter.cost_per_hour() == 0.06
    clock.now = at(10, 10, 30)
    assert meter.rate() == CostRate(0.0, window_full=True)


async def test_cost_per_hour_is_the_clusters_once_the_meter_has_synced(
    make_meter: MakeMeter, tmp_path: Path
) -> None:
    clock = Clock(at(10))
    first, second = make_meter(clock), make_meter(clock)
    await first.sync()
    await second.sync()
    clock.now = at(10, 1)
    first.record("Students", 100, 0)  # $0.01
    second.record("Students", 50, 0)  # $0.005
    await first.sync()
    await second.sync()

    # $0.015 in the minute both have watched, whoever spent it, over the window
    # (10 minutes): its first minute only, so not full.
    assert second.rate() == CostRate(0.09, window_full=False)
    assert second.rate(window_s=60) == CostRate(0.9, window_full=True)
    second.record("Students", 100, 0)  # not sent yet: counted here at once
    assert second.cost_per_hour() == 0.15
    await second.sync()
    await first.sync()
    assert first.cost_per_hour() == 0.15
    clock.now = at(10, 10, 59)
    await first.sync()
    # over the last 10 minutes, which the meter has seen since its sync at 10:00
    assert first.rate() == CostRate(0.15, window_full=True)
    clock.now = at(10, 11)
    assert first.cost_per_hour() == 0.0  # the window has moved past 10:01


async def test_cost_per_hour_of_a_new_meter_is_not_extrapolated(
    make_meter: MakeMeter, tmp_path: Path
) -> None:
    # 41 operations of 3 statements in the meter's first second ($0.01271): over
    # that second they would be $45.756/h; they are what the 10 minutes hold.
    clock = Clock(at(10))
    meter = make_meter(clock)
    await meter.sync()  # read at start, as a worker does before serving
    clock.now = at(10, 0, 1)
    for _ in range(41):
        meter.record("Students", 3, 1)

    assert meter.rate() == CostRate(0.07626, window_full=False)
    snapshot = meter.snapshot()
    assert (snapshot.cost_per_hour, snapshot.cost_window_full) == (0.07626, False)
    await meter.sync()  # read back from the cluster's totals: the same figure
    assert meter.rate() == CostRate(0.07626, window_full=False)
    clock.now = at(10, 10)
    assert meter.rate() == CostRate(0.07626, window_full=True)


async def test_rows_closed_while_costs_csv_is_unwritable_are_appended_later(
    make_meter: MakeMeter, tmp_path: Path
) -> None:
    (tmp_path / "costs.csv").mkdir()
    clock = Clock(at(10))
    meter = make_meter(clock)
    meter.record("Students", 4, 2)

    clock.now = at(10, 30)
    assert await meter.close_now() is None  # closed; its row waits in the database
    assert meter.snapshot().current_period == empty_row(at(10, 30))
    clock.now = at(10, 40)
    meter.record("Students", 1, 1)
    clock.now = at(10, 50)
    assert await meter.sync(close=True) == []  # still unwritable

    (tmp_path / "costs.csv").rmdir()
    clock.now = at(10, 55)
    assert await meter.close_now() == row(at(10, 30), 1, 1, 0.0001, 0.00001, 0.00011)
    assert csv_lines(tmp_path) == [
        COSTS_HEADER,
        "2024-01-15T10:00:00,development,4,2,0.000400,0.000020,0.000420",
        "2024-01-15T10:30:00,development,1,1,0.000100,0.000010,0.000110",
    ]
    assert meter.snapshot().current_period == empty_row(at(10, 55))


async def test_a_boundary_passed_while_unwritable_is_written_once_writable(
    make_meter: MakeMeter, tmp_path: Path
) -> None:
    (tmp_path / "costs.csv").mkdir()
    clock = Clock(at(10, 5))
    meter = make_meter(clock)
    meter.record("Students", 4, 2)

    clock.now = at(11)
    assert await meter.sync(close=True) == []
    clock.now = at(11, 30)
    meter.record("Students", 1, 1)
    (tmp_path / "costs.csv").rmdir()
    clock.now = at(11, 30, 1)
    # Written at the leader's next tick, before any boundary.
    assert await meter.sync(close=True) == [row(at(10), 4, 2, 0.0004, 0.00002, 0.00042)]
    clock.now = at(12, 0, 5)
    assert await meter.sync(close=True) == [row(at(11), 1, 1, 0.0001, 0.00001, 0.00011)]

    assert meter.snapshot().current_period == empty_row(at(12))
    assert csv_lines(tmp_path) == [
        COSTS_HEADER,
        "2024-01-15T10:00:00,development,4,2,0.000400,0.000020,0.000420",
        "2024-01-15T11:00:00,development,1,1,0.000100,0.000010,0.000110",
    ]


async def test_a_meter_without_a_file_still_closes_periods(
    scratch_url: str,
    tmp_path: Path,
    make_meter: MakeMeter,  # migrates the database
) -> None:
    from db.costs import CostLedger

    clock = Clock(at(10))
    ledger = CostLedger.connect(scratch_url, "development")
    meter = CostMeter(
        environment="development",
        cost_per_db_query=DEV,
        cost_per_100_requests=PER_100,
        ledger=ledger,
        clock=clock,
    )
    try:
        meter.record("Students", 1, 1)
        clock.now = at(11)
        closed = await meter.sync(close=True)
    finally:
        await meter.aclose()

    assert closed == [row(at(10), 1, 1, 0.0001, 0.00001, 0.00011)]
    assert not (tmp_path / "costs.csv").exists()


@pytest.mark.parametrize("interval_s", [0, -60])
def test_the_interval_must_be_positive(interval_s: float) -> None:
    with pytest.raises(ValueError, match="interval_s"):
        CostMeter(
            environment="development",
            cost_per_db_query=DEV,
            cost_per_100_requests=PER_100,
            interval_s=interval_s,
        )
