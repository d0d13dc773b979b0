"""Each student's grade events in commit order: the write numbers them under the
student's row lock (db.students.lock_for_write) and each worker's GradeOrder hands
them on in number order, waiting a bounded time for a missing one. (Across two
workers with a delayed publisher: test_cluster_bus.py.)"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from db.engine import Database
from db.records import GradeRecord
from db.students import Locked, lock_for_write
from resolvers import ordering
from resolvers.live import GradeEvent
from resolvers.ordering import GradeOrder
from tests.factories import DB_STUDENT

NOW = 1_800_000_000.0  # the tests' clock, in seconds since the epoch
WAIT_S = 5.0  # a bound on every wait


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def event(
    student: str, seq: int | None, prev_at: float | None, tag: str = ""
) -> GradeEvent:
    grade = GradeRecord(seq or 0, student, tag or f"{student}-{seq}", 1.0, 1.0, None)  # type: ignore[arg-type]
    return GradeEvent(student, 9, (grade,), seq, prev_at)


class Received:
    """What GradeOrder delivers: one list of (student, seq) per delivered item."""

    def __init__(self) -> None:
        self.items: list[list[tuple[str, int | None]]] = []
        self.arrived = asyncio.Event()

    def __call__(self, write: tuple[GradeEvent, ...]) -> None:
        self.items.append([(e.student_id, e.seq) for e in write])
        self.arrived.set()

    @property
    def flat(self) -> list[tuple[str, int | None]]:
        return [pair for item in self.items for pair in item]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def order(clock: Clock) -> GradeOrder:
    clock.now = NOW - 60  # the worker started a minute ago
    order = GradeOrder(clock)
    clock.now = NOW
    return order


# --- GradeOrder -----------------------------------------------------------------------


async def test_events_in_order_go_on_at_once_one_item_per_write(order: GradeOrder):
    received = Received()

    order.arrive((event("A", 1, None), event("B", 4, NOW - 100)), received)
    order.arrive((event("A", 2, NOW - 1),), received)

    assert received.items == [[("A", 1), ("B", 4)], [("A", 2)]]
    assert (order.held, order.pending()) == (0, 0)


async def test_an_event_ahead_of_a_recent_write_waits_for_it(order: GradeOrder):
    received = Received()
    order.arrive((event("A", 1, None),), received)

    order.arrive((event("A", 3, NOW - 0.01), event("B", 1, None)), received)
    assert received.flat == [("A", 1), ("B", 1)]  # B does not wait for A
    order.arrive((event("A", 2, NOW - 0.02),), received)

    assert received.items == [[("A", 1)], [("B", 1)], [("A", 2), ("A", 3)]]
    assert (order.held, order.gave_up, order.pending()) == (1, 0, 0)


async def test_a_first_sight_after_a_recent_write_waits_for_that_write(
    order: GradeOrder,
):
    """This worker has never seen A, and A's previous write was a moment ago (after
    this worker started): its event may still be on its way."""
    received = Received()

    order.arrive((event("A", 7, NOW - 0.05),), received)
    order.arrive((event("A", 6, NOW - 30),), received)  # long after its write before

    assert received.items == [[("A", 6), ("A", 7)]]


async def test_a_previous_write_long_past_or_before_the_start_is_not_waited_for(
    clock: Clock,
):
    clock.now = NOW - 0.1
    order = GradeOrder(clock)  # started 0.1 s ago
    clock.now = NOW
    received = Received()

    order.arrive((event("A", 7, NOW - ordering.RECENT_S - 1),), received)
    order.arrive((event("B", 3, NOW - 1.0),), received)  # before this worker started
    order.arrive((event("C", 2, None),), received)  # unnumbered before: nothing to wait

    assert received.flat == [("A", 7), ("B", 3), ("C", 2)]
    assert order.held == 0


async def test_a_lost_event_delays_the_next_ones_by_the_hold_bound_only(
    order: GradeOrder, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(ordering, "HOLD_S", 0.2)
    received = Received()
    order.arrive((event("A", 1, None),), received)
    received.arrived.clear()

    started = time.monotonic()
    order.arrive((event("A", 3, NOW - 0.01),), received)
    order.arrive((event("A", 4, NOW - 0.005),), received)
    assert received.flat == [("A", 1)]
    await asyncio.wait_for(received.arrived.wait(), WAIT_S)
    waited = time.monotonic() - started

    assert received.items == [[("A", 1)], [("A", 3), ("A", 4)]]
    assert waited >= 0.2
    assert (order.held, order.gave_up, order.pending()) == (2, 1, 0)
    # The lost one turning up after all is delivered, late, not dropped; the next
    # in order goes at once.
    order.arrive((event("A", 2, NOW - 0.02),), received)
    order.arrive((event("A", 5, NOW),), received)
    assert received.items[2:] == [[("A", 2)], [("A", 5)]]
    assert order.late == 1


async def test_unnumbered_events_and_empty_writes_pass_as_they_are(order: GradeOrder):
    received = Received()

    order.arrive((event("A", None, None), event("B", None, None)), received)
    order.arrive((), received)

    assert received.items == [[("A", None), ("B", None)], []]


async def test_only_the_students_seen_last_are_remembered(
    order: GradeOrder, monkeypatch: pytest.MonkeyPatch
):
    """The table is bounded (TRACKED), the student seen longest ago forgotten first:
    its next event after a recent write then waits as a first sight would, while a
    remembered student's next number goes at once."""
    monkeypatch.setattr(ordering, "TRACKED", 3)
    received = Received()
    for number, student in enumerate("ABCD"):
        order.arrive((event(student, 1, None, tag=str(number)),), received)

    order.arrive((event("D", 2, NOW - 0.01),), received)  # remembered: at once
    order.arrive((event("A", 2, NOW - 0.01),), received)  # forgotten: it waits

    assert received.flat == [("A", 1), ("B", 1), ("C", 1), ("D", 1), ("D", 2)]
    assert (order.held, order.pending()) == (1, 1)


# --- numbering in the database -----------------------------------------------------------


async def test_each_write_takes_the_next_number_and_stamps_the_one_before(
    database: Database,
):
    async with database.writing() as session:
        first = await lock_for_write(
            session, [DB_STUDENT, "NOBODY"], sequenced=[DB_STUDENT], now=100.0
        )
    async with database.writing() as session:
        second = await lock_for_write(
            session, [DB_STUDENT], sequenced=[DB_STUDENT], now=105.5
        )
    async with database.writing() as session:
        unnumbered = await lock_for_write(session, [DB_STUDENT], now=200.0)
    async with database.writing() as session:
        third = await lock_for_write(
            session, [DB_STUDENT], sequenced=[DB_STUDENT], now=300.0
        )

    assert first == {DB_STUDENT: Locked(9, 1, None)}
    assert second == {DB_STUDENT: Locked(9, 2, 100.0)}
    assert unnumbered == {DB_STUDENT: Locked(9)}
    assert third == {DB_STUDENT: Locked(9, 3, 105.5)}


async def test_a_rolled_back_write_gives_its_number_back(database: Database):
    with pytest.raises(RuntimeError):
        async with database.writing() as session:
            await lock_for_write(session, [DB_STUDENT], sequenced=[DB_STUDENT], now=1.0)
            raise RuntimeError("the write fails")
    async with database.writing() as session:
        taken = await lock_for_write(
            session, [DB_STUDENT], sequenced=[DB_STUDENT], now=2.0
        )

    assert taken == {DB_STUDENT: Locked(9, 1, None)}


async def test_a_second_writer_of_the_student_waits_for_the_first_to_commit(
    database: Database,
):
    """Commit order is number order: the second transaction's lock (and number)
    comes only after the first has committed."""
    first_locked = asyncio.Event()
    release = asyncio.Event()
    steps: list[Any] = []

    async def first() -> None:
        async with database.writing() as session:
            taken = await lock_for_write(
                session, [DB_STUDENT], sequenced=[DB_STUDENT], now=10.0
            )
            steps.append(("first took", taken[DB_STUDENT].seq))
            first_locked.set()
            await asyncio.wait_for(release.wait(), WAIT_S)
            steps.append("first commits")

    async def second() -> None:
        await asyncio.wait_for(first_locked.wait(), WAIT_S)
        async with database.writing() as session:
            taken = await lock_for_write(
                session, [DB_STUDENT], sequenced=[DB_STUDENT], now=20.0
            )
            steps.append(("second took", taken[DB_STUDENT].seq))

    async def let_go() -> None:
        await asyncio.wait_for(first_locked.wait(), WAIT_S)
        await asyncio.sleep(0.3)  # the second writer is waiting by now
        steps.append("release")
        release.set()

    await asyncio.wait_for(asyncio.gather(first(), second(), let_go()), 3 * WAIT_S)

    assert steps == [
        ("first took", 1),
        "release",
        "first commits",
        ("second took", 2),
    ]
