"""The cost meter: restarts and the state file."""

from __future__ import annotations

import json
import logging
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
    Clock,
    at,
    csv_lines,
    empty_row,
    make_meter,
    row,
)


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
