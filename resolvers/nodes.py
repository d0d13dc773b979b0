"""Global object identification (Relay): opaque ids for students and grades, and
reading any of them back by id with the checks and audit of `student` and `grades`.

A global id is base64 of `Type:key`, the key being the row's primary key, so that
it stays the same when a student's public id changes (studentUpdate) and names one
row for good. Clients treat it as opaque."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass

from db import grades as db_grades
from db import students as db_students
from db.records import GradeRecord, StudentRecord
from resolvers import audit
from resolvers.context import Context
from resolvers.errors import BadUserInput, Forbidden
from resolvers.pagination import INT_LIMIT, MAX_FIRST
from resolvers.students import require_readable

STUDENT = "Student"
GRADE = "Grade"
TYPES = (STUDENT, GRADE)
MAX_NODES = MAX_FIRST


def global_id(type_name: str, key: int) -> str:
    return base64.b64encode(f"{type_name}:{key}".encode()).decode("ascii")


@dataclass(frozen=True, slots=True)
class GlobalId:
    type_name: str
    key: int


def parse_global_id(text: str, *, argument: str = "id") -> GlobalId:
    """The type and key a global id names; BAD_USER_INPUT on `argument` for text
    that is not one of ours (a well-formed id of a row that is gone is not an
    error: reading it finds nothing)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True).decode("utf-8")
    except (UnicodeError, binascii.Error, ValueError):
        raw = ""
    type_name, _, key = raw.partition(":")
    if type_name in TYPES and key.isascii() and key.isdecimal():
        number = int(key)
        if number > 0 and global_id(type_name, number) == text:
            return GlobalId(type_name, number)
    shown = text if len(text) <= 64 else text[:64] + "..."
    raise BadUserInput(f"{shown!r} is not a global id", argument=argument)


def grade_number(text: str) -> int | None:
    """The grade a gradeUpdate/gradeDelete `id` names: its global id, or the
    numeric gradeId (the older form, deprecated); None for neither, and for a
    number no row can hold (the driver would refuse it as a value)."""
    if text.isascii() and text.isdecimal():
        number = int(text)
    else:
        try:
            parsed = parse_global_id(text)
        except BadUserInput:
            return None
        if parsed.type_name != GRADE:
            return None
        number = parsed.key
    return number if 0 < number < INT_LIMIT else None


Node = StudentRecord | GradeRecord


async def nodes(
    ctx: Context, ids: list[str], *, argument: str = "ids"
) -> list[Node | Exception | None]:
    """What each id names, in order: the record, None when there is no such row,
    or the Forbidden error (shown as FORBIDDEN at that position, its value null)
    when the viewer may not read it. Students and grades are read in one statement
    each, whatever the number of ids."""
    if len(ids) > MAX_NODES:
        raise BadUserInput(
            f"ids may hold at most {MAX_NODES} ids, got {len(ids)}", argument=argument
        )
    parsed = [parse_global_id(text, argument=argument) for text in ids]
    reader = ctx.services.database.reader
    # A key beyond what the id columns hold names no row (and the driver would
    # refuse it as a value): looked up as absent.
    wanted = {
        name: sorted(
            {p.key for p in parsed if p.type_name == name and p.key < INT_LIMIT}
        )
        for name in TYPES
    }
    students: dict[int, StudentRecord] = {}
    grades: dict[int, GradeRecord] = {}
    if wanted[STUDENT]:
        rows = await db_students.read_students_by_pks(reader, wanted[STUDENT])
        students = {row.id: row for row in rows if row is not None}
    if wanted[GRADE]:
        found = await db_grades.read_grades_by_ids(reader, wanted[GRADE])
        grades = {row.id: row for row in found if row is not None}
    owners = await _owners(ctx, grades.values())
    results: list[Node | Exception | None] = []
    for text, item in zip(ids, parsed, strict=True):
        if item.type_name == STUDENT:
            results.append(_student(ctx, text, students.get(item.key)))
        else:
            results.append(_grade(ctx, text, grades.get(item.key), owners))
    return results


async def _owners(
    ctx: Context, grades: Iterable[GradeRecord]
) -> dict[str, StudentRecord | None]:
    """The students who own these grades (their levels decide who may read them),
    through the request's loader and the shared cache."""
    student_ids = sorted({grade.student_id for grade in grades})
    if not student_ids:
        return {}
    records = await ctx.loaders.student_by_id.load_many(student_ids)
    return dict(zip(student_ids, records, strict=True))


def _refusal(text: str) -> Forbidden:
    return Forbidden(f"you may not read the object {text!r}")


def _student(
    ctx: Context, text: str, record: StudentRecord | None
) -> StudentRecord | Exception | None:
    if record is None:
        # A student reading anything but themselves is refused whether or not it
        # exists, as `student(studentId:)` does: the answer says nothing about it.
        return _refusal(text) if ctx.viewer.readable_students is not None else None
    try:
        require_readable(ctx, record)
    except Forbidden:
        return _refusal(text)
    ctx.loaders.student_by_id.prime(record.student_id, record)
    return record


def _grade(
    ctx: Context,
    text: str,
    record: GradeRecord | None,
    owners: dict[str, StudentRecord | None],
) -> GradeRecord | Exception | None:
    if record is None:
        return _refusal(text) if ctx.viewer.readable_students is not None else None
    owner = owners.get(record.student_id)
    if owner is None or not ctx.viewer.may_read(owner.student_id, owner.grade_level):
        return _refusal(text)
    audit.note(ctx, record.student_id)  # the answer returns this student's grade
    return record
