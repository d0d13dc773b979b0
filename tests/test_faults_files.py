"""Faults: alert.log and costs.csv on a full disk (`/dev/full`, and a disk that
takes part of a write and then has no room) or a read-only one (a writer that
raises EROFS: root ignores file modes here). Requests keep being served, the sink
shows as failing and /health as degraded, no half line is ever written, and once
the disk has room again nothing is missing from costs.csv: the periods closed
meanwhile are written, in order, once."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from monitoring import sinks
from monitoring.costs import COSTS_HEADER
from monitoring.sinks import FileSink
from tests.factories import post
from tests.factories.costs import Clock, MakeMeter, at, csv_lines

pytestmark = pytest.mark.faults
REAL_WRITE = os.write


class Disk:
    """os.write for the sinks: `room` bytes left (None: no limit), or read-only."""

    def __init__(self) -> None:
        self.room: int | None = None
        self.read_only = False

    def write(self, fd: int, data: bytes) -> int:
        if self.read_only:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        if self.room is None:
            return REAL_WRITE(fd, data)
        if self.room == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        taken = REAL_WRITE(fd, data[: self.room])  # part of it, as a full disk does
        self.room -= taken
        return taken


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Disk:
    fake = Disk()
    monkeypatch.setattr(sinks.os, "write", fake.write)
    return fake


def test_dev_full_refuses_every_append_without_raising() -> None:
    sink = FileSink("alertLog", "/dev/full")
    assert sink.append(["2024-01-15T10:30:00 - ALERT: x"]) is False
    assert sink.append(["2024-01-15T10:30:01 - ALERT: y"]) is False
    status = sink.status()
    assert (status.ok, status.failures) == (False, 2)
    assert status.last_error is not None and "No space left" in status.last_error


def test_a_write_cut_short_leaves_no_half_line(disk: Disk, tmp_path: Path) -> None:
    path = tmp_path / "alert.log"
    sink = FileSink("alertLog", path)
    assert sink.append(["first line"])
    disk.room = 7  # the next append gets 7 bytes in, then the disk is full
    assert sink.append(["second line that does not fit", "third"]) is False
    assert path.read_bytes() == b"first line\n"
    assert not sink.status().ok
    disk.room = None  # room again
    assert sink.append(["fourth"])
    assert path.read_text().splitlines() == ["first line", "fourth"]
    assert sink.status().ok


async def test_cost_rows_held_back_by_the_disk_are_written_once_it_has_room(
    disk: Disk, make_meter: MakeMeter, tmp_path: Path
) -> None:
    clock = Clock(at(10))
    meter = make_meter(clock)
    meter.record("Students", 2, 1)
    clock.now = at(11)
    await meter.sync(close=True)  # the 10:00 row, written
    disk.read_only = True
    meter.record("Students", 3, 1)
    clock.now = at(12)
    await meter.sync(close=True)  # the 11:00 row: the disk refuses it
    disk.read_only = False
    disk.room = 20  # then a full disk, which takes a part of a row
    meter.record("Students", 4, 1)
    clock.now = at(13)
    await meter.sync(close=True)  # the 12:00 row too
    assert csv_lines(tmp_path) == [
        COSTS_HEADER,
        "2024-01-15T10:00:00,development,2,1,0.000200,0.000010,0.000210",
    ]
    disk.room = None  # room again: the leader's next tick writes what is missing
    clock.now = at(13, 5)
    written = await meter.sync(close=True)  # no period closes at 13:05
    assert [row.timestamp for row in written] == [at(11), at(12)]
    assert csv_lines(tmp_path) == [
        COSTS_HEADER,
        "2024-01-15T10:00:00,development,2,1,0.000200,0.000010,0.000210",
        "2024-01-15T11:00:00,development,3,1,0.000300,0.000010,0.000310",
        "2024-01-15T12:00:00,development,4,1,0.000400,0.000010,0.000410",
    ]


async def test_requests_are_served_while_alert_log_cannot_be_written(
    make_api: Any, scratch_url: str
) -> None:
    """alert.log on /dev/full: the start-up tick's alert is not written, /health
    says degraded with the sink failing, and queries are answered as ever."""
    api = await make_api(scratch_url, alert_log_path="/dev/full", alert_memory_mb=1.0)
    api.app.state.monitor.tick()  # high memory fires: its line cannot be written
    health = (await api.http.get("/health")).json()
    assert health["status"] == "degraded"
    assert health["checks"]["alertLog"]["status"] == "failing"
    assert health["checks"]["alertLog"]["failures"] >= 1
    for _ in range(3):
        response = await post(api, "{ students { totalCount } }")
        assert response.status_code == 200
        assert response.json()["data"] == {"students": {"totalCount": 0}}
    assert (await api.http.get("/health/ready")).status_code == 200
