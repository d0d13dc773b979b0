"""Audit log SQL: batched inserts of records with their student index, and listing."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from db import models

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
