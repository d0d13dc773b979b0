"""OPERATION_TIMEOUT_S for every HTTP operation, on one loop timer.

`asyncio.timeout()` arms and disarms a timer per operation: 3 us a request on uvloop
(a libuv timer each), a twentieth of what `{ __typename }` costs. Here every
operation has the same limit, so deadlines come in the order operations start, and
one timer at a time, for the oldest operation still running, is enough: it fires
about once per limit while requests come and go, cancels what has run out, and
re-arms for the next. An expired operation ends with TimeoutError exactly as under
`asyncio.timeout()` (the cancellation it caused is taken back; any other is not)."""

from __future__ import annotations

import asyncio
from types import TracebackType


class Deadline:
    """One operation's limit (`async with deadlines.limit():`)."""

    __slots__ = ("_cancelling", "_owner", "at", "expired", "loop", "task")

    def __init__(self, owner: Deadlines) -> None:
        self._owner = owner
        self.expired = False

    async def __aenter__(self) -> Deadline:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline needs a task")
        self.task = task
        self.loop = asyncio.get_running_loop()
        self.at = self.loop.time() + self._owner.limit_s
        self._cancelling = task.cancelling()
        self._owner._start(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._owner._active.pop(self, None)
        # An expired operation's cancellation was ours: take it back (whatever
        # ended the operation), and say why it came.
        if (
            self.expired
            and self.task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc


class Deadlines:
    """The running operations' deadlines, `limit_s` after each starts."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        # Running operations in the order they started (so by deadline).
        self._active: dict[Deadline, None] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def limit(self) -> Deadline:
        return Deadline(self)

    def _start(self, deadline: Deadline) -> None:
        self._active[deadline] = None
        if self._timer is None or self._timer_loop is not deadline.loop:
            self._arm(deadline)

    def _arm(self, deadline: Deadline) -> None:
        old, loop = self._timer, self._timer_loop
        if old is not None and loop is not None and not loop.is_closed():
            old.cancel()
        self._timer_loop = deadline.loop
        self._timer = deadline.loop.call_at(deadline.at, self._expire)

    def _expire(self) -> None:
        self._timer = None
        loop = self._timer_loop
        assert loop is not None
        now = loop.time()
        active = self._active
        while active:
            first = next(iter(active))
            if first.loop is not loop:  # left by a loop that has gone (tests)
                del active[first]
                continue
            if first.at > now:
                self._arm(first)
                return
            del active[first]
            first.expired = True
            first.task.cancel()
