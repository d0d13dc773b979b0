"""The cost meter in the database (SQLite and PostgreSQL): restarts keep the open
period, several workers add to one period without losing counts and get one row,
a row is never written twice, and the state file of earlier versions is imported
once."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from monitoring.costs import COSTS_HEADER, OperationCost
from monitoring.sinks import FileSink
from tests.factories.costs import (
    Clock,
    MakeMeter,
    at,
    csv_lines,
    empty_row,
    row,
)


async def test_restart_within_the_hour_continues_the_period(
    make_meter: MakeMeter, tmp_path: Path
) -> None:
    clock = Clock(at(10, 5))
    before = make_meter(clock)
    before.record("Students", 7, 2)
    clock.now = at(10, 20)
    assert await before.sync(close=True) == []
    clock.now = at(10, 25)
    before.record("Grades", 3, 1)
    assert await before.sync() == []  # at shutdown

    clock.now = at(10, 40)
    after = make_meter(clock)
    await after.sync(close=True)  # at start
    restored = after.snapshot()
    assert (restored.db_queries, restored.api_requests) == (10, 3)
    assert restored.current_period == row(at(10), 10, 3, 0.001, 0.00003, 0.00103)
    after.record("Students", 5, 1)

    clock.now = at(11)
    assert await after.sync(close=True) == [
        row(at(10), 15, 4, 0.0015, 0.00004, 0.00154)
    ]
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


async def test_restart_after_downtime_closes_the_old_period_at_the_last_boundary(
    make_meter: MakeMeter,
) -> None:
    clock = Clock(at(10, 5))
    before = make_meter(clock)
    before.record("Students", 2, 1)
    await before.sync()

    clock.now = at(12, 30)
    after = make_meter(clock)
    assert await after.sync(close=True) == [row(at(10), 2, 1, 0.0002, 0.00001, 0.00021)]
    assert after.snapshot().current_period == empty_row(at(12))


async def test_two_workers_add_to_one_period_and_the_leader_writes_one_row(
    make_meter: MakeMeter, tmp_path: Path
) -> None:
    clock = Clock(at(10, 5))
    leader, follower = make_meter(clock), make_meter(clock)
    leader.record("Students", 2, 1)
    follower.record("Students", 3, 1)
    follower.record("Grades", 1, 1)
    await leader.sync(close=True)
    await follower.sync()

    clock.now = at(11, 0, 1)
    assert await follower.sync() == []  # a follower never closes
    assert await leader.sync(close=True) == [
        row(at(10), 6, 3, 0.0006, 0.00003, 0.00063)
    ]
    assert await leader.sync(close=True) == []
    await follower.sync()

    for meter in (leader, follower):
        snapshot = meter.snapshot()
        assert (snapshot.db_queries, snapshot.api_requests) == (6, 3)
        assert snapshot.current_period == empty_row(at(11))
    assert csv_lines(tmp_path) == [
        COSTS_HEADER,
        "2024-01-15T10:00:00,development,6,3,0.000600,0.000030,0.000630",
    ]


async def test_workers_syncing_together_never_lose_each_others_counts(
    make_meter: MakeMeter,
) -> None:
    clock = Clock(at(10, 5))
    workers = [make_meter(clock) for _ in range(4)]

    async def work(number: int) -> None:
        meter = workers[number]
        for _ in range(15):
            meter.record(f"op{number}", 1, 1)
            meter.record("Shared", 2, 0)
            await meter.sync(close=number == 0)

    await asyncio.gather(*(work(number) for number in range(4)))
    await workers[1].sync()

    snapshot = workers[1].snapshot()
    assert (snapshot.db_queries, snapshot.api_requests) == (180, 60)
    assert snapshot.current_period == row(at(10), 180, 60, 0.018, 0.0006, 0.0186)
    assert snapshot.top_operations[0] == OperationCost("Shared", 60, 0.012)


class DiesAfterAppending(FileSink):
    """A worker killed between the append and the mark in the database."""

    def append(self, lines: list[str], *, resume: bool = False) -> bool:
        super().append(lines, resume=resume)
        raise RuntimeError("killed")


async def test_a_row_appended_but_not_marked_is_not_written_twice(
    make_meter: MakeMeter, tmp_path: Path
) -> None:
    clock = Clock(at(10, 5))
    dying, next_leader = make_meter(clock), make_meter(clock)
    dying._sink = DiesAfterAppending(
        "costs.csv", tmp_path / "costs.csv", header=COSTS_HEADER
    )
    dying.record("Students", 2, 1)
    clock.now = at(11)

    assert await dying.sync(close=True) == []  # the append happened, the mark did not
    assert len(csv_lines(tmp_path)) == 2
    assert await next_leader.sync(close=True) == [
        row(at(10), 2, 1, 0.0002, 0.00001, 0.00021)
    ]
    clock.now = at(12)
    assert await next_leader.sync(close=True) == [empty_row(at(11))]

    assert csv_lines(tmp_path) == [
        COSTS_HEADER,
        "2024-01-15T10:00:00,development,2,1,0.000200,0.000010,0.000210",
        "2024-01-15T11:00:00,development,0,0,0.000000,0.000000,0.000000",
    ]


def legacy_state(path: Path, environment: str = "development") -> Path:
    """The state file a version before the database kept next to costs.csv."""
    tally = {
        "count": 2,
        "db_queries": 7,
        "api_requests": 2,
        "db_cost": "0.0007",
        "api_cost": "0.00002",
    }
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "environment": environment,
                "saved_at": "2024-01-15T10:20:00Z",
                "period": {"start": "2024-01-15T10:00:00Z", **tally},
                "totals": {**tally, "db_queries": 9, "db_cost": "0.0009"},
                "operations": {"Students": tally},
            }
        )
    )
    return path


async def test_the_old_state_file_is_imported_once(
    make_meter: MakeMeter, tmp_path: Path
) -> None:
    state = legacy_state(tmp_path / "costs.csv.state.json")
    clock = Clock(at(10, 30))
    first = make_meter(clock, legacy_state_path=state)
    first.record("Grades", 1, 1)
    await first.sync()
    again = make_meter(clock, legacy_state_path=state)  # the next start
    await again.sync()

    snapshot = again.snapshot()
    assert (snapshot.db_queries, snapshot.api_requests) == (10, 3)
    assert snapshot.current_period == row(at(10), 8, 3, 0.0008, 0.00003, 0.00083)
    assert snapshot.top_operations == [
        OperationCost("Students", 2, 0.00072),
        OperationCost("Grades", 1, 0.00011),
    ]
    assert not state.exists()
    assert (tmp_path / "costs.csv.state.json.imported").exists()


@pytest.mark.parametrize("content", ["{not json", "[]", '{"version": 2}'])
async def test_an_unreadable_old_state_file_is_set_aside_with_a_warning(
    make_meter: MakeMeter,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    content: str,
) -> None:
    state = tmp_path / "costs.csv.state.json"
    state.write_text(content)
    meter = make_meter(Clock(at(10, 5)), legacy_state_path=state)

    with caplog.at_level(logging.WARNING, logger="gradepulse.costs"):
        await meter.sync()

    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        f"old cost state {state}.imported not imported"
    ]
    assert meter.snapshot().db_queries == 0
    assert (tmp_path / "costs.csv.state.json.imported").read_text() == content


async def test_an_old_state_file_of_another_environment_is_not_imported(
    make_meter: MakeMeter, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = legacy_state(tmp_path / "costs.csv.state.json", environment="staging")
    meter = make_meter(Clock(at(10, 5)), legacy_state_path=state)

    with caplog.at_level(logging.WARNING, logger="gradepulse.costs"):
        await meter.sync()

    assert "belongs to 'staging'" in caplog.records[0].getMessage()
    assert meter.snapshot().db_queries == 0


async def test_a_database_that_fails_keeps_the_counts_for_the_next_sync(
    make_meter: MakeMeter, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock(at(10, 5))
    meter = make_meter(clock)
    meter.record("Students", 2, 1)
    await meter.sync()
    ledger = meter._ledger
    meter._ledger = Failing()
    meter.record("Students", 3, 1)

    with caplog.at_level(logging.WARNING, logger="gradepulse.costs"):
        assert await meter.sync(close=True) == []
        assert await meter.sync(close=True) == []
    meter.record("Students", 1, 0)
    assert meter.snapshot().db_queries == 6  # what is pending shows meanwhile
    meter._ledger = ledger
    await meter.sync()

    assert meter.failures == 2
    assert len(caplog.records) == 2  # down once, back once
    assert meter.snapshot().current_period == row(
        at(10), 6, 2, 0.0006, 0.00002, 0.00062
    )


class Failing:
    async def sync(self, *args: object, **kwargs: object) -> None:
        raise ConnectionError("the database is down")

    async def dispose(self) -> None:
        pass
