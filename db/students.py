"""Student SQL: batch reads by id, keyset-paginated listing, and writes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    bindparam,
    delete,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from db import models
from db.errors import Conflict, NotFound
from db.reader import Reader, in_values
from db.records import StudentRecord
from db.validation import NewStudent, utcnow

S = models.Student.__table__.c
G = models.Grade.__table__.c

_COLUMNS = (S.id, S.student_id, S.name, S.email, S.grade_level, S.created_at)
ORDER_COLUMNS = {
    "student_id": S.student_id,
    "name": S.name,
    "grade_level": S.grade_level,
    "created_at": S.created_at,
}


def to_record(row: Sequence[Any]) -> StudentRecord:
    return StudentRecord(*row)


@dataclass(frozen=True, slots=True)
class StudentFilter:
    """`grade_levels` and `student_ids` narrow a list to what its reader may see
    (None: no restriction; an empty set matches nobody)."""

    grade_level: int | None = None
    search: str | None = None
    grade_levels: frozenset[int] | None = None
    student_ids: frozenset[str] | None = None

    def shape(self) -> tuple[bool, ...]:
        """Which conditions apply: with the parameters, what a statement needs."""
        return (
            self.grade_level is not None,
            self.grade_levels is not None,
            self.student_ids is not None,
            bool(self.search),
        )

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.grade_level is not None:
            params["grade_level"] = self.grade_level
        if self.grade_levels is not None:
            params["grade_levels"] = sorted(self.grade_levels)
        if self.student_ids is not None:
            params["student_ids"] = sorted(self.student_ids)
        if self.search:
            params["search"] = "%" + _escape_like(self.search.lower()) + "%"
        return params


def _conditions(shape: tuple[bool, ...], dialect: str) -> list[ColumnElement[bool]]:
    """StudentFilter's conditions of this shape, as bound parameters."""
    level, levels, ids, search = shape
    clauses: list[ColumnElement[bool]] = []
    if level:
        clauses.append(S.grade_level == bindparam("grade_level"))
    if levels:
        clauses.append(in_values(S.grade_level, "grade_levels", dialect))
    if ids:
        clauses.append(in_values(S.student_id, "student_ids", dialect))
    if search:
        pattern = bindparam("search", type_=String())
        clauses.append(
            or_(
                *(
                    func.lower(column).like(pattern, escape="\\")
                    for column in (S.name, S.student_id, S.email)
                )
            )
        )
    return clauses


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def students_by_student_ids(
    session: AsyncSession, student_ids: Sequence[str]
) -> list[StudentRecord | None]:
    rows = await session.execute(select(*_COLUMNS).where(S.student_id.in_(student_ids)))
    found = {row[1]: to_record(row) for row in rows}
    return [found.get(key) for key in student_ids]


async def read_students_by_ids(
    reader: Reader, student_ids: Sequence[str]
) -> list[StudentRecord | None]:
    """Students by student id (None for an unknown one), in the order asked."""

    def build(dialect: str) -> Select[Any]:
        return select(*_COLUMNS).where(in_values(S.student_id, "ids", dialect))

    rows = await reader.fetch("students.by_ids", build, {"ids": list(student_ids)})
    found = {row[1]: to_record(row) for row in rows}
    return [found.get(key) for key in student_ids]


async def read_students_by_pks(
    reader: Reader, pks: Sequence[int]
) -> list[StudentRecord | None]:
    """Students by primary key (None for an unknown one), in the order asked: what
    a global id names (resolvers/nodes.py)."""

    def build(dialect: str) -> Select[Any]:
        return select(*_COLUMNS).where(in_values(S.id, "pks", dialect))

    rows = await reader.fetch("students.by_pks", build, {"pks": list(pks)})
    found = {row[0]: to_record(row) for row in rows}
    return [found.get(key) for key in pks]


async def list_students(
    reader: Reader,
    *,
    first: int,
    where: StudentFilter,
    order_by: str = "student_id",
    descending: bool = False,
    after: tuple[Any, str] | None = None,
) -> tuple[list[StudentRecord], bool]:
    """One page of students in keyset order; `after` is (order value, student_id)."""
    shape = where.shape()

    def build(dialect: str) -> Select[Any]:
        column = ORDER_COLUMNS[order_by]
        clauses = _conditions(shape, dialect)
        if after is not None:
            if column is S.student_id:
                cursor = bindparam("after_id", type_=S.student_id.type)
                clauses.append(
                    S.student_id < cursor if descending else S.student_id > cursor
                )
            else:
                # A row value, which SQLite and PostgreSQL can seek an index with
                # (an OR of the two comparisons they can only filter by).
                key = tuple_(column, S.student_id)
                cursor = tuple_(
                    bindparam("after_value", type_=column.type),
                    bindparam("after_id", type_=S.student_id.type),
                )
                clauses.append(key < cursor if descending else key > cursor)
        order = [column.desc() if descending else column.asc()]
        if column is not S.student_id:
            order.append(S.student_id.desc() if descending else S.student_id.asc())
        return (
            select(*_COLUMNS)
            .where(*clauses)
            .order_by(*order)
            .limit(bindparam("limit", type_=Integer()))
        )

    params = where.params()
    params["limit"] = first + 1
    if after is not None:
        params["after_value"], params["after_id"] = after
    key = ("students.page", shape, order_by, descending, after is not None)
    rows = [to_record(row) for row in await reader.fetch(key, build, params)]
    return rows[:first], len(rows) > first


async def count_students(reader: Reader, where: StudentFilter) -> int:
    shape = where.shape()

    def build(dialect: str) -> Select[Any]:
        return (
            select(func.count())
            .select_from(models.Student)
            .where(*_conditions(shape, dialect))
        )

    rows = await reader.fetch(("students.count", shape), build, where.params())
    return int(rows[0][0])


async def _taken(
    session: AsyncSession,
    student_id: str | None,
    email: str | None,
    exclude: int | None,
) -> Conflict | None:
    checks = []
    if student_id is not None:
        checks.append(("studentId", S.student_id == student_id, student_id))
    if email is not None:
        checks.append(("email", S.email == email, email))
    for field, clause, value in checks:
        query = select(S.id).where(clause)
        if exclude is not None:
            query = query.where(S.id != exclude)
        if (await session.execute(query.limit(1))).first() is not None:
            return Conflict(field, "DUPLICATE", f"{field} {value!r} is already taken")
    return None


async def insert_student(session: AsyncSession, new: NewStudent) -> StudentRecord:
    """Insert in the caller's write transaction; a taken id or email is a Conflict."""
    if conflict := await _taken(session, new.student_id, new.email, None):
        raise conflict
    values = {
        "student_id": new.student_id,
        "name": new.name,
        "email": new.email,
        "grade_level": new.grade_level,
        "created_at": utcnow(),
    }
    try:
        result = await session.execute(
            models.Student.__table__.insert().values(**values).returning(*_COLUMNS)
        )
    except IntegrityError as exc:  # a concurrent writer won the race (PostgreSQL)
        raise Conflict("studentId", "DUPLICATE", "studentId or email is taken") from exc
    return to_record(result.one())


async def update_student(
    session: AsyncSession, student_id: str, changes: dict[str, Any]
) -> tuple[StudentRecord, StudentRecord]:
    """Apply `changes` (column -> value); returns the rows before and after."""
    before = (await students_by_student_ids(session, [student_id]))[0]
    if before is None:
        raise NotFound("student", student_id)
    if not changes:
        return before, before
    conflict = await _taken(
        session, changes.get("student_id"), changes.get("email"), before.id
    )
    if conflict:
        raise conflict
    try:
        result = await session.execute(
            update(models.Student)
            .where(S.id == before.id)
            .values(**changes)
            .returning(*_COLUMNS)
        )
    except IntegrityError as exc:  # a concurrent writer won the race (PostgreSQL)
        raise Conflict("studentId", "DUPLICATE", "studentId or email is taken") from exc
    return before, to_record(result.one())


async def delete_student(
    session: AsyncSession, student_id: str, *, cascade: bool
) -> tuple[StudentRecord, int]:
    """Delete a student (and with `cascade` their grades); returns it and the count."""
    record = (await students_by_student_ids(session, [student_id]))[0]
    if record is None:
        raise NotFound("student", student_id)
    grade_count = int(
        (
            await session.execute(
                select(func.count())
                .select_from(models.Grade)
                .where(G.student_id == student_id)
            )
        ).scalar_one()
    )
    if grade_count and not cascade:
        raise Conflict(
            "studentId",
            "HAS_GRADES",
            f"student {student_id!r} has {grade_count} grade(s); "
            "pass cascade: true to delete them too",
        )
    if grade_count:
        await session.execute(delete(models.Grade).where(G.student_id == student_id))
    await session.execute(delete(models.Student).where(S.id == record.id))
    return record, grade_count


async def existing_student_levels(
    session: AsyncSession, student_ids: Sequence[str]
) -> dict[str, int]:
    """student_id -> grade_level for those of `student_ids` that exist."""
    if not student_ids:
        return {}
    rows = await session.execute(
        select(S.student_id, S.grade_level).where(S.student_id.in_(set(student_ids)))
    )
    return {row[0]: row[1] for row in rows}


@dataclass(frozen=True, slots=True)
class Locked:
    """A student that a write transaction holds until it commits."""

    grade_level: int
    # The number of this write's grade event for the student, and when the write
    # before it took one (None: never, or not sequenced).
    seq: int | None = None
    prev_at: float | None = None


async def lock_for_write(
    session: AsyncSession,
    student_ids: Iterable[str],
    *,
    sequenced: Iterable[str] = (),
    now: float = 0.0,
) -> dict[str, Locked]:
    """Lock the existing students of `student_ids` for this transaction (in id order
    on PostgreSQL, so that two batches never deadlock; SQLite's writes are already
    one at a time) and give those of `sequenced` their next grade event number,
    stamped `now` (seconds since the epoch).

    Another transaction writing one of these students waits until this one commits:
    commit order is sequence order, and what this transaction reads after the lock
    includes every earlier write of the student. One statement when every student
    or none is sequenced."""
    wanted, numbered = set(student_ids), set(sequenced)
    if not wanted:
        return {}
    locked: dict[str, Locked] = {}
    if numbered != wanted:
        rows = await session.execute(
            select(S.student_id, S.grade_level)
            .where(S.student_id.in_(wanted))
            .order_by(S.id)
            .with_for_update(key_share=True)  # FOR NO KEY UPDATE: inserts go on
        )
        locked = {row[0]: Locked(row[1]) for row in rows}
        if not numbered:
            return locked
    ordered = (
        select(S.id)
        .where(S.student_id.in_(numbered))
        .order_by(S.id)
        .with_for_update(key_share=True)
    )
    rows = await session.execute(
        update(models.Student)
        .where(S.id.in_(ordered.scalar_subquery()))
        .values(event_seq=S.event_seq + 1, event_prev_at=S.event_at, event_at=now)
        .returning(S.student_id, S.grade_level, S.event_seq, S.event_prev_at)
    )
    locked.update({row[0]: Locked(row[1], row[2], row[3]) for row in rows})
    return locked
