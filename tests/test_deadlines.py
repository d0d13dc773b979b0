"""server/deadlines.py: OPERATION_TIMEOUT_S on one timer, with asyncio.timeout()'s
behaviour: an operation past its limit ends with TimeoutError at its own deadline,
others are untouched, and a cancellation that is not the deadline's stays one."""

from __future__ import annotations

import asyncio
import time

import pytest

from server.deadlines import Deadlines

LIMIT = 0.2


async def run(deadlines: Deadlines, sleep_s: float) -> float:
    """Sleep under the limit; the seconds it took (raises TimeoutError)."""
    started = time.monotonic()
    async with deadlines.limit():
        await asyncio.sleep(sleep_s)
    return time.monotonic() - started


async def test_each_operation_runs_out_at_its_own_deadline() -> None:
    deadlines = Deadlines(LIMIT)
    started = time.monotonic()

    async def late(offset: float) -> float:
        await asyncio.sleep(offset)
        with pytest.raises(TimeoutError):
            await run(deadlines, 5)
        return time.monotonic() - started

    quick = [asyncio.create_task(run(deadlines, 0.01)) for _ in range(50)]
    ends = await asyncio.wait_for(asyncio.gather(late(0), late(0.05), late(0.12)), 5)
    assert all(0 <= t < LIMIT for t in await asyncio.gather(*quick))
    for end, offset in zip(ends, (0, 0.05, 0.12), strict=True):
        assert offset + LIMIT - 0.01 <= end < offset + LIMIT + 0.15
    assert deadlines._active == {}


async def test_operations_that_end_in_time_leave_nothing_behind() -> None:
    deadlines = Deadlines(LIMIT)
    for _ in range(1000):
        async with deadlines.limit():
            pass
    assert deadlines._active == {}
    # The one timer, armed for the first operation, finds nothing to cancel.
    await asyncio.sleep(LIMIT + 0.05)
    assert await asyncio.wait_for(run(deadlines, 0.01), 1) < LIMIT


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    deadlines = Deadlines(LIMIT)
    task = asyncio.create_task(run(deadlines, 5))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1)
    assert deadlines._active == {}


async def test_an_operation_that_swallows_the_cancellation_is_not_a_timeout() -> None:
    """As under asyncio.timeout(): the result stands, the cancellation is taken back."""
    deadlines = Deadlines(LIMIT)

    async def stubborn() -> str:
        async with deadlines.limit():
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                return "finished anyway"
        return "unreachable"

    assert await asyncio.wait_for(stubborn(), 2) == "finished anyway"
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
