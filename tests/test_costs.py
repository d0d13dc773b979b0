"""The cost meter: prices, periods in costs.csv, restarts, top operations, rates."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from monitoring.costs import (
    COSTS_HEADER,
    CostMeter,
    OperationCost,
    format_row,
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
    tmp_path: Path, rate: float, db_cost: float, total_cost: float
) -> None:
    meter = make_meter(tmp_path, Clock(at(10)), rate=rate)

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


def test_price_of_the_contract_row(tmp_path: Path) -> None:
    meter = make_meter(tmp_path, Clock(at(10)))

    assert meter.price(150, 1200) == {
        "dbQueries": 150,
        "apiRequests": 1200,
        "dbCost": 0.015,
        "apiCost": 0.012,
        "totalCost": 0.027,
    }


def test_costs_csv_has_the_header_once_and_exact_rows(tmp_path: Path) -> None:
    clock = Clock(at(10))
    meter = make_meter(tmp_path, clock)
    for _ in range(50):
        meter.record("Students", 2, 1)
    for _ in range(50):
        meter.record("Student", 1, 1)
    for _ in range(1100):
        meter.record("Ping", 0, 1)

    clock.now = at(10, 59, 59, 999999)
    assert meter.tick() == []
    clock.now = at(11)
    assert meter.tick() == [row(at(10), 150, 1200, 0.015, 0.012, 0.027)]
    clock.now = at(12)
    assert meter.tick() == [empty_row(at(11))]

    assert (tmp_path / "costs.csv").read_text() == (
        "timestamp,environment,db_queries,api_requests,db_cost,api_cost,total_cost\n"
        "2024-01-15T10:00:00,development,150,1200,0.015000,0.012000,0.027000\n"
        "2024-01-15T11:00:00,development,0,0,0.000000,0.000000,0.000000\n"
    )


def test_hour_boundary_ends_the_row_and_starts_the_next_period(tmp_path: Path) -> None:
    clock = Clock(at(10, 15))
    meter = make_meter(tmp_path, clock)
    for _ in range(3):
        meter.record("Students", 4, 1)

    clock.now = at(11)
    assert meter.tick() == [row(at(10), 12, 3, 0.0012, 0.00003, 0.00123)]
    assert meter.snapshot().current_period == empty_row(at(11))

    clock.now = at(11, 30)
    meter.record("Students", 10, 1)
    clock.now = at(12, 0, 30)
    assert meter.tick() == [row(at(11), 10, 1, 0.001, 0.00001, 0.00101)]
    assert meter.snapshot().current_period == empty_row(at(12))
    assert csv_lines(tmp_path)[1:] == [
        "2024-01-15T10:00:00,development,12,3,0.001200,0.000030,0.001230",
        "2024-01-15T11:00:00,development,10,1,0.001000,0.000010,0.001010",
    ]


def test_several_boundaries_passed_close_in_one_row_at_the_last(
    tmp_path: Path,
) -> None:
    clock = Clock(at(10, 10))
    meter = make_meter(tmp_path, clock)
    meter.record("Students", 5, 2)

    clock.now = at(13, 25)
    assert meter.tick() == [row(at(10), 5, 2, 0.0005, 0.00002, 0.00052)]
    assert meter.snapshot().current_period == empty_row(at(13))
    clock.now = at(13, 59, 59)
    assert meter.tick() == []
    clock.now = at(14)
    assert meter.tick() == [empty_row(at(13))]

    assert csv_lines(tmp_path) == [
        COSTS_HEADER,
        "2024-01-15T10:00:00,development,5,2,0.000500,0.000020,0.000520",
        "2024-01-15T13:00:00,development,0,0,0.000000,0.000000,0.000000",
    ]


def test_close_now_then_the_period_continues_from_there(tmp_path: Path) -> None:
    clock = Clock(at(10))
    meter = make_meter(tmp_path, clock)
    meter.record("Students", 20, 4)

    clock.now = at(10, 20, 30, 700000)
    assert meter.close_now() == row(at(10), 20, 4, 0.002, 0.00004, 0.00204)
    assert meter.snapshot().current_period == empty_row(at(10, 20, 30))

    clock.now = at(10, 40)
    meter.record("Students", 1, 1)
    clock.now = at(11)
    assert meter.tick() == [row(at(10, 20, 30), 1, 1, 0.0001, 0.00001, 0.00011)]
    assert csv_lines(tmp_path) == [
        COSTS_HEADER,
        "2024-01-15T10:00:00,development,20,4,0.002000,0.000040,0.002040",
        "2024-01-15T10:20:30,development,1,1,0.000100,0.000010,0.000110",
    ]


def test_close_now_after_a_missed_boundary_ends_a_row_on_the_boundary_first(
    tmp_path: Path,
) -> None:
    clock = Clock(at(10))
    meter = make_meter(tmp_path, clock)
    meter.record("Students", 3, 1)

    clock.now = at(11, 15)
    assert meter.close_now() == empty_row(at(11))
    assert meter.snapshot().current_period == empty_row(at(11, 15))
    assert csv_lines(tmp_path)[1:] == [
        "2024-01-15T10:00:00,development,3,1,0.000300,0.000010,0.000310",
        "2024-01-15T11:00:00,development,0,0,0.000000,0.000000,0.000000",
    ]


def test_close_now_exactly_on_a_boundary_writes_one_row(tmp_path: Path) -> None:
    clock = Clock(at(10))
    meter = make_meter(tmp_path, clock)
    meter.record("Students", 3, 1)

    clock.now = at(11)
    assert meter.close_now() == row(at(10), 3, 1, 0.0003, 0.00001, 0.00031)
    assert csv_lines(tmp_path)[1:] == [
        "2024-01-15T10:00:00,development,3,1,0.000300,0.000010,0.000310"
    ]
    assert meter.snapshot().current_period == empty_row(at(11))


def test_restart_within_the_hour_continues_the_period(tmp_path: Path) -> None:
    clock = Clock(at(10, 5))
    before = make_meter(tmp_path, clock)
    before.record("Students", 7, 2)
    clock.now = at(10, 20)
    assert before.tick() == []  # persists the state
    clock.now = at(10, 25)
    before.record("Grades", 3, 1)
    assert before.save() is True  # at shutdown

    clock.now = at(10, 40)
    after = make_meter(tmp_path, clock)
    restored = after.snapshot()
    assert (restored.db_queries, restored.api_requests) == (10, 3)
    assert restored.current_period == row(at(10), 10, 3, 0.001, 0.00003, 0.00103)
    after.record("Students", 5, 1)

    clock.now = at(11)
    assert after.tick() == [row(at(10), 15, 4, 0.0015, 0.00004, 0.00154)]
    snapshot = after.snapshot()
    assert (snapshot.db_queries, snapshot.api_requests) == (15, 4)
    assert (snapshot.db_cost, snapshot.api_cost, snapshot.total_cost) == (
        0.0015,
        0.00004,
        0.00154,
    )
    assert snapshot.top_operations == [
        OperationCost("Students", 2, 0.00123),
        OperationCost("Grades", 1, 0.00031),
    ]
    assert csv_lines(tmp_path) == [
        COSTS_HEADER,
        "2024-01-15T10:00:00,development,15,4,0.001500,0.000040,0.001540",
    ]


def test_restart_after_downtime_closes_the_old_period_at_the_last_boundary(
    tmp_path: Path,
) -> None:
    clock = Clock(at(10, 5))
    before = make_meter(tmp_path, clock)
    before.record("Students", 2, 1)
    before.save()

    clock.now = at(12, 30)
    after = make_meter(tmp_path, clock)
    assert after.tick() == [row(at(10), 2, 1, 0.0002, 0.00001, 0.00021)]
    assert after.snapshot().current_period == empty_row(at(12))


def test_the_state_file_format(tmp_path: Path) -> None:
    clock = Clock(at(10, 5))
    meter = make_meter(tmp_path, clock)
    meter.record(None, 3, 1)
    clock.now = at(10, 6)

    meter.tick()

    assert json.loads((tmp_path / "costs-state.json").read_text()) == {
        "version": 1,
        "environment": "development",
        "saved_at": "2024-01-15T10:06:00Z",
        "period": {
            "start": "2024-01-15T10:00:00Z",
            "count": 1,
            "db_queries": 3,
            "api_requests": 1,
            "db_cost": "0.0003",
            "api_cost": "0.00001",
        },
        "totals": {
            "count": 1,
            "db_queries": 3,
            "api_requests": 1,
            "db_cost": "0.0003",
            "api_cost": "0.00001",
        },
        "operations": {
            "anonymous": {
                "count": 1,
                "db_queries": 3,
                "api_requests": 1,
                "db_cost": "0.0003",
                "api_cost": "0.00001",
            }
        },
    }
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_tick_without_changes_does_not_rewrite_the_state(tmp_path: Path) -> None:
    clock = Clock(at(10, 5))
    meter = make_meter(tmp_path, clock)
    meter.record("Students", 1, 1)
    meter.tick()
    state = tmp_path / "costs-state.json"
    first = state.read_text()

    clock.now = at(10, 6)
    meter.tick()

    assert state.read_text() == first  # saved_at would have moved


@pytest.mark.parametrize(
    "content", ["{not json", "[]", '{"version": 1}', '{"version": 2}', ""]
)
def test_a_corrupt_state_file_starts_fresh_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str
) -> None:
    (tmp_path / "costs-state.json").write_text(content)

    with caplog.at_level(logging.WARNING, logger="gradepulse.costs"):
        meter = make_meter(tmp_path, Clock(at(10, 5)))

    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "corrupt cost state" in caplog.records[0].getMessage()
    snapshot = meter.snapshot()
    assert (snapshot.db_queries, snapshot.api_requests) == (0, 0)
    assert snapshot.current_period == empty_row(at(10))


def test_a_negative_count_in_the_state_file_is_corrupt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock(at(10, 5))
    meter = make_meter(tmp_path, clock)
    meter.record("Students", 1, 1)
    meter.save()
    state = tmp_path / "costs-state.json"
    data = json.loads(state.read_text())
    data["totals"]["db_queries"] = -1
    state.write_text(json.dumps(data))

    with caplog.at_level(logging.WARNING, logger="gradepulse.costs"):
        fresh = make_meter(tmp_path, clock)

    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    assert fresh.snapshot().db_queries == 0


def test_a_missing_state_file_starts_fresh_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gradepulse.costs"):
        meter = make_meter(tmp_path, Clock(at(10, 5)))

    assert caplog.records == []
    assert meter.snapshot().current_period == empty_row(at(10))


def test_a_state_file_of_another_environment_starts_fresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock(at(10, 5))
    staging = make_meter(tmp_path, clock, environment="staging")
    staging.record("Students", 1, 1)
    staging.save()

    with caplog.at_level(logging.WARNING, logger="gradepulse.costs"):
        meter = make_meter(tmp_path, clock)

    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    assert meter.snapshot().db_queries == 0


def test_an_unwritable_state_file_never_raises(tmp_path: Path) -> None:
    meter = CostMeter(
        environment="development",
        cost_per_db_query=DEV,
        cost_per_100_requests=PER_100,
        state_path=tmp_path / "missing" / "costs-state.json",
        clock=Clock(at(10)),
    )
    meter.record("Students", 1, 1)

    assert meter.save() is False
    assert meter.tick() == []
    assert meter.state_failures == 2


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
