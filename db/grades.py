"""Grade SQL: batch reads per student, keyset-paginated listing, writes and batches."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from db import models
from db.errors import NotFound
from db.records import GradeRecord, chunks
from db.validation import NewGrade, utcnow

G = models.Grade.__table__.c
S = models.Student.__table__.c
K = models.IdempotencyKey.__table__.c
_COLUMNS = (G.id, G.student_id, G.subject, G.score, G.max_score, G.recorded_at)
IDEMPOTENCY_TTL = timedelta(days=7)
INSERT_CHUNK = 10_000


def to_record(row: Sequence[Any]) -> GradeRecord:
    return GradeRecord(*row)


async def grades_by_student_ids(
    session: AsyncSession, keys: Sequence[tuple[str, str | None]]
) -> list[list[GradeRecord]]:
    """Grades per (student_id, subject or None for all), oldest first; one statement."""
    student_ids = {student_id for student_id, _ in keys}
    query = (
        select(*_COLUMNS)
        .where(G.student_id.in_(student_ids))
        .order_by(G.student_id, G.recorded_at, G.id)
    )
    subjects = {subject for _, subject in keys}
    if None not in subjects:
        query = query.where(G.subject.in_(subjects))
    by_student: dict[str, list[GradeRecord]] = {}
    for row in await session.execute(query):
        record = GradeRecord(*row)
        by_student.setdefault(record.student_id, []).append(record)
    result = []
    for student_id, subject in keys:
        grades = by_student.get(student_id, [])
        if subject is not None:
            grades = [grade for grade in grades if grade.subject == subject]
        result.append(grades)
    return result


# The columns a plan may select for grades (server/steps.py), by record attribute.
GRADE_COLUMNS = {c.name: c for c in _COLUMNS}


async def grade_columns_by_student_ids(
    session: AsyncSession,
    student_ids: Sequence[str],
    subjects: Sequence[str] | None,
    columns: Sequence[str],
) -> dict[str, list[Any]]:
    """Only `columns` (names of GRADE_COLUMNS) of the students' grades (of
    `subjects`, or all), oldest first, by student id; each row starts with the
    student id. One statement."""
    query = (
        select(G.student_id, *(GRADE_COLUMNS[name] for name in columns))
        .where(G.student_id.in_(list(dict.fromkeys(student_ids))))
        .order_by(G.student_id, G.recorded_at, G.id)
    )
    if subjects is not None:
        query = query.where(
            G.subject == subjects[0] if len(subjects) == 1 else G.subject.in_(subjects)
        )
    by_student: dict[str, list[Any]] = {}
    for row in await session.execute(query):
        rows = by_student.get(row[0])
        if rows is None:
            by_student[row[0]] = [row]
        else:
            rows.append(row)
    return by_student


async def grades_by_ids(
    session: AsyncSession, ids: Sequence[int]
) -> list[GradeRecord | None]:
    rows = await session.execute(select(*_COLUMNS).where(G.id.in_(ids)))
    found = {row[0]: to_record(row) for row in rows}
    return [found.get(key) for key in ids]


@dataclass(frozen=True, slots=True)
class GradeFilter:
    """`grade_levels` and `student_ids` narrow a list to the students its reader may
    see (None: no restriction; an empty set matches nothing)."""

    student_id: str | None = None
    subject: str | None = None
    recorded_since: datetime | None = None
    recorded_before: datetime | None = None
    grade_levels: frozenset[int] | None = None
    student_ids: frozenset[str] | None = None

    def clauses(self) -> list[Any]:
        clauses = []
        if self.student_id is not None:
            clauses.append(G.student_id == self.student_id)
        if self.grade_levels is not None:
            clauses.append(
                G.student_id.in_(
                    select(S.student_id).where(
                        S.grade_level.in_(sorted(self.grade_levels))
                    )
                )
            )
        if self.student_ids is not None:
            clauses.append(G.student_id.in_(sorted(self.student_ids)))
        if self.subject is not None:
            clauses.append(G.subject == self.subject)
        if self.recorded_since is not None:
            clauses.append(G.recorded_at >= self.recorded_since)
        if self.recorded_before is not None:
            clauses.append(G.recorded_at < self.recorded_before)
        return clauses


async def list_grades(
    session: AsyncSession,
    *,
    first: int,
    where: GradeFilter,
    after: tuple[datetime, int] | None = None,
) -> tuple[list[GradeRecord], bool]:
    """One page of grades, oldest first; `after` is (recorded_at, id) of the last."""
    clauses = where.clauses()
    if after is not None:
        # A row value, not `a > x OR (a = x AND id > y)`: both SQLite and PostgreSQL
        # seek the recorded_at index to the cursor with it, where the OR form
        # scanned the index from the start (a deep page cost as much as all the
        # pages before it: 63 ms on SQLite, 218 ms on PostgreSQL, mid-way
        # through a million grades, against 0.03 ms).
        clauses.append(tuple_(G.recorded_at, G.id) > after)
    query = (
        select(*_COLUMNS).where(*clauses).order_by(G.recorded_at, G.id).limit(first + 1)
    )
    rows = [to_record(row) for row in await session.execute(query)]
    return rows[:first], len(rows) > first


async def count_grades(session: AsyncSession, where: GradeFilter) -> int:
    query = select(func.count()).select_from(models.Grade).where(*where.clauses())
    return int((await session.execute(query)).scalar_one())


async def list_subjects(session: AsyncSession) -> list[str]:
    rows = await session.execute(select(G.subject).distinct().order_by(G.subject))
    return [row[0] for row in rows]


def grade_values(grade: NewGrade) -> dict[str, Any]:
    return {
        "student_id": grade.student_id,
        "subject": grade.subject,
        "score": grade.score,
        "max_score": grade.max_score,
        "recorded_at": grade.recorded_at,
    }


async def insert_grade(session: AsyncSession, grade: NewGrade) -> GradeRecord:
    result = await session.execute(
        insert(models.Grade).values(**grade_values(grade)).returning(*_COLUMNS)
    )
    return to_record(result.one())


async def insert_grades(session: AsyncSession, grades: Sequence[NewGrade]) -> int:
    """Insert many rows with one executemany statement per chunk."""
    table = models.Grade.__table__
    for chunk in chunks(grades, INSERT_CHUNK):
        await session.execute(insert(table), [grade_values(grade) for grade in chunk])
    return len(grades)


async def insert_grades_returning(
    session: AsyncSession, grades: Sequence[NewGrade]
) -> list[GradeRecord]:
    """Like insert_grades, but returns the stored rows (ids included), in input order;
    multi-row INSERT ... RETURNING statements cost about a third more."""
    table = models.Grade.__table__
    statement = insert(table).returning(*_COLUMNS, sort_by_parameter_order=True)
    records: list[GradeRecord] = []
    for chunk in chunks(grades, INSERT_CHUNK):
        result = await session.execute(
            statement, [grade_values(grade) for grade in chunk]
        )
        records.extend(to_record(row) for row in result)
    return records


async def update_grade(
    session: AsyncSession, grade_id: int, changes: dict[str, Any]
) -> tuple[GradeRecord, GradeRecord]:
    before = (await grades_by_ids(session, [grade_id]))[0]
    if before is None:
        raise NotFound("grade", str(grade_id))
    if not changes:
        return before, before
    result = await session.execute(
        update(models.Grade)
        .where(G.id == grade_id)
        .values(**changes)
        .returning(*_COLUMNS)
    )
    return before, to_record(result.one())


async def delete_grade(session: AsyncSession, grade_id: int) -> GradeRecord:
    before = (await grades_by_ids(session, [grade_id]))[0]
    if before is None:
        raise NotFound("grade", str(grade_id))
    await session.execute(delete(models.Grade).where(G.id == grade_id))
    return before


def payload_hash(payload: str) -> str:
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredResult:
    payload_hash: str
    result: str


async def find_idempotency_key(
    session: AsyncSession, operation: str, key: str
) -> StoredResult | None:
    row = (
        await session.execute(
            select(K.payload_hash, K.result).where(
                K.key == key,
                K.operation == operation,
                K.created_at > utcnow() - IDEMPOTENCY_TTL,
            )
        )
    ).first()
    return StoredResult(row[0], row[1]) if row else None


async def store_idempotency_key(
    session: AsyncSession, operation: str, key: str, digest: str, result: str
) -> None:
    now = utcnow()
    # Keys live for IDEMPOTENCY_TTL (at least the promised 24 h); expired ones go here.
    # A live row of this key and operation stays: a concurrent request that stored
    # it first makes this insert fail, and the caller replays that request's result.
    await session.execute(
        delete(models.IdempotencyKey).where(
            or_(
                K.created_at <= now - IDEMPOTENCY_TTL,
                and_(K.key == key, K.operation != operation),
            )
        )
    )
    await session.execute(
        insert(models.IdempotencyKey).values(
            key=key,
            operation=operation,
            payload_hash=digest,
            result=result,
            created_at=now,
        )
    )
