"""SQLite's pool is fixed: under concurrent requests the connections are opened once
and kept (no overflow connection, each a thread and file handle of its own, opened
and closed per burst), and a request beyond the pool waits for a connection."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import event

from db.engine import SQLITE_POOL

WAIT_S = 30.0
BURST = 4 * SQLITE_POOL
PAGE = "{ students(first: 5) { edges { node { studentId grades { score } } } } }"


async def test_concurrent_requests_keep_the_same_connections(
    make_api: Any, tmp_path: Path
) -> None:
    api = await make_api(f"sqlite:///{tmp_path / 'pool.db'}")
    engine = api.services.database.engine.sync_engine
    opened: list[int] = []
    event.listen(engine, "connect", lambda *_: opened.append(1))

    async def burst() -> None:
        bodies = await asyncio.wait_for(
            asyncio.gather(*(api.post(PAGE) for _ in range(BURST))), WAIT_S
        )
        assert all("errors" not in body for body in bodies), bodies[0]

    await burst()
    first = len(opened)
    await burst()
    await burst()

    assert 1 <= first <= SQLITE_POOL
    assert len(opened) == first  # nothing opened again
    assert engine.pool.size() == SQLITE_POOL
    assert engine.pool.checkedout() == 0
