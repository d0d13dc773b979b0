"""The FERPA audit log: which students each operation returned, records committed
before the response (group commit), write records in the write's own transaction,
and the admins' listing.

Resolvers call `note(ctx, student_id)` when they return a student's grades or
analytics. The schema's audit extension opens an `OperationAudit` per operation and,
before the response goes out, awaits `record_read`: `AuditLog.record` queues the entry
and returns once the batch holding it has committed; one flusher task writes every
waiting entry in one transaction, so concurrent responses share a commit."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterable
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from db import audit as db_audit
from db.audit import READ, WRITE, NewAuditEntry
from db.audit import AuditRecord as AuditRecord
from db.engine import Database, create_database
from db.validation import to_naive_utc, utcnow
from resolvers.context import Context
from resolvers.errors import BadUserInput, ClientError, ErrorCode
from resolvers.pagination import Page, check_first, decode_cursor, encode_cursor

log = logging.getLogger("gradepulse.audit")
UNAVAILABLE_MESSAGE = (
    "The audit log could not be written, so no student data was returned."
)
WRITE_UNAVAILABLE_MESSAGE = (
    "The audit log could not be written, so the grades were not written."
)
# Entries per transaction: a burst beyond this is written in several commits.
MAX_BATCH = 500
STOP_TIMEOUT_S = 5.0
_OPERATION_MAX = 200  # the column sizes of db.models.AuditEntry
_ACTOR_MAX = 200
_REQUEST_ID_MAX = 128


class AuditUnavailable(ClientError):
    """The audit record could not be committed: the student data is withheld."""

    code = ErrorCode.DB_UNAVAILABLE

    def __init__(self, message: str = UNAVAILABLE_MESSAGE) -> None:
        super().__init__(message)


@dataclass(slots=True, eq=False)
class OperationAudit:
    """What one operation returned (`students`) and which students its writes
    already recorded in their own transactions (`written`)."""

    label: Callable[[], str]
    students: set[str] = field(default_factory=set)
    written: set[str] = field(default_factory=set)
    _name: str | None = None

    @property
    def name(self) -> str:
        if self._name is None:
            self._name = self.label()[:_OPERATION_MAX]
        return self._name

    def unrecorded(self) -> set[str]:
        """The students to record now, once: a write record already covers the
        grades a mutation returns, in the same transaction as the data."""
        students = self.students - self.written
        self.students.clear()
        return students


# The running operation's audit. A WebSocket context serves concurrent operations,
# so the set of each operation lives here (each operation runs in its own task).
_current: ContextVar[OperationAudit | None] = ContextVar(
    "gradepulse_audit", default=None
)


def begin_operation(operation: OperationAudit) -> Token[OperationAudit | None]:
    return _current.set(operation)


def end_operation(token: Token[OperationAudit | None]) -> None:
    # A subscription may be closed from another task, whose context never saw it.
    with contextlib.suppress(ValueError):
        _current.reset(token)


def note(ctx: Context, student_id: str) -> None:
    """The response returns this student's grades or analytics. Outside a GraphQL
    operation (whose AuditExtension records what it noted) nothing is returned to
    anyone, so there is nothing to record."""
    if (operation := _current.get()) is not None:
        operation.students.add(student_id)


def note_many(ctx: Context, student_ids: Iterable[str]) -> None:
    if (operation := _current.get()) is not None:
        operation.students.update(student_ids)


def current_operation(default: str) -> str:
    """The running operation's name for the record (`default` outside one)."""
    operation = _current.get()
    return operation.name if operation is not None else default


def entry(
    ctx: Context, student_ids: Iterable[str], operation: str, action: str
) -> NewAuditEntry:
    viewer = ctx.viewer
    request_id = ctx.request_id[:_REQUEST_ID_MAX] if ctx.request_id else None
    return NewAuditEntry(
        at=utcnow(),
        actor=viewer.identity[:_ACTOR_MAX],
        role=viewer.role,
        operation=operation[:_OPERATION_MAX],
        action=action,
        request_id=request_id,
        student_ids=tuple(sorted(set(student_ids))),
    )


async def record_read(ctx: Context, student_ids: Iterable[str], operation: str) -> None:
    """Commit a read record (group commit); raises AuditUnavailable when it cannot."""
    if ctx.audit is None:  # fail closed: a context without the log returns nothing
        raise AuditUnavailable
    await ctx.audit.record(entry(ctx, student_ids, operation, READ))


async def record_write(
    session: AsyncSession, ctx: Context, student_ids: Iterable[str], default: str
) -> None:
    """A write record inside the write's transaction: it commits with the data, or
    neither commits. `default` names the operation outside a GraphQL operation."""
    ids = set(student_ids)
    if not ids:
        return
    operation = _current.get()
    if operation is not None:
        operation.written.update(ids)
    name = operation.name if operation is not None else default
    try:
        await db_audit.insert_entries(session, [entry(ctx, ids, name, WRITE)])
    except Exception as exc:
        # The exception rolls the whole write back.
        log.warning("write refused, audit record failed: %s", type(exc).__name__)
        raise AuditUnavailable(WRITE_UNAVAILABLE_MESSAGE) from exc


class AuditLog:
    """Group commit of read records on a database of its own: a small engine, so that
    audit writes neither wait for request connections nor count among the statements
    of the operations they record."""

    def __init__(self, database: Database, *, owns_database: bool = False) -> None:
        self.database = database
        self._owns_database = owns_database
        self._pending: list[tuple[NewAuditEntry, asyncio.Future[None]]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.flushes = 0  # committed batches
        self.failures = 0  # batches that could not be written

    @classmethod
    def connect(cls, url: str, *, busy_timeout_ms: int = 5000) -> AuditLog:
        database = create_database(
            url, pool_size=1, max_overflow=1, busy_timeout_ms=busy_timeout_ms
        )
        return cls(database, owns_database=True)

    @property
    def running(self) -> bool:
        # A flusher that died would leave waiters hanging: refuse instead.
        task = self._task
        return task is not None and not task.done() and not self._closing

    def start(self) -> None:
        """Start the flusher (in the app's lifespan). Its task runs in an empty
        contextvars context: nothing of the operation that happens to start it
        (monitoring's statement tally, an OperationAudit) leaks into it."""
        if self._task is not None:
            return
        self._closing = False
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="audit-flusher", context=contextvars.Context()
        )

    async def stop(self) -> None:
        """Write what is queued, then stop; entries recorded later are refused."""
        task = self._task
        if task is not None:
            self._closing = True
            assert self._wake is not None
            self._wake.set()
            done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT_S)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._task = None
        self._fail(self._pending, AuditUnavailable())
        self._pending = []
        if self._owns_database:
            await self.database.dispose()

    async def record(self, new: NewAuditEntry) -> None:
        """Queue the entry and return once the transaction holding it committed;
        raises AuditUnavailable when it could not be written."""
        if not self.running:
            raise AuditUnavailable
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((new, future))
        assert self._wake is not None
        self._wake.set()
        await future

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            # Entries queued while a batch is being written form the next batch.
            while self._pending:
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                await self._flush(batch)
            if self._closing:
                return

    async def _flush(
        self, batch: list[tuple[NewAuditEntry, asyncio.Future[None]]]
    ) -> None:
        try:
            async with self.database.writing() as session:
                await db_audit.insert_entries(session, [new for new, _ in batch])
        except Exception as exc:
            self.failures += 1
            # The type only: driver messages can quote the values of the statement.
            log.warning("audit records not written: %s", type(exc).__name__)
            failure = AuditUnavailable()
            failure.__cause__ = exc
            self._fail(batch, failure)
            return
        self.flushes += 1
        for _, future in batch:
            if not future.done():  # a waiter that was cancelled has gone
                future.set_result(None)

    @staticmethod
    def _fail(
        batch: list[tuple[NewAuditEntry, asyncio.Future[None]]], error: AuditUnavailable
    ) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(error)


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
    key = None
    if after is not None:
        at, audit_id = decode_cursor(after, "a", 2)
        try:
            # A forged id must not reach the driver: it would fail on the int column.
            if type(audit_id) is not int or not 0 < audit_id < 2**31:
                raise ValueError(audit_id)
            key = (to_naive_utc(datetime.fromisoformat(at)), audit_id)
        except (TypeError, ValueError):
            raise BadUserInput("invalid cursor", argument="after") from None
    async with ctx.database.sessions() as session:
        rows, has_next = await db_audit.list_entries(
            session, first=first, where=where, after=key
        )

    async def count() -> int:
        async with ctx.database.sessions() as session:
            return await db_audit.count_entries(session, where)

    cursors = [encode_cursor("a", r.at.isoformat(), r.id) for r in rows]
    return Page(rows, cursors, has_next, count)
