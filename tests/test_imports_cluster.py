"""Import jobs across workers: two apps on one database. A job started on A is read,
followed and cancelled on B; the job of a worker that is lost (its keeper stopped,
as a killed process's would) or stops cleanly is taken over by B, which finishes it
(every row) or fails it with WORKER_LOST (no row); two sweeps never claim one job
twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text, update
from starlette.applications import Starlette

from db import jobs as db_jobs
from db import models
from resolvers import import_runner, jobs
from tests.conftest import make_settings
from tests.factories import create_student
from tests.factories.imports import (
    IMPORT_CANCEL,
    count_rows,
    csv_of,
    job_columns,
    read_job,
    start,
    wait_for_job,
)
from tests.factories.roles import ADMIN, subscribe

LEASE_S = 1.0
TICK_S = 0.1
# A bound on every wait for a takeover: the lease, a few ticks and the work, far
# under the 30 s promised.
TAKEOVER_S = 10.0
PAST = datetime(2000, 1, 1)
ROWS = [(f"CL-{n % 3}", f"S{n}", 50.0 + n) for n in range(12)]


@pytest.fixture(autouse=True)
def _fast_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short leases and ticks for the apps these tests make."""
    monkeypatch.setattr(jobs, "LEASE_S", LEASE_S)
    monkeypatch.setattr(jobs, "TICK_S", TICK_S)
    monkeypatch.setattr(jobs, "HANDOVER_WAIT_S", 0.2)


@dataclass
class Node:
    """An app under its lifespan that the test may stop, and a client of it."""

    app: Starlette
    http: httpx.AsyncClient

    @property
    def services(self) -> Any:
        return self.app.state.services

    async def post(
        self, query: str, variables: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@asynccontextmanager
async def node(url: str, **overrides: Any) -> AsyncIterator[Node]:
    """Leaving the block stops the app cleanly (its jobs are handed over)."""
    from app import create_app

    app = create_app(make_settings(url, **overrides))
    async with (
        LifespanManager(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        ) as http,
    ):
        yield Node(app, http)


async def lose(worker: Any) -> None:
    """The worker stops renewing its leases and sweeping, as a killed process would;
    its runners stay where they are."""
    keeper = worker.services.imports.keeper
    keeper.cancel()
    await asyncio.gather(keeper, return_exceptions=True)
    worker.services.imports.keeper = None


async def expire(api: Any, job_id: str) -> None:
    """Set the job's lease into the past, straight in the database."""
    async with api.services.database.writing() as session:
        await session.execute(
            update(models.ImportJob.__table__)
            .where(models.ImportJob.__table__.c.id == job_id)
            .values(lease_until=PAST)
        )


async def until_processed(api: Any, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        job = await read_job(api, job_id)
        assert job is not None
        if job["processed"] > 0:
            return job
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.01)


def stall_moves_of(monkeypatch: pytest.MonkeyPatch, worker: Any) -> asyncio.Event:
    """`worker` stops right before moving a checked job's rows (until cancelled);
    other workers move as usual. The event is set when it stalls."""
    real = import_runner._move
    stalled = asyncio.Event()

    async def move(services: Any, row: Any) -> None:
        if services is worker.services:
            stalled.set()
            await asyncio.Event().wait()
        await real(services, row)

    monkeypatch.setattr(import_runner, "_move", move)
    return stalled


async def students(api: Any) -> None:
    for n in range(3):
        await create_student(api, studentId=f"CL-{n}")


async def stored(api: Any) -> list[tuple[str, str, float]]:
    async with api.services.database.sessions() as session:
        result = await session.execute(
            text("SELECT student_id, subject, score FROM grades")
        )
        return sorted((row[0], row[1], float(row[2])) for row in result)


async def test_a_job_started_on_one_worker_is_read_and_followed_on_another(
    make_api: Any, scratch_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await make_api(scratch_url, import_chunk_size=1)
    second = await make_api(scratch_url)
    await students(second)
    monkeypatch.setattr(import_runner, "CHUNK_PAUSE_S", 0.05)

    started = await start(first, csv=csv_of(ROWS))
    job_id = started["job"]["id"]
    # No Redis: B hears nothing of A's changes and re-reads the job every second.
    stream = await subscribe(
        second,
        ADMIN,
        "subscription($id: ID!) { importProgress(jobId: $id) "
        "{ status processed total failureCode } }",
        id=job_id,
    )
    seen = []
    async with asyncio.timeout(20):
        async for event in stream:
            assert event.errors is None
            seen.append(event.data["importProgress"])

    assert seen[-1] == {
        "status": "SUCCEEDED",
        "processed": 12,
        "total": 12,
        "failureCode": None,
    }
    assert [e["processed"] for e in seen] == sorted(e["processed"] for e in seen)
    assert await read_job(second, job_id) == await read_job(first, job_id)
    assert (await read_job(second, job_id))["status"] == "SUCCEEDED"
    assert await stored(second) == sorted(ROWS)


async def test_a_lost_worker_s_unchecked_job_fails_with_worker_lost_and_no_rows(
    make_api: Any, scratch_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    survivor = await make_api(scratch_url)
    await students(survivor)
    monkeypatch.setattr(import_runner, "CHUNK_PAUSE_S", 60.0)  # stuck after one chunk
    async with node(scratch_url, import_chunk_size=2) as doomed:
        job_id = (await start(doomed, csv=csv_of(ROWS)))["job"]["id"]
        await until_processed(survivor, job_id)
        assert await count_rows(survivor, "grade_import_rows") == 2

        await lose(doomed)
        lost_at = time.monotonic()
        job = await wait_for_job(survivor, job_id, timeout=TAKEOVER_S)
        took = time.monotonic() - lost_at

        assert (job["status"], job["failureCode"], job["errors"]) == (
            "FAILED",
            "WORKER_LOST",
            [],
        )
        assert (job["processed"], job["total"]) == (2, 12)
        assert took >= LEASE_S / 2  # it waited for the lease to run out
        assert await count_rows(survivor, "grades") == 0
        assert await count_rows(survivor, "grade_import_rows") == 0
    # The lost worker's runner, stopped at last, changed nothing.
    assert await read_job(survivor, job_id) == job
    assert await job_columns(survivor, job_id, "worker_id", "lease_until") == (
        None,
        None,
    )


async def test_a_lost_worker_s_checked_job_is_finished_by_another(
    make_api: Any, scratch_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    doomed = await make_api(scratch_url, import_chunk_size=5)
    survivor = await make_api(scratch_url)
    await students(survivor)
    stalled = stall_moves_of(monkeypatch, doomed)
    job_id = (await start(doomed, csv=csv_of(ROWS)))["job"]["id"]
    await asyncio.wait_for(stalled.wait(), 10)
    before = await read_job(survivor, job_id)
    assert before is not None
    assert (before["status"], before["processed"]) == ("RUNNING", 12)

    await lose(doomed)
    await expire(survivor, job_id)
    job = await wait_for_job(survivor, job_id, timeout=TAKEOVER_S)

    assert (job["status"], job["failureCode"], job["processed"]) == (
        "SUCCEEDED",
        None,
        12,
    )
    assert await stored(survivor) == sorted(ROWS)
    assert await count_rows(survivor, "grade_import_rows") == 0
    # The move is recorded for the job's owner and operation, once.
    async with survivor.services.database.sessions() as session:
        owner = (
            await session.execute(
                text("SELECT owner FROM import_jobs WHERE id = :id"), {"id": job_id}
            )
        ).scalar_one()
        records = (
            await session.execute(
                text("SELECT actor, operation FROM audit_log WHERE action = 'write'")
            )
        ).all()
    assert [tuple(r) for r in records if r[1] == "Import"] == [(owner, "Import")]


@pytest.mark.parametrize(
    ("checked", "status", "failure_code", "rows"),
    [(False, "FAILED", "WORKER_LOST", []), (True, "SUCCEEDED", None, sorted(ROWS))],
)
async def test_a_clean_stop_hands_the_job_over(
    make_api: Any,
    scratch_url: str,
    monkeypatch: pytest.MonkeyPatch,
    checked: bool,
    status: str,
    failure_code: str | None,
    rows: list[tuple[str, str, float]],
) -> None:
    survivor = await make_api(scratch_url)
    await students(survivor)
    if not checked:
        monkeypatch.setattr(
            import_runner, "CHUNK_PAUSE_S", 60.0
        )  # stuck after one chunk
    async with node(scratch_url, import_chunk_size=2) as stopping:
        stalled = stall_moves_of(monkeypatch, stopping)
        job_id = (await start(stopping, csv=csv_of(ROWS)))["job"]["id"]
        if checked:
            await asyncio.wait_for(stalled.wait(), 10)
        else:
            await until_processed(survivor, job_id)
        stopped_at = time.monotonic()
    # Handed over, not cancelled: its lease released (or already the survivor's).
    worker_id, cancel = await job_columns(
        survivor, job_id, "worker_id", "cancel_requested"
    )
    assert worker_id in (None, survivor.services.imports.worker_id)
    assert not cancel

    job = await wait_for_job(survivor, job_id, timeout=TAKEOVER_S)

    # Taken at the next sweep, not after a lease had run out.
    assert time.monotonic() - stopped_at < LEASE_S + 2
    assert (job["status"], job["failureCode"]) == (status, failure_code)
    assert await stored(survivor) == rows
    assert await count_rows(survivor, "grade_import_rows") == 0


async def test_a_job_cancelled_on_another_worker_ends_cancelled(
    make_api: Any, scratch_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = await make_api(scratch_url, import_chunk_size=2)
    other = await make_api(scratch_url)
    await students(other)
    monkeypatch.setattr(import_runner, "CHUNK_PAUSE_S", 0.05)
    job_id = (await start(runner, csv=csv_of(ROWS)))["job"]["id"]
    await until_processed(other, job_id)

    body = await other.post(IMPORT_CANCEL, {"jobId": job_id})

    job = body["data"]["importCancel"]["job"]
    assert (job["status"], job["failureCode"], job["total"]) == ("CANCELLED", None, 12)
    assert 0 < job["processed"] < 12
    assert await count_rows(other, "grades") == 0
    assert await count_rows(other, "grade_import_rows") == 0
    await asyncio.sleep(3 * TICK_S)
    assert (await read_job(runner, job_id))["status"] == "CANCELLED"


async def test_cancelling_a_lost_worker_s_job_ends_it_at_once(
    make_api: Any, scratch_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    doomed = await make_api(scratch_url, import_chunk_size=2)
    # This one never sweeps by itself: the cancel ends the job.
    other = await make_api(scratch_url)
    await lose(other)
    await students(other)
    monkeypatch.setattr(import_runner, "CHUNK_PAUSE_S", 60.0)
    job_id = (await start(doomed, csv=csv_of(ROWS)))["job"]["id"]
    await until_processed(other, job_id)
    await lose(doomed)
    await expire(other, job_id)

    body = await other.post(IMPORT_CANCEL, {"jobId": job_id})

    job = body["data"]["importCancel"]["job"]
    assert (job["status"], job["failureCode"], job["processed"]) == (
        "CANCELLED",
        None,
        2,
    )
    assert await count_rows(other, "grade_import_rows") == 0
    assert await count_rows(other, "grades") == 0


async def test_two_sweeps_at_once_claim_an_expired_job_once(
    make_api: Any, scratch_url: str
) -> None:
    first = await make_api(scratch_url)
    second = await make_api(scratch_url)
    for worker in (first, second):
        await lose(worker)
    async with first.services.database.writing() as session:
        for n in range(5):
            await db_jobs.insert_job(
                session,
                job_id=f"job-{n}",
                owner="user:admin",
                owner_role="admin",
                owner_levels=None,
                operation="Import",
                request_id=None,
                worker_id="gone",
                lease_s=-5,
            )

    async def claim(worker: Any) -> list[str]:
        imports_ = worker.services.imports
        async with imports_.database.writing() as session:
            rows = await db_jobs.claim_expired(
                session, imports_.worker_id, lease_s=60, limit=10
            )
        return [row.id for row in rows]

    # The second sweep starts while the first one's claim is not yet committed:
    # it waits for the rows (PostgreSQL) or the write lock (SQLite), then finds
    # their new leases.
    held = first.services.imports
    async with held.database.writing() as session:
        claimed = await db_jobs.claim_expired(
            session, held.worker_id, lease_s=60, limit=10
        )
        racing = asyncio.create_task(claim(second))
        await asyncio.sleep(0.3)
        assert not racing.done()

    assert sorted(row.id for row in claimed) == [f"job-{n}" for n in range(5)]
    assert await asyncio.wait_for(racing, 10) == []
    assert await claim(second) == []  # their new leases hold


async def test_jobs_finished_more_than_a_week_ago_are_forgotten(
    make_api: Any, scratch_url: str
) -> None:
    api = await make_api(scratch_url)
    table = models.ImportJob.__table__
    async with api.services.database.writing() as session:
        for job_id in ("old", "recent", "running"):
            await db_jobs.insert_job(
                session,
                job_id=job_id,
                owner="user:admin",
                owner_role="admin",
                owner_levels=None,
                operation="Import",
                request_id=None,
                worker_id="somewhere",
                lease_s=60,
            )
        await session.execute(
            update(table)
            .where(table.c.id == "old")
            .values(status="SUCCEEDED", finished_at=PAST)
        )
        await session.execute(
            update(table)
            .where(table.c.id == "recent")
            .values(
                status="SUCCEEDED", finished_at=datetime.now(UTC).replace(tzinfo=None)
            )
        )
        # In the same transaction: the app's own keeper sweeps finished jobs too, and
        # must not forget "old" before this call does.
        forgotten = await db_jobs.delete_finished(session, jobs.KEEP_FINISHED_S)

    assert forgotten == 1
    assert await read_job(api, "old") is None
    assert (await read_job(api, "recent"))["status"] == "SUCCEEDED"
    assert (await read_job(api, "running"))["status"] == "QUEUED"
