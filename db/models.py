"""SQLModel tables: students, grades, idempotency keys and staged import rows."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, ForeignKey, Index, String
from sqlmodel import Field, SQLModel

NAME_MAX = 200
SUBJECT_MAX = 64
STUDENT_ID_MAX = 64
EMAIL_MAX = 254


class Student(SQLModel, table=True):
    __tablename__ = "students"

    id: int | None = Field(default=None, primary_key=True)
    student_id: str = Field(
        sa_column=Column(String(STUDENT_ID_MAX), unique=True, nullable=False)
    )
    name: str = Field(sa_column=Column(String(NAME_MAX), nullable=False))
    email: str = Field(sa_column=Column(String(EMAIL_MAX), unique=True, nullable=False))
    grade_level: int = Field(nullable=False, index=True)
    created_at: datetime = Field(sa_column=Column(DateTime(), nullable=False))


class Grade(SQLModel, table=True):
    __tablename__ = "grades"
    __table_args__ = (
        Index("ix_grades_student_id", "student_id"),
        Index("ix_grades_subject", "subject"),
        Index("ix_grades_student_id_subject", "student_id", "subject"),
        Index("ix_grades_recorded_at", "recorded_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # References the public student id, so that grade rows read without a join;
    # ON UPDATE CASCADE follows a renamed studentId.
    student_id: str = Field(
        sa_column=Column(
            String(STUDENT_ID_MAX),
            ForeignKey("students.student_id", onupdate="CASCADE"),
            nullable=False,
        )
    )
    subject: str = Field(sa_column=Column(String(SUBJECT_MAX), nullable=False))
    score: float = Field(nullable=False)
    max_score: float = Field(default=100.0, nullable=False)
    recorded_at: datetime = Field(sa_column=Column(DateTime(), nullable=False))


class IdempotencyKey(SQLModel, table=True):
    __tablename__ = "idempotency_keys"

    key: str = Field(sa_column=Column(String(200), primary_key=True))
    operation: str = Field(sa_column=Column(String(64), nullable=False))
    payload_hash: str = Field(sa_column=Column(String(64), nullable=False))
    result: str = Field(nullable=False)
    created_at: datetime = Field(sa_column=Column(DateTime(), nullable=False))


class GradeImportRow(SQLModel, table=True):
    """A validated grade row of a background import, waiting for the final move."""

    __tablename__ = "grade_import_rows"
    __table_args__ = (Index("ix_grade_import_rows_job_id", "job_id", "line"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(sa_column=Column(String(64), nullable=False))
    row_index: int = Field(nullable=False)
    line: int = Field(nullable=False)
    student_id: str = Field(sa_column=Column(String(STUDENT_ID_MAX), nullable=False))
    subject: str = Field(sa_column=Column(String(SUBJECT_MAX), nullable=False))
    score: float = Field(nullable=False)
    max_score: float = Field(nullable=False)
    recorded_at: datetime = Field(sa_column=Column(DateTime(), nullable=False))
