"""Grade events in each student's commit order, whichever worker wrote them.

A write that publishes grade events takes each student's next sequence number under
the student's row lock (db.students.lock_for_write), so numbers follow commit order.
Events still travel apart: two workers that write one student a moment apart publish
through Redis in whichever order their senders run, and a worker's own event reaches
its subscribers at once while an earlier one from another worker is on its way.
GradeOrder (the bus's sequencer for grade events, one per worker) hands each
student's events on in number order:

- the next number after the last one handed on goes at once;
- so does an event whose previous write is long past (RECENT_S) or older than this
  worker's start: whatever came before has arrived already, or never will (Redis
  pub/sub is at-most-once);
- any other event waits for the events before it, at most HOLD_S: a lost message
  delays the student's next events by that much, and never stops them."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from resolvers.live import GradeEvent

# The longest an event waits for an earlier one of the same student.
HOLD_S = 0.5
# A previous write older than this has had its event delivered (or lost) already.
RECENT_S = 2.0
# Clocks of machines in one cluster differ by less than this.
SKEW_S = 0.25
# Students whose last number is remembered; only those written in the last RECENT_S
# matter, so the oldest are forgotten first.
TRACKED = 65_536

Deliver = Callable[[tuple[GradeEvent, ...]], None]


@dataclass(slots=True)
class _Held:
    events: dict[int, GradeEvent]
    timer: asyncio.TimerHandle


class GradeOrder:
    """The sequencer of the grades topic (monitoring.bus.Sequencer)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._since = clock()
        self._last: OrderedDict[str, int] = OrderedDict()
        self._held: dict[str, _Held] = {}
        self.held = 0  # events that waited for an earlier one
        self.gave_up = 0  # waits that ended without the earlier event
        self.late = 0  # events that arrived after a later one was handed on

    def arrive(self, write: tuple[GradeEvent, ...], deliver: Deliver) -> None:
        """One write's events: those whose turn has come go on together (one item,
        as the write made them); the others wait."""
        ready: list[GradeEvent] = []
        for event in write:
            if event.seq is None:  # written by a worker that does not number events
                ready.append(event)
            elif self._due(event):
                self._handed_on(event, ready)
            else:
                self._hold(event, deliver)
        if ready or not write:  # a write without events is passed on as it is
            deliver(tuple(ready))

    def _due(self, event: GradeEvent) -> bool:
        assert event.seq is not None
        last = self._last.get(event.student_id)
        if last is not None and event.seq <= last + 1:
            if event.seq <= last:
                self.late += 1  # its wait ended before it came: better late than lost
            return True
        prev_at = event.prev_at
        if prev_at is None:  # the student's first numbered event: none came before
            return True
        settled = max(self._clock() - RECENT_S, self._since - SKEW_S)
        return prev_at < settled

    def _handed_on(self, event: GradeEvent, ready: list[GradeEvent]) -> None:
        """`event` goes now, and after it any waiting events that follow on."""
        student, seq = event.student_id, event.seq
        assert seq is not None
        ready.append(event)
        self._remember(student, seq)
        held = self._held.get(student)
        if held is None:
            return
        while (seq := seq + 1) in held.events:
            ready.append(held.events.pop(seq))
            self._remember(student, seq)
        if not held.events:
            held.timer.cancel()
            del self._held[student]

    def _remember(self, student: str, seq: int) -> None:
        last = self._last.get(student)
        if last is None or seq > last:
            self._last[student] = seq
        self._last.move_to_end(student)
        if len(self._last) > TRACKED:
            self._last.popitem(last=False)

    def _hold(self, event: GradeEvent, deliver: Deliver) -> None:
        assert event.seq is not None
        self.held += 1
        held = self._held.get(event.student_id)
        if held is None:
            timer = asyncio.get_running_loop().call_later(
                HOLD_S, self._give_up, event.student_id, deliver
            )
            held = self._held[event.student_id] = _Held({}, timer)
        held.events[event.seq] = event

    def _give_up(self, student: str, deliver: Deliver) -> None:
        """The earlier events did not come in time: hand on what waits, in order."""
        held = self._held.pop(student, None)
        if held is None or not held.events:
            return
        self.gave_up += 1
        events = [held.events[seq] for seq in sorted(held.events)]
        for event in events:
            assert event.seq is not None
            self._remember(student, event.seq)
        deliver(tuple(events))

    def pending(self) -> int:
        """Events waiting now."""
        return sum(len(held.events) for held in self._held.values())
