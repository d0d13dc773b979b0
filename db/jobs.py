"""Import jobs in the database: their state, the lease of the worker running each (on
the database's clock, never a worker's), and the atomic claim of jobs whose lease
ran out. Every change a worker makes to a job it runs is guarded by its lease: a
worker that lost a job (claimed by another) changes nothing of it."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    DateTime,
    Interval,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from db import models
from db.errors import RowProblem
from db.validation import InputErrorCode

J = models.ImportJob.__table__.c
QUEUED, RUNNING = "QUEUED", "RUNNING"
UNFINISHED = (QUEUED, RUNNING)


@dataclass(frozen=True, slots=True)
class JobRow:
    """One import_jobs row, as plain values."""

    id: str
    status: str
    total: int
    processed: int
    errors: tuple[RowProblem, ...]
    failure_code: str | None
    cancel_requested: bool
    validated: bool
    owner: str
    owner_role: str
    owner_levels: frozenset[int] | None
    operation: str
    request_id: str | None
    worker_id: str | None


_COLUMNS = (
    J.id,
    J.status,
    J.total,
    J.processed,
    J.errors,
    J.failure_code,
    J.cancel_requested,
    J.validated,
    J.owner,
    J.owner_role,
    J.owner_levels,
    J.operation,
    J.request_id,
    J.worker_id,
)


def _row(row: Sequence[Any]) -> JobRow:
    values = list(row)
    values[4] = decode_errors(values[4])
    values[6] = bool(values[6])
    values[7] = bool(values[7])
    values[10] = decode_levels(values[10])
    return JobRow(*values)


def encode_levels(levels: frozenset[int] | None) -> str | None:
    return None if levels is None else ",".join(str(n) for n in sorted(levels))


def decode_levels(text: str | None) -> frozenset[int] | None:
    if text is None:
        return None
    return frozenset(int(n) for n in text.split(",") if n)


def encode_errors(problems: Sequence[RowProblem]) -> str | None:
    if not problems:
        return None
    return json.dumps(
        [[p.index, p.line, p.field, p.code.value, p.message] for p in problems],
        separators=(",", ":"),
    )


def decode_errors(text: str | None) -> tuple[RowProblem, ...]:
    if not text:
        return ()
    return tuple(
        RowProblem(index, line, field, InputErrorCode(code), message)
        for index, line, field, code, message in json.loads(text)
    )


def db_time(session: AsyncSession, seconds: float = 0.0) -> ColumnElement[datetime]:
    """The database's UTC clock plus `seconds`, as a naive UTC timestamp. On SQLite
    it is text in the form SQLAlchemy stores datetimes in (six fraction digits), so
    that comparisons with stored values hold."""
    bind = session.bind
    assert bind is not None
    if bind.dialect.name == "sqlite":
        return func.strftime(
            "%Y-%m-%d %H:%M:%f000",
            "now",
            f"{seconds:+.3f} seconds",
            type_=DateTime(),
        )
    now: ColumnElement[datetime] = func.timezone("UTC", func.now(), type_=DateTime())
    if seconds:
        return now + literal(timedelta(seconds=seconds), Interval())
    return now


def _guard(job_id: str, worker_id: str) -> ColumnElement[bool]:
    """The job is still this worker's, and unfinished."""
    return (J.id == job_id) & (J.worker_id == worker_id) & J.status.in_(UNFINISHED)


async def insert_job(
    session: AsyncSession,
    *,
    job_id: str,
    owner: str,
    owner_role: str,
    owner_levels: frozenset[int] | None,
    operation: str,
    request_id: str | None,
    worker_id: str,
    lease_s: float,
) -> None:
    """A QUEUED job, leased to the worker that will run it."""
    await session.execute(
        insert(models.ImportJob.__table__).values(
            id=job_id,
            status=QUEUED,
            total=0,
            processed=0,
            cancel_requested=False,
            validated=False,
            owner=owner,
            owner_role=owner_role,
            owner_levels=encode_levels(owner_levels),
            operation=operation,
            request_id=request_id,
            worker_id=worker_id,
            lease_until=db_time(session, lease_s),
            created_at=db_time(session),
        )
    )


async def job_by_id(session: AsyncSession, job_id: str) -> JobRow | None:
    row = (await session.execute(select(*_COLUMNS).where(J.id == job_id))).first()
    return _row(row) if row is not None else None


async def advance(
    session: AsyncSession,
    job_id: str,
    worker_id: str,
    *,
    lease_s: float,
    **values: Any,
) -> bool | None:
    """Change a job this worker runs (and renew its lease): whether its cancel was
    requested, or None when the job is no longer this worker's (nothing changed)."""
    result = await session.execute(
        update(models.ImportJob.__table__)
        .where(_guard(job_id, worker_id))
        .values(**values, lease_until=db_time(session, lease_s))
        .returning(J.cancel_requested)
    )
    row = result.first()
    return None if row is None else bool(row[0])


async def succeed(session: AsyncSession, job_id: str, worker_id: str) -> str | None:
    """Mark a job this worker runs SUCCEEDED (in the transaction that moves its rows),
    unless its cancel was requested: "ok", "cancelled", or None when the job is no
    longer this worker's. Both end with nothing changed but "ok"."""
    result = await session.execute(
        update(models.ImportJob.__table__)
        .where(_guard(job_id, worker_id), J.cancel_requested.is_(False))
        .values(
            status="SUCCEEDED",
            processed=J.total,
            worker_id=None,
            lease_until=None,
            finished_at=db_time(session),
        )
        .returning(J.id)
    )
    if result.first() is not None:
        return "ok"
    mine = await session.execute(
        select(J.cancel_requested).where(_guard(job_id, worker_id))
    )
    row = mine.first()
    return None if row is None else "cancelled"


async def finish(
    session: AsyncSession,
    job_id: str,
    worker_id: str,
    *,
    status: str,
    failure_code: str | None = None,
    errors: Sequence[RowProblem] = (),
    processed_all: bool = False,
) -> bool:
    """End a job this worker runs (FAILED or CANCELLED; the caller deletes its staged
    rows in the same transaction); False when it is no longer this worker's."""
    values: dict[str, Any] = {
        "status": status,
        "failure_code": failure_code,
        "errors": encode_errors(errors),
        "worker_id": None,
        "lease_until": None,
        "finished_at": db_time(session),
    }
    if processed_all:
        values["processed"] = J.total
    result = await session.execute(
        update(models.ImportJob.__table__)
        .where(_guard(job_id, worker_id))
        .values(**values)
        .returning(J.id)
    )
    return result.first() is not None


async def release(session: AsyncSession, job_id: str, worker_id: str) -> bool:
    """Give a job up at a clean stop, unless its cancel was requested: its lease ends
    now, so a live worker claims it at its next sweep."""
    result = await session.execute(
        update(models.ImportJob.__table__)
        .where(_guard(job_id, worker_id), J.cancel_requested.is_(False))
        .values(worker_id=None, lease_until=None)
        .returning(J.id)
    )
    return result.first() is not None


async def renew(
    session: AsyncSession, worker_id: str, job_ids: Collection[str], lease_s: float
) -> int:
    """Extend the leases of the jobs this worker is running; how many it still has."""
    if not job_ids:
        return 0
    result = await session.execute(
        update(models.ImportJob.__table__)
        .where(
            J.id.in_(sorted(job_ids)),
            J.worker_id == worker_id,
            J.status.in_(UNFINISHED),
        )
        .values(lease_until=db_time(session, lease_s))
        .returning(J.id)
    )
    return len(result.all())


def _expired(session: AsyncSession) -> ColumnElement[bool]:
    """Unfinished, and its lease ran out (or was released)."""
    return J.status.in_(UNFINISHED) & or_(
        J.lease_until.is_(None), J.lease_until < db_time(session)
    )


async def any_expired(
    session: AsyncSession, exclude: Collection[str] = (), job_id: str | None = None
) -> bool:
    """Whether claim_expired would find a job: a read, so that a sweep that finds
    nothing takes no write lock."""
    query = select(J.id).where(_expired(session))
    if job_id is not None:
        query = query.where(J.id == job_id)
    if exclude:
        query = query.where(J.id.not_in(sorted(exclude)))
    return (await session.execute(query.limit(1))).first() is not None


async def claim_expired(
    session: AsyncSession,
    worker_id: str,
    *,
    lease_s: float,
    limit: int,
    exclude: Collection[str] = (),
    job_id: str | None = None,
) -> list[JobRow]:
    """Take at most `limit` unfinished jobs whose lease ran out (or was released) for
    this worker, in one UPDATE ... RETURNING: the lease conditions are part of the
    UPDATE itself, so of two workers sweeping at once only one gets each job
    (PostgreSQL re-checks them on the locked row; SQLite runs one writer at a time)."""
    expired = _expired(session)
    candidates = select(J.id).where(expired)
    if job_id is not None:
        candidates = candidates.where(J.id == job_id)
    if exclude:
        candidates = candidates.where(J.id.not_in(sorted(exclude)))
    candidates = candidates.order_by(J.created_at).limit(limit)
    result = await session.execute(
        update(models.ImportJob.__table__)
        .where(J.id.in_(candidates.scalar_subquery()), expired)
        .values(worker_id=worker_id, lease_until=db_time(session, lease_s))
        .returning(*_COLUMNS)
    )
    return [_row(row) for row in result.all()]


async def request_cancel(session: AsyncSession, job_id: str) -> bool:
    """Ask whichever worker runs the job to stop it; False when it has finished."""
    result = await session.execute(
        update(models.ImportJob.__table__)
        .where(J.id == job_id, J.status.in_(UNFINISHED))
        .values(cancel_requested=True)
        .returning(J.id)
    )
    return result.first() is not None


async def delete_finished(session: AsyncSession, older_than_s: float) -> int:
    """Forget jobs that finished more than `older_than_s` seconds ago."""
    result = await session.execute(
        delete(models.ImportJob.__table__)
        .where(J.finished_at < db_time(session, -older_than_s))
        .returning(J.id)
    )
    return len(result.all())
