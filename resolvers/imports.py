"""Background CSV imports of grades: validate, stage in chunks, move in one go. Jobs
live in the database; the worker running one holds a lease on it, and a live worker
takes over (finishes or fails) the jobs of a worker that stopped."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import AsyncGenerator, Coroutine
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from db import grades as db_grades
from db import jobs as db_jobs
from db import staging
from db.csvrows import parse_grades_csv, sort_problems
from db.errors import IdempotencyKeyReused, InvalidInput, NotFound, RowProblem
from db.jobs import JobRow
from db.records import GradeRecord
from db.validation import FieldProblem, InputErrorCode
from monitoring.bus import Subscription
from resolvers import audit, live
from resolvers.context import Context, Services
from resolvers.errors import ClientError, ErrorCode, Forbidden
from resolvers.jobs import (
    CLAIM_BATCH,
    CLEANUP_EVERY,
    KEEP_FINISHED_S,
    FailureCode,
    ImportJob,
    ImportJobs,
    ImportStatus,
)
from resolvers.loaders import invalidate_grades
from resolvers.viewer import Viewer

log = logging.getLogger("gradepulse.imports")
# The bus topic of job changes: the payload is the job id (the job itself is read
# from the database, so a message may come from any worker).
IMPORTS = "imports"
GRADES_IMPORT = "gradesImport"
# Each chunk of Limits.import_chunk_size rows is its own short write transaction;
# other writers get the database between chunks. Tests raise the pause to cancel.
CHUNK_PAUSE_S = 0.0
CANCEL_WAIT_S = 5.0
# importProgress re-reads its job at each message about it, and at least this often
# (a lost message, or a job on another worker without Redis, still progresses).
POLL_S = 1.0
BUS_BACKLOG = 64


@dataclass(frozen=True, slots=True)
class StartedImport:
    job: ImportJob
    replayed: bool  # the job an earlier request with the same key started


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


# --- starting, reading, cancelling ------------------------------------------------


async def start_import(
    ctx: Context,
    *,
    file: bytes | None = None,
    csv: str | None = None,
    idempotency_key: str | None = None,
) -> StartedImport:
    """Check the arguments and start the job; it runs after this returns. Admins
    and teachers only; a teacher's rows are checked against their grade levels.
    The same idempotency key with the same content gives the first job back."""
    ctx.viewer.require("admin", "teacher")
    if (file is None) == (csv is None):
        code = (
            InputErrorCode.REQUIRED if file is None else InputErrorCode.INVALID_FORMAT
        )
        raise InvalidInput(
            FieldProblem(
                "file" if file is None else "csv",
                code,
                "give exactly one of file and csv",
            )
        )
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 200:
        code = InputErrorCode.TOO_LONG if idempotency_key else InputErrorCode.REQUIRED
        raise InvalidInput(
            FieldProblem(
                "idempotencyKey", code, "idempotencyKey must be 1 to 200 characters"
            )
        )
    source: bytes | str
    if file is not None:
        source = file
    else:
        assert csv is not None  # exactly one of them, checked above
        source = csv
    content = source if isinstance(source, bytes) else source.encode()
    digest = hashlib.sha256(content).hexdigest()
    job_id = uuid.uuid4().hex
    try:
        replayed = await _create(ctx, job_id, idempotency_key, digest)
    except IntegrityError:
        # A concurrent request stored the same key first (PostgreSQL): replay it.
        if idempotency_key is None:
            raise
        replayed = await _create(ctx, job_id, idempotency_key, digest)
    if replayed is not None:
        return StartedImport(replayed, True)
    jobs = ctx.services.imports
    jobs.run(
        job_id, _supervised(ctx.services, job_id, _stage_and_move(ctx, job_id, source))
    )
    _publish(ctx.services, job_id)
    return StartedImport(ImportJob(id=job_id, owner=ctx.viewer.identity), False)


def _scoped_key(ctx: Context, key: str) -> str:
    """The stored key: the caller's own (per identity), apart from gradesAdd's."""
    text = f"{ctx.viewer.identity}\n{GRADES_IMPORT}\n{key}"
    return hashlib.sha256(text.encode()).hexdigest()


async def _create(
    ctx: Context, job_id: str, key: str | None, digest: str
) -> ImportJob | None:
    """Store the new job (and its key) in one transaction; or the job an earlier
    request with the same key and content started."""
    services = ctx.services
    jobs = services.imports
    scoped = _scoped_key(ctx, key) if key is not None else None
    async with services.database.writing() as session:
        if key is not None and scoped is not None:
            stored = await db_grades.find_idempotency_key(
                session, GRADES_IMPORT, scoped
            )
            if stored is not None:
                if stored.payload_hash != digest:
                    raise IdempotencyKeyReused(key)
                first = await db_jobs.job_by_id(
                    session, json.loads(stored.result)["jobId"]
                )
                if first is not None:
                    return ImportJob.from_row(first)
        await db_jobs.insert_job(
            session,
            job_id=job_id,
            owner=ctx.viewer.identity,
            owner_role=ctx.viewer.role,
            owner_levels=_writable_levels(ctx.viewer),
            operation=audit.operation_name(ctx, f"mutation:{GRADES_IMPORT}"),
            request_id=ctx.request_id,
            worker_id=jobs.worker_id,
            lease_s=jobs.lease_s,
        )
        if scoped is not None:
            await db_grades.store_idempotency_key(
                session, GRADES_IMPORT, scoped, digest, json.dumps({"jobId": job_id})
            )
    return None


async def load_job(services: Services, job_id: str) -> ImportJob | None:
    """The job as the database holds it now (any worker's), for anyone."""
    async with services.database.sessions() as session:
        row = await db_jobs.job_by_id(session, job_id)
    return ImportJob.from_row(row) if row is not None else None


def _require_owner(ctx: Context, job: ImportJob) -> ImportJob:
    viewer = ctx.viewer
    if viewer.role != "admin" and job.owner != viewer.identity:
        raise Forbidden(f"import job {job.id!r} belongs to someone else")
    return job


async def get_job(ctx: Context, job_id: str) -> ImportJob | None:
    job = await load_job(ctx.services, job_id)
    return _require_owner(ctx, job) if job is not None else None


async def cancel_import(ctx: Context, job_id: str) -> ImportJob:
    """Stop a job (staged rows are deleted) and wait for it to end; a finished job
    is returned as it is. The job may run on any worker."""
    services = ctx.services
    job = await load_job(services, job_id)
    if job is None:
        raise NotFound("import job", job_id)
    _require_owner(ctx, job)
    if job.finished:
        return job
    async with services.database.writing() as session:
        await db_jobs.request_cancel(session, job_id)
    run = services.imports.runs.get(job_id)
    if run is not None:
        run.cancel_requested = True
    else:
        # Nobody holds it (its worker stopped): end it now rather than at a sweep.
        await _claim(services, job_id=job_id)
    _publish(services, job_id)
    async for seen in _watch(services, job_id, poll_s=0.05, timeout_s=CANCEL_WAIT_S):
        if seen is not None:
            job = seen
    return job


async def check_progress(ctx: Context, job_id: str) -> ImportJob:
    job = await load_job(ctx.services, job_id)
    if job is None:
        raise ClientError(
            f"import job {job_id!r} does not exist", code=ErrorCode.NOT_FOUND
        )
    return _require_owner(ctx, job)


async def import_progress(
    ctx: Context, job: ImportJob
) -> AsyncGenerator[ImportJob, None]:
    """The job now and at each change, until it has finished."""
    with live.counted(ctx):
        last: ImportJob | None = None
        async for seen in _watch(ctx.services, job.id, poll_s=POLL_S):
            if seen is None:  # deleted (long finished): nothing more to say
                return
            if seen != last:
                last = seen
                yield seen


async def _watch(
    services: Services,
    job_id: str,
    *,
    poll_s: float,
    timeout_s: float | None = None,
) -> AsyncGenerator[ImportJob | None, None]:
    """The job now and each time it may have changed (a bus message naming it, or
    every `poll_s`), until it has finished (or `timeout_s` has passed)."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    queue = (
        services.monitor.bus.subscribe(IMPORTS, BUS_BACKLOG)
        if services.monitor is not None
        else None
    )
    try:
        while True:
            job = await load_job(services, job_id)
            yield job
            if job is None or job.finished:
                return
            wait = poll_s
            if deadline is not None:
                wait = min(wait, deadline - loop.time())
                if wait <= 0:
                    return
            await _next_message(queue, job_id, wait)
    finally:
        if queue is not None:
            queue.close()


async def _next_message(queue: Subscription | None, job_id: str, wait_s: float) -> None:
    """Until a message about the job (or a dropped one, which might have been) or
    `wait_s`; the messages about other jobs are skipped."""
    if queue is None:
        await asyncio.sleep(wait_s)
        return
    try:
        async with asyncio.timeout(wait_s):
            while True:
                item = await queue.get()
                if item == job_id or queue.dropped:
                    queue.dropped = 0
                    return
    except TimeoutError:
        return


def _publish(services: Services, job_id: str) -> None:
    if services.monitor is not None:
        services.monitor.bus.publish(IMPORTS, job_id)


# --- running ----------------------------------------------------------------------


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
        _publish(services, job_id)


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


def _writable_levels(viewer: Viewer) -> frozenset[int] | None:
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
    _publish(services, job_id)


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
        _publish(services, job_id)
        await asyncio.sleep(CHUNK_PAUSE_S)
    writable = _writable_levels(ctx.viewer)
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
        levels = await staging.staged_student_levels(session, row.id)
        if writable is not None and not set(levels.values()) <= writable:
            # A student changed level since the check: refuse (this transaction,
            # SUCCEEDED included, rolls back).
            outside = await staging.staged_outside_levels(session, row.id, writable)
            raise _Refused(_forbidden_rows(outside))
        records = await staging.move_staged(
            session, row.id, returning=live.wants_grade_events(ctx)
        )
        await audit.record_write(session, ctx, levels, row.operation)
    invalidate_grades(services.cache, levels)
    live.publish_grades(ctx, records, levels)


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
                await _claim(services)
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


def _keeper_database(jobs: ImportJobs, services: Services) -> Any:
    return jobs.database if jobs.database is not None else services.database


async def _renew(services: Services) -> None:
    jobs = services.imports
    if not jobs.runs:
        return
    async with _keeper_database(jobs, services).writing() as session:
        await db_jobs.renew(session, jobs.worker_id, set(jobs.runs), jobs.lease_s)


async def _claim(services: Services, *, job_id: str | None = None) -> None:
    """Claim jobs whose lease ran out (only `job_id`, when given) and take each over:
    a cancelled one ends CANCELLED; one whose rows were all staged and checked is
    finished (the move); any other ends FAILED with WORKER_LOST, its staged rows
    deleted."""
    jobs = services.imports
    if jobs.stopping:
        return
    async with _keeper_database(jobs, services).writing() as session:
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
