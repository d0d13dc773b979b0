"""Import jobs: their state as read from the database, and this worker's part in
running them (its id, its runner tasks, and the keeper task that renews their leases
and sweeps up the jobs of lost workers)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from enum import Enum
from typing import Any

from db.engine import Database
from db.errors import RowProblem
from db.jobs import JobRow
from resolvers.errors import ErrorCode

log = logging.getLogger("gradepulse.imports")

# A worker renews the leases of its jobs every TICK_S and sweeps for jobs whose lease
# ran out at the same pace; a lease lasts LEASE_S. So the job of a worker that died
# is claimed by a live one within LEASE_S + TICK_S (12 s; the promise is 30 s).
LEASE_S = 10.0
TICK_S = 2.0
CLAIM_BATCH = 20  # jobs claimed per sweep, at most
# A clean stop lets runners reach a chunk boundary for this long, then cancels them.
HANDOVER_WAIT_S = 2.0
KEEP_FINISHED_S = 7 * 24 * 3600.0  # as long as idempotency keys live
CLEANUP_EVERY = 150  # ticks between deletions of long-finished jobs


class ImportStatus(Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


FINISHED = frozenset(
    {ImportStatus.SUCCEEDED, ImportStatus.FAILED, ImportStatus.CANCELLED}
)


class FailureCode:
    """Why a job FAILED (ImportJob.failureCode)."""

    INVALID_ROWS = "INVALID_ROWS"  # rows were rejected: `errors` lists them
    WORKER_LOST = "WORKER_LOST"  # its worker stopped before it could finish
    # The error codes of the same names: the database (or the audit log) failed;
    # a bug (the log says which).
    DB_UNAVAILABLE = ErrorCode.DB_UNAVAILABLE.value
    INTERNAL_SERVER_ERROR = ErrorCode.INTERNAL_SERVER_ERROR.value


@dataclass(frozen=True, slots=True)
class ImportJob:
    """One import as the database holds it now."""

    id: str
    owner: str
    status: ImportStatus = ImportStatus.QUEUED
    total: int = 0
    processed: int = 0
    errors: tuple[RowProblem, ...] = ()
    failure_code: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @classmethod
    def from_row(cls, row: JobRow) -> ImportJob:
        return cls(
            id=row.id,
            owner=row.owner,
            status=ImportStatus(row.status),
            total=row.total,
            processed=row.processed,
            errors=row.errors,
            failure_code=row.failure_code,
        )


@dataclass(slots=True, eq=False)
class Run:
    """A job this worker is running (or finishing after a takeover)."""

    job_id: str
    task: asyncio.Task[None] | None = None
    # Set by a cancel received on this worker; other workers' cancels reach the
    # runner through the database.
    cancel_requested: bool = False


class ImportJobs:
    """This worker's part in the import jobs: the runs it holds leases for, and the
    keeper task (started and stopped by the lifespan). `worker_id` is the worker's
    id (monitoring.cluster.Worker); `database` is the keeper's own (its statements
    are maintenance, not requests); None: it has none yet."""

    def __init__(
        self,
        worker_id: str,
        *,
        database: Database | None = None,
        lease_s: float | None = None,
        tick_s: float | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.database = database
        self.lease_s = LEASE_S if lease_s is None else lease_s
        self.tick_s = TICK_S if tick_s is None else tick_s
        self.runs: dict[str, Run] = {}
        # Set at a clean stop: runners hand their jobs over instead of going on.
        self.stopping = False
        self.keeper: asyncio.Task[None] | None = None

    def run(self, job_id: str, work: Coroutine[Any, Any, None]) -> Run:
        """Run `work` for the job in a task of this worker, until it ends."""
        run = Run(job_id)
        self.runs[job_id] = run
        run.task = asyncio.get_running_loop().create_task(work, name=f"import-{job_id}")
        run.task.add_done_callback(lambda _: self._ended(run))
        return run

    def _ended(self, run: Run) -> None:
        if self.runs.get(run.job_id) is run:
            del self.runs[run.job_id]

    def start(self, keeper: Coroutine[Any, Any, None]) -> None:
        if self.keeper is None:
            self.keeper = asyncio.get_running_loop().create_task(
                keeper, name="import-keeper"
            )
        else:
            keeper.close()

    async def shutdown(self) -> None:
        """A clean stop: stop sweeping, then let each runner hand its job over (its
        lease released, so that a live worker takes it at its next sweep)."""
        self.stopping = True
        if self.keeper is not None:
            self.keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.keeper
            self.keeper = None
        tasks = [run.task for run in self.runs.values() if run.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=HANDOVER_WAIT_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.database is not None:
            await self.database.dispose()
