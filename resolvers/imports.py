"""Background CSV imports of grades: start (with an idempotency key), read, follow
and cancel jobs. Jobs live in the database, so any worker answers for any job; the
running itself is resolvers/import_runner.py."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from db import grades as db_grades
from db import jobs as db_jobs
from db.errors import IdempotencyKeyReused, InvalidInput, NotFound
from db.models import ACTOR_MAX, REQUEST_ID_MAX
from db.validation import FieldProblem, InputErrorCode
from monitoring.bus import Subscription
from resolvers import audit, live
from resolvers.context import Context, Services
from resolvers.errors import ClientError, ErrorCode, Forbidden
from resolvers.import_runner import IMPORTS, claim, publish, start_run, writable_levels
from resolvers.jobs import ImportJob
from resolvers.viewer import Viewer

GRADES_IMPORT = "gradesImport"
CANCEL_WAIT_S = 5.0
# importProgress re-reads its job at each message about it, and at least this often
# (a lost message, or a job on another worker without Redis, still progresses).
POLL_S = 1.0
BUS_BACKLOG = 64


@dataclass(frozen=True, slots=True)
class StartedImport:
    job: ImportJob
    replayed: bool  # the job an earlier request with the same key started


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
    start_run(ctx, job_id, source)
    publish(ctx.services, job_id)
    return StartedImport(ImportJob(id=job_id, owner=_owner(ctx.viewer)), False)


def _owner(viewer: Viewer) -> str:
    """The viewer as a job's owner (as long as the audit log's actor column)."""
    return viewer.identity[:ACTOR_MAX]


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
            owner=_owner(ctx.viewer),
            owner_role=ctx.viewer.role,
            owner_levels=writable_levels(ctx.viewer),
            operation=audit.operation_name(ctx, f"mutation:{GRADES_IMPORT}"),
            request_id=ctx.request_id[:REQUEST_ID_MAX] if ctx.request_id else None,
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
    if viewer.role != "admin" and job.owner != _owner(viewer):
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
        await claim(services, job_id=job_id)
    publish(services, job_id)
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
    with live.counted(ctx, live.IMPORT_PROGRESS_FIELD) as signals:
        last: ImportJob | None = None
        async for seen in _watch(ctx.services, job.id, poll_s=POLL_S):
            if seen is None:  # deleted (long finished): nothing more to say
                return
            if seen != last:
                last = seen
                yield seen
                signals.sent(live.IMPORT_PROGRESS_FIELD)


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
