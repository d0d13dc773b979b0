"""The FERPA audit log's storage: inserts, listing and the group-commit writer."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from db import models
from db.engine import Database, create_database

A = models.AuditEntry.__table__.c
S = models.AuditStudent.__table__.c
_COLUMNS = (
    A.id,
    A.at,
    A.actor,
    A.role,
    A.operation,
    A.action,
    A.request_id,
    A.student_ids,
)
READ = "read"
WRITE = "write"
# Entries per transaction: a burst beyond this is written in several commits.
MAX_BATCH = 500
STOP_TIMEOUT_S = 5.0
log = logging.getLogger("gradepulse.audit")


class AuditNotWritten(Exception):
    """The records could not be committed, or the log is not running."""


@dataclass(frozen=True, slots=True)
class NewAuditEntry:
    """A record to insert; `at` is naive UTC like every stored time."""

    at: datetime
    actor: str
    role: str
    operation: str
    action: str
    request_id: str | None
    student_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    role: str
    operation: str
    action: str
    request_id: str | None
    student_ids: list[str]


def _values(entry: NewAuditEntry) -> dict[str, Any]:
    return {
        "at": entry.at,
        "actor": entry.actor,
        "role": entry.role,
        "operation": entry.operation,
        "action": entry.action,
        "request_id": entry.request_id,
        "student_ids": json.dumps(entry.student_ids, separators=(",", ":")),
    }


async def insert_entries(
    session: AsyncSession, entries: Sequence[NewAuditEntry]
) -> None:
    """Insert the records and their student index: two statements however many
    records (one multi-row INSERT ... RETURNING, one executemany)."""
    if not entries:
        return
    rows = [_values(entry) for entry in entries]
    ids_of = {
        row["student_ids"]: entry.student_ids
        for row, entry in zip(rows, entries, strict=True)
    }
    # Each id comes back with its own student ids: no reliance on the order of
    # RETURNING rows (asking SQLAlchemy to sort them costs one INSERT per row here).
    result = await session.execute(
        insert(models.AuditEntry.__table__).returning(A.id, A.student_ids), rows
    )
    links = [
        {"audit_id": audit_id, "student_id": student_id}
        for audit_id, student_ids in result
        for student_id in ids_of[student_ids]
    ]
    if links:
        await session.execute(insert(models.AuditStudent.__table__), links)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    student_id: str | None = None
    actor: str | None = None
    recorded_since: datetime | None = None
    recorded_before: datetime | None = None

    def clauses(self) -> list[Any]:
        clauses: list[Any] = []
        if self.student_id is not None:
            clauses.append(
                A.id.in_(select(S.audit_id).where(S.student_id == self.student_id))
            )
        if self.actor is not None:
            clauses.append(A.actor == self.actor)
        if self.recorded_since is not None:
            clauses.append(A.at >= self.recorded_since)
        if self.recorded_before is not None:
            clauses.append(A.at < self.recorded_before)
        return clauses


def _record(row: Sequence[Any]) -> AuditRecord:
    return AuditRecord(*row[:7], student_ids=json.loads(row[7]))


async def list_entries(
    session: AsyncSession,
    *,
    first: int,
    where: AuditFilter,
    after: tuple[datetime, int] | None = None,
) -> tuple[list[AuditRecord], bool]:
    """One page of records, newest first; `after` is (at, id) of the last one seen."""
    clauses = where.clauses()
    if after is not None:
        at, audit_id = after
        clauses.append(or_(A.at < at, and_(A.at == at, A.id < audit_id)))
    query = (
        select(*_COLUMNS)
        .where(*clauses)
        .order_by(A.at.desc(), A.id.desc())
        .limit(first + 1)
    )
    rows = [_record(row) for row in await session.execute(query)]
    return rows[:first], len(rows) > first


async def count_entries(session: AsyncSession, where: AuditFilter) -> int:
    query = select(func.count()).select_from(models.AuditEntry).where(*where.clauses())
    return int((await session.execute(query)).scalar_one())


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
        (monitoring's statement tally) leaks into it."""
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
        self._fail(self._pending, AuditNotWritten())
        self._pending = []
        if self._owns_database:
            await self.database.dispose()

    async def record(self, new: NewAuditEntry) -> None:
        """Queue the entry and return once the transaction holding it committed;
        raises AuditNotWritten when it could not be written."""
        if not self.running:
            raise AuditNotWritten
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
                await insert_entries(session, [new for new, _ in batch])
        except Exception as exc:
            self.failures += 1
            # The type only: driver messages can quote the values of the statement.
            log.warning("audit records not written: %s", type(exc).__name__)
            failure = AuditNotWritten()
            failure.__cause__ = exc
            self._fail(batch, failure)
            return
        self.flushes += 1
        for _, future in batch:
            if not future.done():  # a waiter that was cancelled has gone
                future.set_result(None)

    @staticmethod
    def _fail(
        batch: list[tuple[NewAuditEntry, asyncio.Future[None]]], error: AuditNotWritten
    ) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(error)
