"""The sampler and the cluster's cost meter in the database: the meter is synced every
few seconds (not at every tick) while the feed stays exact, and a database that does
not answer holds neither start-up nor the stop up."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sqlalchemy import event

import monitoring.monitor
from db.costs import CostLedger
from monitoring.monitor import COST_SYNC_S, COSTS
from tests.conftest import StatementCounter

TICK_MS = 100
TYPENAME = "{ __typename }"  # an operation with no SQL: one API request, no query
WAIT_S = 5.0  # a bound on every wait, never a duration a test expects


async def until(condition: Any, bound: float = WAIT_S) -> None:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > bound:
            raise AssertionError(f"condition not met within {bound} s")
        await asyncio.sleep(0.02)


def ledger_statements(api: Any) -> StatementCounter:
    counter = StatementCounter()
    engine = api.app.state.monitor.costs._ledger.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", counter)
    return counter


async def test_the_meter_is_synced_every_few_seconds_not_at_every_tick(
    make_api, scratch_url
):
    api = await make_api(scratch_url, sample_interval_ms=TICK_MS)
    monitor = api.app.state.monitor
    ledger = ledger_statements(api)
    before = monitor.costs.snapshot().api_requests
    published: list[Any] = []
    feed = monitor.bus.listen(COSTS, published.append)
    try:
        for _ in range(3):
            await api.post(TYPENAME)
        # The feed has them at the next tick, before they reach the database.
        await until(
            lambda: any(
                snapshot.api_requests == before + 3 for snapshot, _ in published
            )
        )
        assert monitor.costs.snapshot().api_requests == before + 3
        ledger.reset()
        published.clear()
        await asyncio.sleep(10 * TICK_MS / 1000)  # ten ticks

        # Not a transaction per tick: one sync in these ticks at most.
        assert len(ledger.statements) <= 8, ledger.statements
        assert len(published) >= 5  # the feed still follows every tick
        # Within a sync period they are in the cluster's meter in the database.
        reader = CostLedger.connect(scratch_url, "development")
        try:

            async def stored() -> int:
                view = await reader.view(
                    start=monitor.costs.snapshot().current_period.timestamp
                )
                return int(view.totals.api_requests)

            deadline = time.monotonic() + COST_SYNC_S + WAIT_S
            while (found := await stored()) != before + 3:
                assert time.monotonic() < deadline, found
                await asyncio.sleep(0.1)
        finally:
            await reader.dispose()
        assert monitor.costs.snapshot().api_requests == before + 3
    finally:
        feed.close()


async def hang(*args: Any, **kwargs: Any) -> Any:
    await asyncio.Event().wait()  # a database that never answers


async def test_a_database_that_does_not_answer_holds_neither_start_nor_stop(
    make_api, scratch_url, monkeypatch, caplog
):
    monkeypatch.setattr(monitoring.monitor, "START_SYNC_TIMEOUT_S", 0.3)
    monkeypatch.setattr(monitoring.monitor, "STOP_SYNC_TIMEOUT_S", 0.3)
    monkeypatch.setattr(CostLedger, "sync", hang)

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="gradepulse.monitor"):
        api = await make_api(scratch_url, sample_interval_ms=TICK_MS)
    assert time.monotonic() - started < 3.0

    body = await api.post(TYPENAME)
    assert body["data"] == {"__typename": "Query"}, body
    warnings = [
        r.getMessage() for r in caplog.records if r.name == "gradepulse.monitor"
    ]
    assert warnings == [
        "the cost meter was not read before serving: the database did not answer "
        "within 0.3 s; it is read beside the sampler"
    ]
    monitor = api.app.state.monitor
    await asyncio.sleep(2 * TICK_MS / 1000)  # a sync in flight that hangs too

    caplog.clear()
    stopping = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="gradepulse.monitor"):
        await asyncio.wait_for(monitor.stop(), 3.0)
    assert time.monotonic() - stopping < 1.5
    assert [r.getMessage() for r in caplog.records] == [
        "the last cost counts were not saved: the database is slow"
    ]
    assert monitor.costs.snapshot().api_requests == 1  # kept, unsent
