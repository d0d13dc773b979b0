"""Background import jobs kept in memory: their state, change signal and registry."""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum

from db.errors import RowProblem

KEEP_FINISHED = 100


class ImportStatus(Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


FINISHED = frozenset(
    {ImportStatus.SUCCEEDED, ImportStatus.FAILED, ImportStatus.CANCELLED}
)


@dataclass(slots=True)
class ImportJob:
    """One import: mutated only by its runner (and a cancel request)."""

    id: str
    # The identity of the viewer who started it: only they (or an admin) may read,
    # follow or cancel it.
    owner: str | None = None
    total: int = 0
    processed: int = 0
    status: ImportStatus = ImportStatus.QUEUED
    errors: list[RowProblem] = field(default_factory=list)
    cancel_requested: bool = False
    task: asyncio.Task[None] | None = None
    # Replaced at each change; waiters hold the one they saw (no change is missed).
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def touch(self) -> None:
        event, self.changed = self.changed, asyncio.Event()
        event.set()


class ImportJobs:
    """Every running job and the last `keep_finished` finished ones, by id."""

    def __init__(self, keep_finished: int = KEEP_FINISHED) -> None:
        self.keep_finished = keep_finished
        self._jobs: OrderedDict[str, ImportJob] = OrderedDict()

    def create(self) -> ImportJob:
        job = ImportJob(id=uuid.uuid4().hex)
        self._jobs[job.id] = job
        self._trim()
        return job

    def get(self, job_id: str) -> ImportJob | None:
        return self._jobs.get(job_id)

    def finished(self, job: ImportJob) -> None:
        """Called when a job ends: it now counts against the finished ones kept."""
        self._jobs.move_to_end(job.id)
        self._trim()

    def _trim(self) -> None:
        done = [job_id for job_id, job in self._jobs.items() if job.finished]
        for job_id in done[: max(0, len(done) - self.keep_finished)]:
            del self._jobs[job_id]

    async def shutdown(self) -> None:
        """Cancel running jobs (each cleans up its staged rows) and wait for them."""
        tasks = [job.task for job in self._jobs.values() if job.task is not None]
        for job in self._jobs.values():
            job.cancel_requested = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
