"""SQLModel tables: students, grades, idempotency keys, import jobs and their staged
rows, API keys, the audit log, the cost meter (open period, closed periods,
operations) and the schema's field usage by hour."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlmodel import Field, SQLModel

NAME_MAX = 200
SUBJECT_MAX = 64
STUDENT_ID_MAX = 64
EMAIL_MAX = 254
ACTOR_MAX = 200
OPERATION_MAX = 200
REQUEST_ID_MAX = 128
WORKER_ID_MAX = 200
# The tables create_all made before migrations existed (revision 0001): a database
# holding exactly these and no history is stamped at that revision (db.migrations).
BASELINE_TABLES = frozenset(
    {
        "students",
        "grades",
        "idempotency_keys",
        "grade_import_rows",
        "api_keys",
        "audit_log",
        "audit_students",
    }
)


def _zero() -> Column[float]:
    return Column(Float(), nullable=False, server_default="0")


class Student(SQLModel, table=True):
    __tablename__ = "students"
    # Each order of the students connection, its tie-breaking student_id included:
    # a keyset page is read in index order from its cursor, never sorted (revision
    # 0007; db/plans.py shows the plans).
    __table_args__ = (
        Index("ix_students_grade_level", "grade_level", "student_id"),
        Index("ix_students_name", "name", "student_id"),
        Index("ix_students_created_at", "created_at", "student_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    student_id: str = Field(
        sa_column=Column(String(STUDENT_ID_MAX), unique=True, nullable=False)
    )
    name: str = Field(sa_column=Column(String(NAME_MAX), nullable=False))
    email: str = Field(sa_column=Column(String(EMAIL_MAX), unique=True, nullable=False))
    grade_level: int = Field(nullable=False)
    created_at: datetime = Field(sa_column=Column(DateTime(), nullable=False))
    # The student's grade events in commit order: a write that publishes them takes
    # the next number under the row's lock (db.students.lock_for_write), and keeps
    # when it wrote (seconds since the epoch) and when the write before it did, so
    # that a receiver knows whether an earlier event may still be on its way.
    event_seq: int = Field(
        default=0, sa_column=Column(BigInteger(), nullable=False, server_default="0")
    )
    event_at: float | None = Field(default=None, nullable=True)
    event_prev_at: float | None = Field(default=None, nullable=True)
    # The sums of the student's grades (percentages p, days x since 2020-01-01), kept
    # exact by every write (db.summaries): average and trend without reading grades.
    grade_count: int = Field(
        default=0, sa_column=Column(Integer(), nullable=False, server_default="0")
    )
    sum_p: float = Field(default=0.0, sa_column=_zero())
    sum_x: float = Field(default=0.0, sa_column=_zero())
    sum_xx: float = Field(default=0.0, sa_column=_zero())
    sum_xp: float = Field(default=0.0, sa_column=_zero())


class Grade(SQLModel, table=True):
    __tablename__ = "grades"
    __table_args__ = (
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


class StudentSubjectStats(SQLModel, table=True):
    """One student's grades in one subject, summed (db.summaries keeps it exact):
    the student's analytics, and the class figures that name students, without
    reading grades. The latest grade is the one with the greatest (recorded_at, id)."""

    __tablename__ = "student_subject_stats"
    __table_args__ = (
        Index("ix_student_subject_stats_latest", "subject", "latest_at", "latest_id"),
    )

    student_id: str = Field(
        sa_column=Column(
            String(STUDENT_ID_MAX),
            ForeignKey("students.student_id", onupdate="CASCADE", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    subject: str = Field(sa_column=Column(String(SUBJECT_MAX), primary_key=True))
    n: int = Field(nullable=False)
    sum_p: float = Field(nullable=False)
    sum_x: float = Field(nullable=False)
    sum_xx: float = Field(nullable=False)
    sum_xp: float = Field(nullable=False)
    min_p: float = Field(nullable=False)
    max_p: float = Field(nullable=False)
    latest_p: float = Field(nullable=False)
    latest_at: datetime = Field(sa_column=Column(DateTime(), nullable=False))
    latest_id: int = Field(nullable=False)


class GradeValueCount(SQLModel, table=True):
    """How many grades of one grade level and subject have percentage `p`: the class
    figures (mean, spread, median, letters, histogram) from a few thousand rows
    instead of every grade. Kept exact by every write (db.summaries); a count may
    fall to 0 and stay."""

    __tablename__ = "grade_value_counts"

    grade_level: int = Field(primary_key=True)
    subject: str = Field(sa_column=Column(String(SUBJECT_MAX), primary_key=True))
    p: float = Field(sa_column=Column(Float(), primary_key=True))
    n: int = Field(nullable=False)


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


class ImportJob(SQLModel, table=True):
    """A background grade import: its state, its owner (whose rights it writes with),
    and the lease of the worker running it. A lease that has run out (on the
    database's clock) lets another worker claim the job."""

    __tablename__ = "import_jobs"
    __table_args__ = (
        Index("ix_import_jobs_status_lease_until", "status", "lease_until"),
        Index("ix_import_jobs_finished_at", "finished_at"),
    )

    id: str = Field(sa_column=Column(String(64), primary_key=True))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    total: int = Field(default=0, nullable=False)
    processed: int = Field(default=0, nullable=False)
    # Every row problem of a FAILED job, as JSON; NULL when there are none.
    errors: str | None = Field(sa_column=Column(Text(), nullable=True))
    failure_code: str | None = Field(sa_column=Column(String(32), nullable=True))
    cancel_requested: bool = Field(
        sa_column=Column(Boolean(), nullable=False, default=False)
    )
    # Every row staged and checked: moving them into grades is all that remains.
    validated: bool = Field(sa_column=Column(Boolean(), nullable=False, default=False))
    # Who started it, as the audit log names them, and what they may write:
    # `owner_levels` is the comma-separated grade levels, NULL for every level.
    owner: str = Field(sa_column=Column(String(ACTOR_MAX), nullable=False))
    owner_role: str = Field(sa_column=Column(String(16), nullable=False))
    owner_levels: str | None = Field(sa_column=Column(String(64), nullable=True))
    operation: str = Field(sa_column=Column(String(OPERATION_MAX), nullable=False))
    request_id: str | None = Field(
        sa_column=Column(String(REQUEST_ID_MAX), nullable=True)
    )
    worker_id: str | None = Field(
        sa_column=Column(String(WORKER_ID_MAX), nullable=True)
    )
    lease_until: datetime | None = Field(sa_column=Column(DateTime(), nullable=True))
    created_at: datetime = Field(sa_column=Column(DateTime(), nullable=False))
    finished_at: datetime | None = Field(sa_column=Column(DateTime(), nullable=True))


class ApiKey(SQLModel, table=True):
    """An API key, stored as the SHA-256 of the whole key; `prefix` (the 8 characters
    after gp_) is not secret and names the key in listings."""

    __tablename__ = "api_keys"

    id: int | None = Field(default=None, primary_key=True)
    key_hash: str = Field(sa_column=Column(String(64), unique=True, nullable=False))
    prefix: str = Field(sa_column=Column(String(16), nullable=False, index=True))
    name: str = Field(sa_column=Column(String(NAME_MAX), nullable=False))
    role: str = Field(sa_column=Column(String(16), nullable=False))
    # Comma-separated levels ("9,10"); NULL lets a teacher reach every level.
    grade_levels: str | None = Field(sa_column=Column(String(64), nullable=True))
    # A student's key dies with the student: a later student given the same id
    # must not inherit it.
    student_id: str | None = Field(
        sa_column=Column(
            String(STUDENT_ID_MAX),
            ForeignKey("students.student_id", onupdate="CASCADE", ondelete="CASCADE"),
            nullable=True,
        )
    )
    created_at: datetime = Field(sa_column=Column(DateTime(), nullable=False))
    expires_at: datetime | None = Field(sa_column=Column(DateTime(), nullable=True))
    revoked_at: datetime | None = Field(sa_column=Column(DateTime(), nullable=True))


class AuditEntry(SQLModel, table=True):
    """A FERPA audit record: one response (or subscription event) that returned
    students' grades or analytics, or one write of their grades. No foreign key to
    students: the record outlives the student."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_at", "at", "id"),
        Index("ix_audit_log_actor", "actor", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_column=Column(DateTime(), nullable=False))
    actor: str = Field(sa_column=Column(String(ACTOR_MAX), nullable=False))
    role: str = Field(sa_column=Column(String(16), nullable=False))
    operation: str = Field(sa_column=Column(String(OPERATION_MAX), nullable=False))
    action: str = Field(sa_column=Column(String(8), nullable=False))
    request_id: str | None = Field(
        sa_column=Column(String(REQUEST_ID_MAX), nullable=True)
    )
    # The record itself: a JSON array of the student ids, sorted and unique.
    student_ids: str = Field(nullable=False)


class AuditStudent(SQLModel, table=True):
    """audit_log rows by student, so that auditLog(studentId:) is an index lookup
    rather than a scan of every record's JSON text."""

    __tablename__ = "audit_students"
    __table_args__ = (Index("ix_audit_students_student_id", "student_id", "audit_id"),)

    audit_id: int = Field(
        sa_column=Column(
            ForeignKey("audit_log.id", ondelete="CASCADE"), primary_key=True
        )
    )
    student_id: str = Field(sa_column=Column(String(STUDENT_ID_MAX), primary_key=True))


# The cost meter of a cluster. Money is kept exactly, as whole picodollars (10^-12
# dollars: the configured rates have at most 12 decimals), so that atomic SQL
# increments add up on every database.
ENVIRONMENT_MAX = 32


def _count() -> Any:
    return Field(default=0, sa_column=Column(BigInteger, nullable=False))


class CostMeter(SQLModel, table=True):
    """One row per environment: the open cost period and the running totals, which
    every worker adds its counts to; locking it serialises closing periods."""

    __tablename__ = "cost_meters"

    environment: str = Field(
        sa_column=Column(String(ENVIRONMENT_MAX), primary_key=True)
    )
    period_start: datetime = Field(sa_column=Column(DateTime(), nullable=False))
    db_queries: int = _count()
    api_requests: int = _count()
    db_cost: int = _count()
    api_cost: int = _count()
    total_db_queries: int = _count()
    total_api_requests: int = _count()
    total_db_cost: int = _count()
    total_api_cost: int = _count()


class CostPeriod(SQLModel, table=True):
    """A closed period: one costs.csv row. `written_at` is set once the row is in
    costs.csv, so that a row is written once whichever worker writes it."""

    __tablename__ = "cost_periods"
    __table_args__ = (Index("ix_cost_periods_environment", "environment", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    environment: str = Field(sa_column=Column(String(ENVIRONMENT_MAX), nullable=False))
    period_start: datetime = Field(sa_column=Column(DateTime(), nullable=False))
    period_end: datetime = Field(sa_column=Column(DateTime(), nullable=False))
    db_queries: int = _count()
    api_requests: int = _count()
    db_cost: int = _count()
    api_cost: int = _count()
    written_at: datetime | None = Field(sa_column=Column(DateTime(), nullable=True))


class CostOperation(SQLModel, table=True):
    """What one operation name has cost the cluster so far (topOperations)."""

    __tablename__ = "cost_operations"

    environment: str = Field(
        sa_column=Column(String(ENVIRONMENT_MAX), primary_key=True)
    )
    operation: str = Field(sa_column=Column(String(OPERATION_MAX), primary_key=True))
    count: int = _count()
    db_cost: int = _count()
    api_cost: int = _count()


TYPE_NAME_MAX = 128
FIELD_NAME_MAX = 200


class FieldUsage(SQLModel, table=True):
    """How many operations selected one field of the schema in one UTC hour, and
    when the last of them ran: each worker adds its counts (an upsert that adds),
    so that fieldUsage(since:) reads the cluster's usage over time and restarts."""

    __tablename__ = "field_usage"
    __table_args__ = (Index("ix_field_usage_hour", "hour"),)

    type_name: str = Field(sa_column=Column(String(TYPE_NAME_MAX), primary_key=True))
    # A field's name, or "field(argument:)" for a deprecated argument given.
    field_name: str = Field(sa_column=Column(String(FIELD_NAME_MAX), primary_key=True))
    hour: datetime = Field(sa_column=Column(DateTime(), primary_key=True))
    count: int = _count()
    last_used_at: datetime = Field(sa_column=Column(DateTime(), nullable=False))
