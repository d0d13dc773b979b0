"""Students: who may read whom, reading one or a page, creating, updating, deleting."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from db import students as db_students
from db import summaries
from db.errors import InvalidInput
from db.models import EMAIL_MAX, NAME_MAX
from db.records import StudentRecord
from db.validation import new_student, normalize_email, student_problems
from resolvers import audit
from resolvers.context import Context
from resolvers.errors import BadUserInput, Forbidden
from resolvers.loaders import invalidate_student
from resolvers.pagination import (
    Page,
    check_first,
    decode_cursor,
    encode_cursor,
    int_part,
    text_part,
    time_part,
)

ORDER_FIELDS = ("student_id", "name", "grade_level", "created_at")
# No name, id or email is longer: a longer search cannot match.
MAX_SEARCH_CHARS = max(NAME_MAX, EMAIL_MAX)


def require_readable(ctx: Context, record: StudentRecord) -> StudentRecord:
    """The record, if the viewer may read it (and its grades and analytics)."""
    if not ctx.viewer.may_read(record.student_id, record.grade_level):
        raise Forbidden(f"you may not read student {record.student_id!r}")
    return record


def _check_own(ctx: Context, student_id: str) -> None:
    """A student asking for anyone else is refused before any lookup, so that the
    answer says nothing about whether that id exists."""
    only = ctx.viewer.readable_students
    if only is not None and student_id not in only:
        raise Forbidden(f"you may not read student {student_id!r}")


async def get_student(ctx: Context, student_id: str) -> StudentRecord | None:
    """One student; None when absent; Forbidden when the viewer may not read them."""
    _check_own(ctx, student_id)
    record = await ctx.loaders.student_by_id.load(student_id)
    return require_readable(ctx, record) if record is not None else None


async def check_readable_id(ctx: Context, student_id: str) -> None:
    """Refuse a direct lookup of a student the viewer may not read; an absent
    student passes (the lookup then finds nothing). Only a teacher of some levels
    needs a query (the student's level), usually answered by the shared cache."""
    _check_own(ctx, student_id)
    if ctx.viewer.readable_levels is not None:
        await get_student(ctx, student_id)


def _order_value(record: StudentRecord, order_by: str) -> Any:
    value = getattr(record, order_by)
    return value.isoformat() if isinstance(value, datetime) else value


# How each order value is read back from a cursor (created_at as ISO 8601).
_CURSOR_READERS: dict[str, Callable[[Any], Any]] = {
    "student_id": text_part,
    "name": text_part,
    "grade_level": int_part,
    "created_at": time_part,
}


async def list_students(
    ctx: Context,
    *,
    first: int = 20,
    after: str | None = None,
    grade_level: int | None = None,
    search: str | None = None,
    order_by: str = "student_id",
    descending: bool = False,
) -> Page[StudentRecord]:
    check_first(first)
    if search is not None and len(search) > MAX_SEARCH_CHARS:
        # SQLite refuses a LIKE pattern of 50,000 bytes or more (it read as
        # DB_UNAVAILABLE), and no name, id or email is this long.
        raise BadUserInput(
            f"search must be at most {MAX_SEARCH_CHARS} characters, got {len(search)}",
            argument="search",
        )
    # The viewer's scope is part of the SQL, so that pages stay full and cursors
    # stay right for teachers and students.
    where = db_students.StudentFilter(
        grade_level=grade_level,
        search=search or None,
        grade_levels=ctx.viewer.readable_levels,
        student_ids=ctx.viewer.readable_students,
    )
    key = None
    kind = f"s:{order_by}:{'d' if descending else 'a'}"
    if after is not None:
        value, student_id = decode_cursor(
            after, kind, _CURSOR_READERS[order_by], text_part
        )
        key = (value, student_id)
    reader = ctx.services.database.reader
    rows, has_next = await db_students.list_students(
        reader,
        first=first,
        where=where,
        order_by=order_by,
        descending=descending,
        after=key,
    )
    for row in rows:
        ctx.loaders.student_by_id.prime(row.student_id, row)

    async def count() -> int:
        return await db_students.count_students(reader, where)

    cursors = [
        encode_cursor(kind, _order_value(r, order_by), r.student_id) for r in rows
    ]
    return Page(rows, cursors, has_next, count, has_previous=after is not None)


def _raise_first(problems: list[Any]) -> None:
    if problems:
        raise InvalidInput(problems[0])


async def create_student(
    ctx: Context, *, student_id: str, name: str, email: str, grade_level: int
) -> StudentRecord:
    ctx.viewer.require("admin")
    _raise_first(
        student_problems(
            student_id=student_id, name=name, email=email, grade_level=grade_level
        )
    )
    new = new_student(student_id, name, email, grade_level)
    async with ctx.services.database.writing() as session:
        record = await db_students.insert_student(session, new)
    await invalidate_student(
        ctx.services.cache,
        ctx.services.invalidations,
        [record.student_id],
        [record.grade_level],
    )
    return record


async def update_student(
    ctx: Context, student_id: str, changes: dict[str, Any]
) -> StudentRecord:
    """`changes` maps the camelCase-free field names that are being set to values."""
    ctx.viewer.require("admin")
    _raise_first(student_problems(**changes))
    values = dict(changes)
    for key in ("student_id", "name"):
        if key in values:
            values[key] = values[key].strip()
    if "email" in values:
        values["email"] = normalize_email(values["email"])
    # A new level moves the student's grades in the class figures' value counts.
    moves = "grade_level" in values
    async with ctx.services.database.writing() as session:
        if moves:
            await db_students.lock_for_write(session, [student_id])
        ids = {student_id, values.get("student_id", student_id)} if moves else ()
        async with summaries.kept(session, ids):
            before, after = await db_students.update_student(
                session, student_id, values
            )
        if before.student_id != after.student_id:
            # A new studentId is written into every grade row of the student (ON
            # UPDATE CASCADE): a grade write, recorded under both ids.
            await audit.record_write(
                session,
                ctx,
                [before.student_id, after.student_id],
                "mutation:studentUpdate",
            )
    await invalidate_student(
        ctx.services.cache,
        ctx.services.invalidations,
        sorted({before.student_id, after.student_id}),
        sorted({before.grade_level, after.grade_level}),
    )
    return after


async def delete_student(
    ctx: Context, student_id: str, *, cascade: bool
) -> StudentRecord:
    ctx.viewer.require("admin")
    async with ctx.services.database.writing() as session:
        # Grades deleted with their student leave the class figures' value counts.
        await db_students.lock_for_write(session, [student_id])
        async with summaries.kept(session, [student_id] if cascade else ()):
            record, deleted_grades = await db_students.delete_student(
                session, student_id, cascade=cascade
            )
        if deleted_grades:
            # Grades deleted with their student are grade writes: recorded in the
            # same transaction, like gradeDelete's.
            await audit.record_write(
                session, ctx, [record.student_id], "mutation:studentDelete"
            )
    await invalidate_student(
        ctx.services.cache,
        ctx.services.invalidations,
        [record.student_id],
        [record.grade_level],
    )
    return record
