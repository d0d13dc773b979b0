"""Background CSV imports of grades: validate, stage in chunks, move in one go."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

from db import staging
from db.csvrows import parse_grades_csv, sort_problems
from db.engine import Database
from db.errors import InvalidInput, NotFound, RowProblem
from db.records import GradeRecord
from db.validation import FieldProblem, InputErrorCode
from resolvers import audit, live
from resolvers.context import Context
from resolvers.errors import ClientError, ErrorCode, Forbidden
from resolvers.jobs import ImportJob, ImportStatus
from resolvers.loaders import invalidate_grades
from resolvers.viewer import Viewer

log = logging.getLogger("gradepulse.imports")
# Each chunk of Limits.import_chunk_size rows is its own short write transaction;
# other writers get the database between chunks. Tests raise the pause to cancel.
CHUNK_PAUSE_S = 0.0
CANCEL_WAIT_S = 5.0


async def start_import(
    ctx: Context, *, file: bytes | None = None, csv: str | None = None
) -> ImportJob:
    """Check the arguments and start the job; it runs after this returns. Admins
    and teachers only; a teacher's rows are checked against their grade levels."""
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
    source: bytes | str
    if file is not None:
        source = file
    else:
        assert csv is not None  # exactly one of them, checked above
        source = csv
    job = ctx.services.imports.create()
    job.owner = ctx.viewer.identity
    job.task = asyncio.create_task(_run(ctx, job, source), name=f"import-{job.id}")
    return job


def _require_owner(ctx: Context, job: ImportJob) -> ImportJob:
    viewer = ctx.viewer
    if viewer.role != "admin" and job.owner != viewer.identity:
        raise Forbidden(f"import job {job.id!r} belongs to someone else")
    return job


def get_job(ctx: Context, job_id: str) -> ImportJob | None:
    job = ctx.services.imports.get(job_id)
    return _require_owner(ctx, job) if job is not None else None


async def cancel_import(ctx: Context, job_id: str) -> ImportJob:
    """Stop a job (staged rows are deleted) and wait for it to end; a finished job
    is returned as it is."""
    job = ctx.services.imports.get(job_id)
    if job is None:
        raise NotFound("import job", job_id)
    _require_owner(ctx, job)
    if not job.finished and job.task is not None:
        job.cancel_requested = True
        await asyncio.wait({job.task}, timeout=CANCEL_WAIT_S)
    return job


def check_progress(ctx: Context, job_id: str) -> ImportJob:
    job = ctx.services.imports.get(job_id)
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
        while True:
            changed = job.changed
            yield job
            if job.finished:
                return
            await changed.wait()


class _Cancelled(Exception):
    pass


async def _run(ctx: Context, job: ImportJob, source: bytes | str) -> None:
    database = ctx.services.database
    outcome = ImportStatus.FAILED
    try:
        try:
            outcome = await _stage_and_move(ctx, job, source)
        except (_Cancelled, asyncio.CancelledError):
            outcome = ImportStatus.CANCELLED
        except Exception as exc:
            # The type only: a driver's message can quote the rows' values.
            log.error("import %s failed: %s", job.id, type(exc).__name__)
            outcome = ImportStatus.FAILED
        finally:
            if outcome is not ImportStatus.SUCCEEDED:
                await _discard(database, job)
            # Only now: a client that sees the job end sees no staged rows left.
            job.status = outcome
    finally:
        job.task = None
        ctx.services.imports.finished(job)
        job.touch()


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


async def _discard(database: Database, job: ImportJob) -> None:
    """A failed or cancelled job leaves no rows behind."""
    try:
        async with database.writing() as session:
            await staging.delete_staged(session, job.id)
    except Exception as exc:
        log.error("import %s: staged rows not deleted: %s", job.id, type(exc).__name__)


async def _stage_and_move(
    ctx: Context, job: ImportJob, source: bytes | str
) -> ImportStatus:
    """Stage, check and move the rows; the job's outcome (set by the caller once
    a failed job's staged rows are gone)."""
    parsed = await asyncio.to_thread(parse_grades_csv, source)
    bad_rows = {p.index for p in parsed.problems if p.index is not None}
    job.total = len(parsed.rows) + len(bad_rows)
    job.status = ImportStatus.RUNNING
    job.touch()
    chunk = ctx.services.limits.import_chunk_size
    rows, lines = parsed.rows, parsed.lines
    # The data row index of each valid row: rows with problems take the gaps.
    indexes = [i for i in range(job.total) if i not in bad_rows]
    for start in range(0, len(rows), chunk):
        if job.cancel_requested:
            raise _Cancelled
        end = start + chunk
        async with ctx.services.database.writing() as session:
            await staging.stage_rows(
                session, job.id, rows[start:end], indexes[start:end], lines[start:end]
            )
        job.processed += len(rows[start:end])
        job.touch()
        await asyncio.sleep(CHUNK_PAUSE_S)
    if job.cancel_requested:
        raise _Cancelled
    writable = _writable_levels(ctx.viewer)
    async with ctx.services.database.sessions() as session:
        unknown = await staging.unknown_students(session, job.id)
        outside = (
            await staging.staged_outside_levels(session, job.id, writable)
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
    job.processed = job.total
    if problems:
        job.errors = sort_problems(problems)
        return ImportStatus.FAILED
    records: list[GradeRecord] = []
    async with ctx.services.database.writing() as session:
        levels = await staging.staged_student_levels(session, job.id)
        if writable is not None and not set(levels.values()) <= writable:
            # A student changed level since the check above: refuse, in the same
            # transaction as the move would have been.
            outside = await staging.staged_outside_levels(session, job.id, writable)
        else:
            records = await staging.move_staged(
                session, job.id, returning=live.wants_grade_events(ctx)
            )
            await audit.record_write(session, ctx, levels, "mutation:gradesImport")
    if outside:
        job.errors = sort_problems(_forbidden_rows(outside))
        return ImportStatus.FAILED
    invalidate_grades(ctx.services.cache, levels)
    live.publish_grades(ctx, records, levels)
    return ImportStatus.SUCCEEDED
