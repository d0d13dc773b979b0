"""SQLite's pool is fixed: under concurrent requests the connections are opened once
and kept (no overflow connection, each a thread and file handle of its own, opened
and closed per burst), and a request beyond the pool waits for a connection. The
reader's own connections (db/reader.py) are opened once too."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import event

from db.engine import SQLITE_POOL, SQLITE_READERS

WAIT_S = 30.0
BURST = 4 * SQLITE_POOL
# The page through the reader, the class figures through the engine (their first
# reads at once, before any is cached).
PAGE = (
    "{ students(first: 5) { edges { node { studentId grades { score } } } } "
    "classAnalytics { studentCount } }"
)


async def test_concurrent_requests_keep_the_same_connections(
    make_api: Any, tmp_path: Path
) -> None:
    api = await make_api(f"sqlite:///{tmp_path / 'pool.db'}")
    engine = api.services.database.engine.sync_engine
    opened: list[int] = []
    checkouts: list[int] = []
    event.listen(engine, "connect", lambda *_: opened.append(1))
    event.listen(engine, "checkout", lambda *_: checkouts.append(1))

    async def burst() -> None:
        bodies = await asyncio.wait_for(
            asyncio.gather(*(api.post(PAGE) for _ in range(BURST))), WAIT_S
        )
        assert all("errors" not in body for body in bodies), bodies[0]

    await burst()
    first = len(opened)
    readers = list(api.services.database.reader._sqlite)
    await burst()
    await burst()

    assert len(readers) == SQLITE_READERS
    assert api.services.database.reader._sqlite == readers  # the same connections
    assert len(checkouts) >= BURST  # the engine served the first burst
    assert first <= SQLITE_POOL  # (some may have been opened at start-up)
    assert len(opened) == first  # nothing opened again
    assert engine.pool.size() == SQLITE_POOL
    assert engine.pool.checkedout() == 0
