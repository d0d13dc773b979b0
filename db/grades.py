"""Grade SQL: batch reads per student, keyset-paginated listing, writes and batches."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from db import models
from db.errors import NotFound
from db.reader import Reader, in_values
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
    reader: Reader, keys: Sequence[tuple[str, str | None]]
) -> list[list[GradeRecord]]:
    """Grades per (student_id, subject or None for all), oldest first; one statement."""
    student_ids = sorted({student_id for student_id, _ in keys})
    subjects = {subject for _, subject in keys}
    every_subject = None in subjects

    def build(dialect: str) -> Select[Any]:
        query = (
            select(*_COLUMNS)
            .where(in_values(G.student_id, "ids", dialect))
            .order_by(G.student_id, G.recorded_at, G.id)
        )
        if not every_subject:
            query = query.where(in_values(G.subject, "subjects", dialect))
        return query

    params: dict[str, Any] = {"ids": student_ids}
    if not every_subject:
        params["subjects"] = sorted(s for s in subjects if s is not None)
    by_student: dict[str, list[GradeRecord]] = {}
    for row in await reader.fetch(("grades.by_students", every_subject), build, params):
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
    reader: Reader,
    student_ids: Sequence[str],
    subjects: Sequence[str] | None,
    columns: Sequence[str],
) -> dict[str, list[Any]]:
    """Only `columns` (names of GRADE_COLUMNS) of the students' grades (of
    `subjects`, or all), oldest first, by student id; each row starts with the
    student id. One statement."""
    one_subject = subjects is not None and len(subjects) == 1
    shape = (tuple(columns), subjects is None, one_subject)

    def build(dialect: str) -> Select[Any]:
        query = (
            select(G.student_id, *(GRADE_COLUMNS[name] for name in columns))
            .where(in_values(G.student_id, "ids", dialect))
            .order_by(G.student_id, G.recorded_at, G.id)
        )
        if one_subject:
            query = query.where(G.subject == bindparam("subject", type_=G.subject.type))
        elif subjects is not None:
            query = query.where(in_values(G.subject, "subjects", dialect))
        return query

    params: dict[str, Any] = {"ids": list(dict.fromkeys(student_ids))}
    if one_subject:
        assert subjects is not None
        params["subject"] = subjects[0]
    elif subjects is not None:
        params["subjects"] = list(subjects)
    by_student: dict[str, list[Any]] = {}
    for row in await reader.fetch(("grades.columns", shape), build, params):
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


async def read_grades_by_ids(
    reader: Reader, ids: Sequence[int]
) -> list[GradeRecord | None]:
    """Grades by id (None for an unknown one), in the order asked, on the reader."""

    def build(dialect: str) -> Select[Any]:
        return select(*_COLUMNS).where(in_values(G.id, "ids", dialect))

    rows = await reader.fetch("grades.by_ids", build, {"ids": list(ids)})
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

    def shape(self) -> tuple[bool, ...]:
        """Which conditions apply: with the parameters, what a statement needs."""
        return tuple(
            value is not None
            for value in (
                self.student_id,
                self.grade_levels,
                self.student_ids,
                self.subject,
                self.recorded_since,
                self.recorded_before,
            )
        )

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "student_id": self.student_id,
            "grade_levels": sorted(self.grade_levels)
            if self.grade_levels is not None
            else None,
            "student_ids": sorted(self.student_ids)
            if self.student_ids is not None
            else None,
            "subject": self.subject,
            "recorded_since": self.recorded_since,
            "recorded_before": self.recorded_before,
        }
        return {name: value for name, value in params.items() if value is not None}


def _conditions(shape: tuple[bool, ...], dialect: str) -> list[ColumnElement[bool]]:
    """GradeFilter's conditions of this shape, as bound parameters."""
    student_id, levels, ids, subject, since, before = shape
    clauses: list[ColumnElement[bool]] = []
    if student_id:
        clauses.append(G.student_id == bindparam("student_id", type_=G.student_id.type))
    if levels:
        readable = select(S.student_id).where(
            in_values(S.grade_level, "grade_levels", dialect)
        )
        clauses.append(G.student_id.in_(readable.scalar_subquery()))
    if ids:
        clauses.append(in_values(G.student_id, "student_ids", dialect))
    if subject:
        clauses.append(G.subject == bindparam("subject", type_=G.subject.type))
    if since:
        clauses.append(
            G.recorded_at >= bindparam("recorded_since", type_=G.recorded_at.type)
        )
    if before:
        clauses.append(
            G.recorded_at < bindparam("recorded_before", type_=G.recorded_at.type)
        )
    return clauses


async def list_grades(
    reader: Reader,
    *,
    first: int,
    where: GradeFilter,
    after: tuple[datetime, int] | None = None,
) -> tuple[list[GradeRecord], bool]:
    """One page of grades, oldest first; `after` is (recorded_at, id) of the last."""
    shape = where.shape()

    def build(dialect: str) -> Select[Any]:
        clauses = _conditions(shape, dialect)
        if after is not None:
            # A row value, not `a > x OR (a = x AND id > y)`: both SQLite and
            # PostgreSQL seek the recorded_at index to the cursor with it, where the
            # OR form scanned the index from the start (a deep page cost as much as
            # all the pages before it: 63 ms on SQLite, 218 ms on PostgreSQL, mid-way
            # through a million grades, against 0.03 ms).
            cursor = tuple_(
                bindparam("after_at", type_=G.recorded_at.type),
                bindparam("after_id", type_=G.id.type),
            )
            clauses.append(tuple_(G.recorded_at, G.id) > cursor)
        return (
            select(*_COLUMNS)
            .where(*clauses)
            .order_by(G.recorded_at, G.id)
            .limit(bindparam("limit", type_=Integer()))
        )

    params = where.params()
    params["limit"] = first + 1
    if after is not None:
        params["after_at"], params["after_id"] = after
    key = ("grades.page", shape, after is not None)
    rows = [to_record(row) for row in await reader.fetch(key, build, params)]
    return rows[:first], len(rows) > first


async def count_grades(reader: Reader, where: GradeFilter) -> int:
    shape = where.shape()

    def build(dialect: str) -> Select[Any]:
        return (
            select(func.count())
            .select_from(models.Grade)
            .where(*_conditions(shape, dialect))
        )

    rows = await reader.fetch(("grades.count", shape), build, where.params())
    return int(rows[0][0])


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
