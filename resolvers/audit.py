"""The FERPA audit policy: what each operation records, and when data is withheld."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from db import audit as db_audit
from db.audit import READ, WRITE, AuditNotWritten, NewAuditEntry
from db.audit import AuditRecord as AuditRecord
from db.models import ACTOR_MAX, OPERATION_MAX, REQUEST_ID_MAX
from db.validation import to_naive_utc, utcnow
from resolvers.context import Context
from resolvers.errors import ClientError, ErrorCode
from resolvers.pagination import Page, check_first, time_id_cursor, time_id_key

log = logging.getLogger("gradepulse.audit")
UNAVAILABLE_MESSAGE = (
    "The audit log could not be written, so no student data was returned."
)
WRITE_UNAVAILABLE_MESSAGE = (
    "The audit log could not be written, so the grades were not written."
)


class AuditUnavailable(ClientError):
    """The audit record could not be committed: the student data is withheld."""

    code = ErrorCode.DB_UNAVAILABLE

    def __init__(self, message: str = UNAVAILABLE_MESSAGE) -> None:
        super().__init__(message)


def note(ctx: Context, student_id: str) -> None:
    """The response returns this student's grades or analytics: noted in
    `ctx.operation`, which server/audit.py's extension sets and records (group
    commit, db/audit.py) before the response goes out. Outside a GraphQL operation
    nothing is returned to anyone, so there is nothing to record."""
    if ctx.operation is not None:
        ctx.operation.students.add(student_id)


def note_many(ctx: Context, student_ids: Iterable[str]) -> None:
    if ctx.operation is not None:
        ctx.operation.students.update(student_ids)


def operation_name(ctx: Context, default: str) -> str:
    """The running operation's name for the record (`default` outside one)."""
    return ctx.operation.name if ctx.operation is not None else default


def entry(
    ctx: Context, student_ids: Iterable[str], operation: str, action: str
) -> NewAuditEntry:
    viewer = ctx.viewer
    request_id = ctx.request_id[:REQUEST_ID_MAX] if ctx.request_id else None
    return NewAuditEntry(
        at=utcnow(),
        actor=viewer.identity[:ACTOR_MAX],
        role=viewer.role,
        operation=operation[:OPERATION_MAX],
        action=action,
        request_id=request_id,
        student_ids=tuple(sorted(set(student_ids))),
    )


async def record_read(ctx: Context, student_ids: Iterable[str], operation: str) -> None:
    """Commit a read record (group commit); raises AuditUnavailable when it cannot."""
    audit_log = ctx.services.audit
    if audit_log is None:  # fail closed: a context without the log returns nothing
        raise AuditUnavailable
    try:
        await audit_log.record(entry(ctx, student_ids, operation, READ))
    except AuditNotWritten as exc:
        raise AuditUnavailable from exc


async def record_write(
    session: AsyncSession, ctx: Context, student_ids: Iterable[str], default: str
) -> None:
    """A write record inside the write's transaction: it commits with the data, or
    neither commits. `default` names the operation outside a GraphQL operation."""
    ids = set(student_ids)
    if not ids:
        return
    if ctx.operation is not None:
        ctx.operation.written.update(ids)
    name = operation_name(ctx, default)
    try:
        await db_audit.insert_entries(session, [entry(ctx, ids, name, WRITE)])
    except Exception as exc:
        # The exception rolls the whole write back.
        log.warning("write refused, audit record failed: %s", type(exc).__name__)
        raise AuditUnavailable(WRITE_UNAVAILABLE_MESSAGE) from exc


async def list_audit_entries(
    ctx: Context,
    *,
    student_id: str | None = None,
    actor: str | None = None,
    recorded_since: datetime | None = None,
    recorded_before: datetime | None = None,
    first: int = 20,
    after: str | None = None,
) -> Page[AuditRecord]:
    """Records newest first, for admins; reading them is not a read of student data."""
    ctx.viewer.require("admin")
    check_first(first)
    where = db_audit.AuditFilter(
        student_id=student_id,
        actor=actor,
        recorded_since=to_naive_utc(recorded_since) if recorded_since else None,
        recorded_before=to_naive_utc(recorded_before) if recorded_before else None,
    )
    key = time_id_key(after, "a")
    async with ctx.services.database.sessions() as session:
        rows, has_next = await db_audit.list_entries(
            session, first=first, where=where, after=key
        )

    async def count() -> int:
        async with ctx.services.database.sessions() as session:
            return await db_audit.count_entries(session, where)

    cursors = [time_id_cursor("a", r.at, r.id) for r in rows]
    return Page(rows, cursors, has_next, count, has_previous=after is not None)
