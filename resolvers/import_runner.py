"""Running import jobs on this worker: staging in chunks under the job's lease, the
final move, the end of a failed or cancelled job, the hand-over at a clean stop, and
the keeper task (lease renewal, and takeover of the jobs of lost workers)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from db import jobs as db_jobs
from db import staging, summaries
from db.csvrows import parse_grades_csv, sort_problems
from db.engine import Database
from db.errors import RowProblem
from db.jobs import JobRow
from db.records import GradeRecord
from db.validation import InputErrorCode
from resolvers import audit, live
from resolvers.context import Context, Services
from resolvers.jobs import (
    CLAIM_BATCH,
    CLEANUP_EVERY,
    KEEP_FINISHED_S,
    FailureCode,
    ImportJobs,
    ImportStatus,
)
from resolvers.loaders import invalidate_grades
from resolvers.viewer import Viewer

log = logging.getLogger("gradepulse.imports")
# The bus topic of job changes: the payload is the job id (the job itself is read
# from the database, so a message may come from any worker).
IMPORTS = live.IMPORTS
# Each chunk of Limits.import_chunk_size rows is its own short write transaction;
# other writers get the database between chunks. Tests raise the pause to cancel.
CHUNK_PAUSE_S = 0.0


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How a job ends when it does not succeed."""

    status: ImportStatus
    failure_code: str | None = None
    errors: list[RowProblem] = field(default_factory=list)
    processed_all: bool = False


class _Lost(Exception):
    """The job is no longer this worker's: another claimed it."""


class _Cancelled(Exception):
    pass


class _HandOver(Exception):
    """This worker is stopping cleanly."""


class _Refused(Exception):
    def __init__(self, problems: list[RowProblem]) -> None:
        self.problems = problems


def start_run(ctx: Context, job_id: str, source: bytes | str) -> None:
    """Run a new job (stored QUEUED, leased to this worker) in a task of its own."""
    ctx.services.imports.run(
        job_id, _supervised(ctx.services, job_id, _stage_and_move(ctx, job_id, source))
    )


def publish(services: Services, job_id: str) -> None:
    """Announce a change of the job (to every worker, when the bus is shared)."""
    if services.monitor is not None:
        services.monitor.bus.publish(IMPORTS, job_id)


async def _supervised(
    services: Services, job_id: str, work: Coroutine[Any, Any, _Outcome | None]
) -> None:
    """Run a job's work on this worker and end the job as it says: `work` returns
    None when it has ended the job itself (it succeeded), else how it ends."""
    jobs = services.imports
    try:
        try:
            outcome = await work
        except _Cancelled:
            outcome = _Outcome(ImportStatus.CANCELLED)
        except _Refused as refused:
            outcome = _invalid(refused.problems)
        except _Lost:
            log.warning("import %s: taken over by another worker", job_id)
            return
        except (_HandOver, asyncio.CancelledError):
            run = jobs.runs.get(job_id)
            if run is not None and run.cancel_requested:
                outcome = _Outcome(ImportStatus.CANCELLED)
            else:
                await _hand_over(services, job_id)
                return
        except Exception as exc:
            # The type only: a driver's message can quote the rows' values.
            log.error("import %s failed: %s", job_id, type(exc).__name__)
            outcome = _Outcome(ImportStatus.FAILED, _failure_code(exc))
        if outcome is not None:
            await _end(services, job_id, outcome)
    finally:
        publish(services, job_id)


def _failure_code(exc: Exception) -> str:
    if isinstance(exc, SQLAlchemyError | audit.AuditUnavailable | OSError):
        return FailureCode.DB_UNAVAILABLE
    return FailureCode.INTERNAL_SERVER_ERROR


def _invalid(problems: list[RowProblem]) -> _Outcome:
    return _Outcome(
        ImportStatus.FAILED,
        FailureCode.INVALID_ROWS,
        sort_problems(problems),
        processed_all=True,
    )


async def _end(services: Services, job_id: str, outcome: _Outcome) -> None:
    """End a job this worker holds and delete its staged rows, in one transaction:
    a client that sees the job end sees no staged rows left. When this fails the
    lease runs out, and a sweep ends the job."""
    jobs = services.imports
    try:
        async with services.database.writing() as session:
            if await db_jobs.finish(
                session,
                job_id,
                jobs.worker_id,
                status=outcome.status.value,
                failure_code=outcome.failure_code,
                errors=outcome.errors,
                processed_all=outcome.processed_all,
            ):
                await staging.delete_staged(session, job_id)
    except Exception as exc:
        log.error("import %s: not ended: %s", job_id, type(exc).__name__)


async def _hand_over(services: Services, job_id: str) -> None:
    """Release the job's lease (this worker is stopping): a live worker claims it
    at its next sweep. A job whose cancel was requested ends CANCELLED instead."""
    jobs = services.imports
    try:
        async with services.database.writing() as session:
            released = await db_jobs.release(session, job_id, jobs.worker_id)
    except Exception as exc:  # the lease runs out by itself
        log.error("import %s: not handed over: %s", job_id, type(exc).__name__)
        return
    if released:
        log.info("import %s handed over", job_id)
    else:  # cancelled, or no longer ours (then this changes nothing)
        await _end(services, job_id, _Outcome(ImportStatus.CANCELLED))


def writable_levels(viewer: Viewer) -> frozenset[int] | None:
    """The grade levels whose grades the viewer may import; None: every level."""
    if viewer.role == "admin":
        return None
    if viewer.role == "teacher":
        return viewer.grade_levels
    return frozenset()


def _forbidden_rows(rows: list[tuple[int, int, str]]) -> list[RowProblem]:
    return [
        RowProblem(
            index,
            line,
            "studentId",
            InputErrorCode.FORBIDDEN,
            f"you may not write grades of student {student_id!r}",
        )
        for index, line, student_id in rows
    ]


async def _advance(services: Services, job_id: str, **values: Any) -> None:
    """Record a change of a job this worker runs, on its own."""
    jobs = services.imports
    async with services.database.writing() as session:
        cancelled = await db_jobs.advance(
            session, job_id, jobs.worker_id, lease_s=jobs.lease_s, **values
        )
    _check(cancelled, services, job_id)
    publish(services, job_id)


def _check(cancelled: bool | None, services: Services, job_id: str) -> None:
    """Go on with the job, or raise why not."""
    if cancelled is None:
        raise _Lost
    run = services.imports.runs.get(job_id)
    if cancelled or (run is not None and run.cancel_requested):
        raise _Cancelled
    if services.imports.stopping:
        raise _HandOver


async def _stage_and_move(
    ctx: Context, job_id: str, source: bytes | str
) -> _Outcome | None:
    """Stage, check and move the rows; None when the job succeeded, else how it ends
    (a failed job's staged rows are deleted as it ends)."""
    services = ctx.services
    jobs = services.imports
    parsed = await asyncio.to_thread(parse_grades_csv, source)
    bad_rows = {p.index for p in parsed.problems if p.index is not None}
    total = len(parsed.rows) + len(bad_rows)
    await _advance(services, job_id, total=total, status=ImportStatus.RUNNING.value)
    chunk = services.limits.import_chunk_size
    rows, lines = parsed.rows, parsed.lines
    # The data row index of each valid row: rows with problems take the gaps.
    indexes = [i for i in range(total) if i not in bad_rows]
    processed = 0
    for start in range(0, len(rows), chunk):
        end = start + chunk
        processed += len(rows[start:end])
        async with services.database.writing() as session:
            # The lease guards the chunk: a job lost to another worker stages nothing.
            cancelled = await db_jobs.advance(
                session,
                job_id,
                jobs.worker_id,
                lease_s=jobs.lease_s,
                processed=processed,
            )
            _check(cancelled, services, job_id)
            await staging.stage_rows(
                session, job_id, rows[start:end], indexes[start:end], lines[start:end]
            )
        publish(services, job_id)
        await asyncio.sleep(CHUNK_PAUSE_S)
    writable = writable_levels(ctx.viewer)
    async with services.database.sessions() as session:
        unknown = await staging.unknown_students(session, job_id)
        outside = (
            await staging.staged_outside_levels(session, job_id, writable)
            if writable is not None
            else []
        )
    problems = parsed.problems + [
        RowProblem(
            index,
            line,
            "studentId",
            InputErrorCode.NOT_FOUND,
            f"no student with studentId {student_id!r}",
        )
        for index, line, student_id in unknown
    ]
    # All or nothing, like any other invalid row: one row outside the importing
    # teacher's grade levels fails the whole job.
    problems += _forbidden_rows(outside)
    if problems:
        return _invalid(problems)
    # From here on, moving the staged rows is all that remains: a worker that takes
    # the job over finishes it.
    await _advance(services, job_id, processed=total, validated=True)
    async with services.database.sessions() as session:
        row = await db_jobs.job_by_id(session, job_id)
    if row is None:
        raise _Lost
    await _move(services, row)
    return None


def _owner_context(services: Services, row: JobRow) -> Context:
    """The job's owner, as the audit log and the level check see them."""
    viewer = Viewer(
        identity=row.owner,
        role="teacher" if row.owner_role == "teacher" else "admin",
        grade_levels=row.owner_levels,
        anonymous=False,
    )
    return services.context(viewer=viewer, request_id=row.request_id, over_http=False)


async def _move(services: Services, row: JobRow) -> None:
    """Move the staged rows into grades and mark the job SUCCEEDED, in one
    transaction that the lease guards: of two workers, only the one holding the job
    moves its rows."""
    ctx = _owner_context(services, row)
    writable = row.owner_levels
    jobs = services.imports
    records: list[GradeRecord] = []
    async with services.database.writing() as session:
        state = await db_jobs.succeed(session, row.id, jobs.worker_id)
        if state is None:
            raise _Lost
        if state == "cancelled":
            raise _Cancelled
        staged = await staging.staged_student_levels(session, row.id)
        locked = await live.lock_students(ctx, session, staged)
        levels = live.levels_of(locked)
        if writable is not None and not set(levels.values()) <= writable:
            # A student changed level since the check: refuse (this transaction,
            # SUCCEEDED included, rolls back).
            outside = await staging.staged_outside_levels(session, row.id, writable)
            raise _Refused(_forbidden_rows(outside))
        # The stored rows come back: the summaries add them (and, while anyone
        # listens, they are the grade events).
        records = await staging.move_staged(session, row.id, returning=True)
        await summaries.added(session, summaries.inserted(records, levels))
        await audit.record_write(session, ctx, levels, row.operation)
    await invalidate_grades(services.cache, services.invalidations, levels)
    live.publish_grades(ctx, records, locked)


# --- the keeper: leases and takeovers ---------------------------------------------


def start_keeper(services: Services) -> None:
    """Start this worker's keeper task (the lifespan stops it: ImportJobs.shutdown)."""
    services.imports.start(_keep(services))


async def _keep(services: Services) -> None:
    """Every tick: renew the leases of this worker's jobs, then claim the jobs whose
    lease ran out (their worker stopped) and finish or fail each. Each step is
    bounded; a failing database is logged once per outage."""
    jobs = services.imports
    ticks = 0
    down = False
    while True:
        try:
            async with asyncio.timeout(max(jobs.tick_s, 1.0) * 5):
                await _renew(services)
                await claim(services)
                if ticks % CLEANUP_EVERY == 0:
                    await _forget_finished(services)
            if down:
                log.warning("import keeper: database answers again")
            down = False
        except Exception as exc:
            if not down:
                log.warning("import keeper failed: %s", type(exc).__name__)
            down = True
        ticks += 1
        await asyncio.sleep(jobs.tick_s)


def _keeper_database(jobs: ImportJobs, services: Services) -> Database:
    return jobs.database if jobs.database is not None else services.database


async def _renew(services: Services) -> None:
    jobs = services.imports
    if not jobs.runs:
        return
    async with _keeper_database(jobs, services).writing() as session:
        await db_jobs.renew(session, jobs.worker_id, set(jobs.runs), jobs.lease_s)


async def claim(services: Services, *, job_id: str | None = None) -> None:
    """Claim jobs whose lease ran out (only `job_id`, when given) and take each over:
    a cancelled one ends CANCELLED; one whose rows were all staged and checked is
    finished (the move); any other ends FAILED with WORKER_LOST, its staged rows
    deleted."""
    jobs = services.imports
    if jobs.stopping:
        return
    database = _keeper_database(jobs, services)
    async with database.sessions() as session:
        if not await db_jobs.any_expired(session, set(jobs.runs), job_id):
            return
    async with database.writing() as session:
        claimed = await db_jobs.claim_expired(
            session,
            jobs.worker_id,
            lease_s=jobs.lease_s,
            limit=CLAIM_BATCH,
            exclude=set(jobs.runs),
            job_id=job_id,
        )
    for row in claimed:
        log.warning("import %s: its worker was lost; taken over", row.id)
        jobs.run(row.id, _supervised(services, row.id, _take_over(services, row)))


async def _take_over(services: Services, row: JobRow) -> _Outcome | None:
    if row.cancel_requested:
        return _Outcome(ImportStatus.CANCELLED)
    if not row.validated:
        return _Outcome(ImportStatus.FAILED, FailureCode.WORKER_LOST)
    await _move(services, row)
    return None


async def _forget_finished(services: Services) -> None:
    jobs = services.imports
    async with _keeper_database(jobs, services).writing() as session:
        await db_jobs.delete_finished(session, KEEP_FINISHED_S)
