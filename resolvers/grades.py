"""Grades: a student's grades, paged listing, subjects, and single and batch writes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from db import grades as db_grades
from db import summaries
from db.errors import (
    IdempotencyKeyReused,
    InvalidInput,
    InvalidRows,
    NotFound,
    RowProblem,
)
from db.records import GradeRecord, StudentRecord
from db.records import percentage as percentage
from db.validation import (
    FieldProblem,
    InputErrorCode,
    grade_problems,
    new_grade,
    to_naive_utc,
)
from monitoring.usage import SchemaField
from resolvers import audit, live
from resolvers.context import Context
from resolvers.errors import Forbidden
from resolvers.loaders import invalidate_grades
from resolvers.nodes import grade_number
from resolvers.pagination import Page, check_first, time_id_cursor, time_id_key
from resolvers.students import check_readable_id, require_readable

GRADES_ADD = "gradesAdd"
# gradeUpdate's and gradeDelete's `id` as the grade's number, the form global ids
# replaced: deprecated (README: Schema policy), and counted as a deprecated use
# (graphql_deprecated_field_usage_total, fieldUsage) so that it can be retired.
NUMERIC_ID_USES = {
    "gradeUpdate": SchemaField("Mutation", "gradeUpdate(id: gradeId)", True),
    "gradeDelete": SchemaField("Mutation", "gradeDelete(id: gradeId)", True),
}


def grades_of_student(
    ctx: Context, student_id: str, subject: str | None = None
) -> Awaitable[list[GradeRecord]]:
    """The loader's future itself: no coroutine (and no task) per student."""
    audit.note(ctx, student_id)
    return ctx.loaders.grades_by_student_id.load((student_id, subject))


# What grade_rows_of_students can select, and the one definition of a percentage
# (for plans that compute it from those columns).
GRADE_ROW_COLUMNS = frozenset(db_grades.GRADE_COLUMNS)


async def grade_rows_of_students(
    ctx: Context,
    records: list[StudentRecord],
    subjects: list[str] | None,
    columns: tuple[str, ...],
) -> dict[str, list[Any]]:
    """The grades of many students at once (of `subjects`, or all), only `columns`
    of them (rows that start with the student id, by student id): what a compiled
    plan selects. The same checks and audit notes as grades_of_student, for each
    student."""
    for record in records:
        require_readable(ctx, record)
    audit.note_many(ctx, [record.student_id for record in records])
    return await db_grades.grade_columns_by_student_ids(
        ctx.services.database.reader,
        [record.student_id for record in records],
        subjects,
        columns,
    )


async def list_grades(
    ctx: Context,
    *,
    student_id: str | None = None,
    subject: str | None = None,
    recorded_since: datetime | None = None,
    recorded_before: datetime | None = None,
    first: int = 20,
    after: str | None = None,
) -> Page[GradeRecord]:
    check_first(first)
    if student_id is not None:  # someone else's grades by id: Forbidden, not empty
        await check_readable_id(ctx, student_id)
    where = db_grades.GradeFilter(
        student_id=student_id,
        subject=subject,
        recorded_since=to_naive_utc(recorded_since) if recorded_since else None,
        recorded_before=to_naive_utc(recorded_before) if recorded_before else None,
        grade_levels=ctx.viewer.readable_levels,
        student_ids=ctx.viewer.readable_students,
    )
    key = time_id_key(after, "g")
    reader = ctx.services.database.reader
    rows, has_next = await db_grades.list_grades(
        reader, first=first, where=where, after=key
    )

    async def count() -> int:
        return await db_grades.count_grades(reader, where)

    audit.note_many(ctx, {row.student_id for row in rows})
    cursors = [time_id_cursor("g", r.recorded_at, r.id) for r in rows]
    return Page(rows, cursors, has_next, count, has_previous=after is not None)


async def list_subjects(ctx: Context) -> list[str]:
    async with ctx.services.database.reads() as session:
        return await db_grades.list_subjects(session)


def _check_level(ctx: Context, student_id: str, level: int) -> None:
    if not ctx.viewer.may_write_level(level):
        raise Forbidden(f"you may not write grades of student {student_id!r}")


def _check_stored(ctx: Context, grade_id: str, level: int) -> None:
    """A stored grade the viewer may not write: refused without naming its
    student, whom the caller did not name and may not know."""
    if not ctx.viewer.may_write_level(level):
        raise Forbidden(f"you may not write grade {grade_id!r}")


async def add_grade(
    ctx: Context,
    *,
    student_id: str,
    subject: str,
    score: float,
    max_score: float = 100.0,
    recorded_at: datetime | None = None,
) -> GradeRecord:
    # Roles first: a student learns nothing (not even which ids exist) from a write.
    ctx.viewer.require("admin", "teacher")
    problems = grade_problems(
        student_id=student_id, subject=subject, score=score, max_score=max_score
    )
    if problems:
        raise InvalidInput(problems[0])
    grade = new_grade(student_id, subject, score, max_score, recorded_at)
    async with ctx.services.database.writing() as session:
        locked = await live.lock_students(ctx, session, [grade.student_id])
        levels = live.levels_of(locked)
        if grade.student_id not in levels:
            raise NotFound("student", grade.student_id)
        _check_level(ctx, grade.student_id, levels[grade.student_id])
        record = await db_grades.insert_grade(session, grade)
        await summaries.added(session, summaries.inserted([record], levels))
        await audit.record_write(session, ctx, [record.student_id], "mutation:gradeAdd")
    audit.note(ctx, record.student_id)  # the response returns the grade
    await invalidate_grades(
        ctx.services.cache,
        ctx.services.invalidations,
        {grade.student_id: levels[grade.student_id]},
    )
    live.publish_grades(ctx, [record], locked)
    return record


async def update_grade(
    ctx: Context, grade_id: str, changes: dict[str, Any]
) -> GradeRecord:
    """`changes` maps column names (student_id, subject, score, ...) to new values."""
    ctx.viewer.require("admin", "teacher")
    number = _grade_number(ctx, grade_id, "gradeUpdate")
    checked = {k: v for k, v in changes.items() if k in ("student_id", "subject")}
    if problems := grade_problems(**checked):
        raise InvalidInput(problems[0])
    values = dict(changes)
    for key in ("student_id", "subject"):
        if key in values:
            values[key] = values[key].strip()
    if values.get("recorded_at") is not None:
        values["recorded_at"] = to_naive_utc(values["recorded_at"])
    elif "recorded_at" in values:
        raise InvalidInput(
            FieldProblem(
                "recordedAt", InputErrorCode.REQUIRED, "recordedAt may not be null"
            )
        )
    async with ctx.services.database.writing() as session:
        before = (await db_grades.grades_by_ids(session, [number]))[0]
        if before is None:
            raise NotFound("grade", grade_id)
        # The owner's level before anything that reads the stored grade: a refusal
        # must not depend on values the caller may not read (e.g. probing the score
        # through "score must be between 0 and maxScore").
        ids = sorted({before.student_id, values.get("student_id", before.student_id)})
        # Only the student the grade ends with gets an event (none if unchanged).
        owner = [values.get("student_id", before.student_id)] if values else []
        locked = await live.lock_students(ctx, session, ids, with_events=owner)
        levels = live.levels_of(locked)
        _check_stored(ctx, grade_id, levels[before.student_id])
        for student_id in ids:
            if student_id not in levels:
                raise NotFound("student", student_id)
            _check_level(ctx, student_id, levels[student_id])
        score = values.get("score", before.score)
        max_score = values.get("max_score", before.max_score)
        changes_score = "score" in values or "max_score" in values
        if changes_score and (
            problems := grade_problems(score=score, max_score=max_score)
        ):
            raise InvalidInput(problems[0])
        async with summaries.kept(session, ids if values else ()):
            _, after = await db_grades.update_grade(session, number, values)
        if values:  # an empty update writes nothing: its response is a read
            await audit.record_write(session, ctx, ids, "mutation:gradeUpdate")
    audit.note(ctx, after.student_id)
    await invalidate_grades(
        ctx.services.cache,
        ctx.services.invalidations,
        {student_id: levels[student_id] for student_id in ids},
    )
    live.publish_grades(ctx, [after], locked)  # nothing for an empty update
    return after


async def delete_grade(ctx: Context, grade_id: str) -> GradeRecord:
    ctx.viewer.require("admin", "teacher")
    number = _grade_number(ctx, grade_id, "gradeDelete")
    async with ctx.services.database.writing() as session:
        before = (await db_grades.grades_by_ids(session, [number]))[0]
        if before is None:
            raise NotFound("grade", grade_id)
        locked = await live.lock_students(
            ctx, session, [before.student_id], with_events=()
        )
        levels = live.levels_of(locked)
        _check_stored(ctx, grade_id, levels[before.student_id])
        async with summaries.kept(session, [before.student_id]):
            await db_grades.delete_grade(session, number)
        await audit.record_write(
            session, ctx, [before.student_id], "mutation:gradeDelete"
        )
    audit.note(ctx, before.student_id)
    await invalidate_grades(
        ctx.services.cache,
        ctx.services.invalidations,
        {before.student_id: levels[before.student_id]},
    )
    return before


def _grade_number(ctx: Context, grade_id: str, mutation: str) -> int:
    """The grade `grade_id` names: its global id, or its number (deprecated, and
    counted as such)."""
    number = grade_number(str(grade_id))
    if number is None:  # no such grade (and never a value the driver refuses)
        raise NotFound("grade", str(grade_id))
    monitor = ctx.services.monitor
    if monitor is not None and str(grade_id).isdecimal():
        use = NUMERIC_ID_USES[mutation]
        monitor.usage.record(monitor.usage.cells([(use.type_name, use.field_name)]))
    return number


def _scoped_key(ctx: Context, key: str) -> str:
    """The stored form of a client's idempotency key: per caller identity, and
    fixed-length (the column holds 200 characters)."""
    return hashlib.sha256(f"{ctx.viewer.identity}\n{key}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class BatchResult:
    inserted: int
    replayed: bool


@dataclass(frozen=True, slots=True)
class GradeRow:
    """One row of a batch as the client sent it (recorded_at None means now)."""

    student_id: Any
    subject: Any
    score: Any
    max_score: Any = 100.0
    recorded_at: datetime | None = None

    def canonical(self) -> list[Any]:
        when = to_naive_utc(self.recorded_at).isoformat() if self.recorded_at else None
        return [self.student_id, self.subject, self.score, self.max_score, when]


async def add_grades(
    ctx: Context, rows: list[GradeRow], idempotency_key: str | None = None
) -> BatchResult:
    """All-or-nothing insert of `rows`; InvalidRows lists every bad row."""
    ctx.viewer.require("admin", "teacher")
    if len(rows) > ctx.services.limits.max_batch_size:
        raise InvalidRows(
            [
                RowProblem(
                    -1,
                    None,
                    "input",
                    InputErrorCode.TOO_MANY_ROWS,
                    f"{len(rows)} rows is more than the limit of {ctx.services.limits.max_batch_size}",
                )
            ]
        )
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 200:
        # GradesAddResult has no InvalidInputError: a bad key is a batch-level row error.
        code = InputErrorCode.TOO_LONG if idempotency_key else InputErrorCode.REQUIRED
        raise InvalidRows(
            [
                RowProblem(
                    -1,
                    None,
                    "idempotencyKey",
                    code,
                    "idempotencyKey must be 1 to 200 characters",
                )
            ]
        )
    problems = [
        RowProblem(index, None, p.field, p.code, p.message)
        for index, row in enumerate(rows)
        for p in grade_problems(
            student_id=row.student_id,
            subject=row.subject,
            score=row.score,
            max_score=row.max_score,
        )
    ]
    digest = db_grades.payload_hash(
        json.dumps(
            [row.canonical() for row in rows], default=str, separators=(",", ":")
        )
    )
    try:
        return await _insert_batch(ctx, rows, problems, idempotency_key, digest)
    except IntegrityError:
        # A concurrent request stored the same key first (PostgreSQL): replay it.
        if idempotency_key is None:
            raise
        return await _insert_batch(ctx, rows, problems, idempotency_key, digest)


async def _insert_batch(
    ctx: Context,
    rows: list[GradeRow],
    problems: list[RowProblem],
    key: str | None,
    digest: str,
) -> BatchResult:
    # Keys are the caller's own: another caller's key (and so whether its payload
    # matches a guess) is never seen, let alone replayed.
    scoped = _scoped_key(ctx, key) if key is not None else None
    async with ctx.services.database.writing() as session:
        if key is not None and scoped is not None:
            stored = await db_grades.find_idempotency_key(session, GRADES_ADD, scoped)
            if stored is not None:
                if stored.payload_hash != digest:
                    raise IdempotencyKeyReused(key)
                return BatchResult(json.loads(stored.result)["inserted"], True)
        wanted = [r.student_id.strip() for r in rows if isinstance(r.student_id, str)]
        # A batch with a bad row writes nothing: its numbers roll back with it.
        locked = await live.lock_students(ctx, session, wanted)
        levels = live.levels_of(locked)
        bad_rows = {p.index for p in problems}
        for index, row in enumerate(rows):
            if index in bad_rows:
                continue
            student_id = row.student_id.strip()
            if student_id not in levels:
                problems.append(
                    RowProblem(
                        index,
                        None,
                        "studentId",
                        InputErrorCode.NOT_FOUND,
                        f"student {student_id!r} does not exist",
                    )
                )
            elif not ctx.viewer.may_write_level(levels[student_id]):
                raise Forbidden(f"you may not write grades of student {student_id!r}")
        if problems:
            raise InvalidRows(sorted(problems, key=lambda p: p.index))
        grades = [
            new_grade(r.student_id, r.subject, r.score, r.max_score, r.recorded_at)
            for r in rows
        ]
        records: list[GradeRecord] = []
        if any(row.seq is not None for row in locked.values()):
            records = await db_grades.insert_grades_returning(session, grades)
            inserted = len(records)
        else:
            inserted = await db_grades.insert_grades(session, grades)
        await summaries.added(
            session, summaries.inserted(records if records else grades, levels)
        )
        await audit.record_write(
            session, ctx, {g.student_id for g in grades}, "mutation:gradesAdd"
        )
        if scoped is not None:
            await db_grades.store_idempotency_key(
                session, GRADES_ADD, scoped, digest, json.dumps({"inserted": inserted})
            )
    await invalidate_grades(
        ctx.services.cache,
        ctx.services.invalidations,
        {g.student_id: levels[g.student_id] for g in grades},
    )
    live.publish_grades(ctx, records, locked)
    return BatchResult(inserted, False)
