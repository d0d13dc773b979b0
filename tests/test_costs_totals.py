"""The cost meter: running totals, top operations, rates, unwritable files."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from monitoring.costs import (
    COSTS_HEADER,
    CostMeter,
    OperationCost,
)
from tests.factories.costs import (
    DEV,
    PER_100,
    STAGING,
    Clock,
    at,
    csv_lines,
    empty_row,
    make_meter,
    row,
)


def test_rows_and_the_open_period_add_up_to_the_running_totals(
    tmp_path: Path,
) -> None:
    clock = Clock(at(10, 3))
    meter = make_meter(tmp_path, clock, rate=STAGING)
    for i in range(1, 40):
        clock.now += timedelta(minutes=7, seconds=13)
        meter.record(f"op{i % 5}", i % 7, 1)
        if i % 5 == 0:
            assert meter.close_now() is not None
        if i % 11 == 0:  # a restart
            meter.save()
            meter = make_meter(tmp_path, clock, rate=STAGING)
        meter.tick()

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


def test_a_short_summary_interval(tmp_path: Path) -> None:
    clock = Clock(at(10, 0, 10))
    meter = make_meter(tmp_path, clock, interval_s=60)
    meter.record("Students", 1, 1)

    clock.now = at(10, 0, 59)
    assert meter.tick() == []
    clock.now = at(10, 1)
    assert meter.tick() == [row(at(10), 1, 1, 0.0001, 0.00001, 0.00011)]
    clock.now = at(10, 1, 30)
    meter.record("Students", 2, 0)
    clock.now = at(10, 3, 5)
    assert meter.tick() == [row(at(10, 1), 2, 0, 0.0002, 0.0, 0.0002)]
    assert meter.snapshot().current_period == empty_row(at(10, 3))
    assert csv_lines(tmp_path)[1:] == [
        "2024-01-15T10:00:00,development,1,1,0.000100,0.000010,0.000110",
        "2024-01-15T10:01:00,development,2,0,0.000200,0.000000,0.000200",
    ]


def test_top_operations_are_the_10_costliest_in_order(tmp_path: Path) -> None:
    meter = make_meter(tmp_path, Clock(at(10)))
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


def test_operation_names_beyond_1000_count_as_other(tmp_path: Path) -> None:
    meter = make_meter(tmp_path, Clock(at(10)))
    for i in range(1000):
        meter.record(f"n{i}", 0, 0)
    meter.record("late1", 1, 0)
    meter.record("late2", 2, 0)
    meter.record("n0", 1, 0)

    top = meter.snapshot().top_operations
    assert top[:2] == [
        OperationCost("other", 2, 0.0003),
        OperationCost("n0", 2, 0.0001),
    ]
    assert meter.snapshot().db_queries == 4


def test_cost_per_hour_over_the_last_10_minutes(tmp_path: Path) -> None:
    clock = Clock(at(10))
    meter = make_meter(tmp_path, clock)
    clock.now = at(10, 0, 30)
    meter.record("Students", 100, 0)  # $0.01

    assert meter.cost_per_hour() == 1.2  # over the 30 s the meter has lived
    clock.now = at(10, 1)
    assert meter.cost_per_hour() == 0.6
    assert meter.cost_per_hour(window_s=60) == 0.6
    clock.now = at(10, 10)
    assert meter.cost_per_hour() == 0.06
    clock.now = at(10, 10, 29)
    assert meter.cost_per_hour() == 0.06
    clock.now = at(10, 10, 30)
    assert meter.cost_per_hour() == 0.0


def test_cost_per_hour_of_a_new_meter_spans_at_least_a_second(tmp_path: Path) -> None:
    meter = make_meter(tmp_path, Clock(at(10)))
    meter.record("Students", 1, 0)

    assert meter.cost_per_hour() == 0.36


def test_an_unwritable_costs_csv_keeps_the_counts_until_it_is_writable(
    tmp_path: Path,
) -> None:
    (tmp_path / "costs.csv").mkdir()
    clock = Clock(at(10))
    meter = make_meter(tmp_path, clock)
    meter.record("Students", 4, 2)

    clock.now = at(10, 30)
    assert meter.close_now() is None
    assert meter.snapshot().current_period == row(
        at(10), 4, 2, 0.0004, 0.00002, 0.00042
    )
    clock.now = at(10, 40)
    meter.record("Students", 1, 1)
    clock.now = at(10, 50)
    assert meter.tick() == []

    (tmp_path / "costs.csv").rmdir()
    clock.now = at(10, 55)
    assert meter.close_now() == row(at(10), 5, 3, 0.0005, 0.00003, 0.00053)
    assert csv_lines(tmp_path) == [
        COSTS_HEADER,
        "2024-01-15T10:00:00,development,5,3,0.000500,0.000030,0.000530",
    ]
    assert meter.snapshot().current_period == empty_row(at(10, 55))


def test_a_boundary_missed_while_unwritable_is_closed_in_one_row_later(
    tmp_path: Path,
) -> None:
    (tmp_path / "costs.csv").mkdir()
    clock = Clock(at(10, 5))
    meter = make_meter(tmp_path, clock)
    meter.record("Students", 4, 2)

    clock.now = at(11)
    assert meter.tick() == []
    clock.now = at(11, 30)
    meter.record("Students", 1, 1)
    (tmp_path / "costs.csv").rmdir()
    clock.now = at(12, 0, 5)

    assert meter.tick() == [row(at(10), 5, 3, 0.0005, 0.00003, 0.00053)]
    assert meter.snapshot().current_period == empty_row(at(12))
    assert csv_lines(tmp_path) == [
        COSTS_HEADER,
        "2024-01-15T10:00:00,development,5,3,0.000500,0.000030,0.000530",
    ]


def test_a_meter_without_files_still_closes_periods() -> None:
    clock = Clock(at(10))
    meter = CostMeter(
        environment="development",
        cost_per_db_query=DEV,
        cost_per_100_requests=PER_100,
        clock=clock,
    )
    meter.record("Students", 1, 1)
    clock.now = at(11)

    assert meter.tick() == [row(at(10), 1, 1, 0.0001, 0.00001, 0.00011)]


@pytest.mark.parametrize("interval_s", [0, -60])
def test_the_interval_must_be_positive(interval_s: float) -> None:
    with pytest.raises(ValueError, match="interval_s"):
        CostMeter(
            environment="development",
            cost_per_db_query=DEV,
            cost_per_100_requests=PER_100,
            interval_s=interval_s,
        )
