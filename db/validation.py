"""Validation of student and grade input: shared by mutations, batches and CSV import."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from db.models import EMAIL_MAX, NAME_MAX, STUDENT_ID_MAX, SUBJECT_MAX

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class InputErrorCode(Enum):
    REQUIRED = "REQUIRED"
    TOO_LONG = "TOO_LONG"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    NOT_FINITE = "NOT_FINITE"
    INVALID_EMAIL = "INVALID_EMAIL"
    DUPLICATE = "DUPLICATE"
    NOT_FOUND = "NOT_FOUND"
    TOO_MANY_ROWS = "TOO_MANY_ROWS"
    INVALID_FORMAT = "INVALID_FORMAT"
    HAS_GRADES = "HAS_GRADES"
    FORBIDDEN = "FORBIDDEN"


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One invalid field: `field` is the camelCase input name."""

    field: str
    code: InputErrorCode
    message: str


# Rows to insert are built by the hundred thousand in an import: plain slots classes
# cost a fifth of frozen ones to build. Nothing mutates them after validation.
@dataclass(slots=True)
class NewStudent:
    student_id: str
    name: str
    email: str
    grade_level: int


@dataclass(slots=True)
class NewGrade:
    student_id: str
    subject: str
    score: float
    max_score: float
    recorded_at: datetime


def to_naive_utc(value: datetime) -> datetime:
    """Store every time as naive UTC; a naive input is taken to be UTC already."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def check_text(field: str, value: Any, limit: int) -> FieldProblem | None:
    if value is None or not str(value).strip():
        return FieldProblem(field, InputErrorCode.REQUIRED, f"{field} is required")
    if len(str(value)) > limit:
        return FieldProblem(
            field, InputErrorCode.TOO_LONG, f"{field} is longer than {limit} characters"
        )
    if "\x00" in str(value):  # PostgreSQL text cannot hold it; refuse it everywhere
        return FieldProblem(
            field, InputErrorCode.INVALID_FORMAT, f"{field} contains a NUL character"
        )
    try:
        str(value).encode()
    except UnicodeEncodeError:  # a lone surrogate: no database stores it
        return FieldProblem(
            field, InputErrorCode.INVALID_FORMAT, f"{field} is not Unicode text"
        )
    return None


def check_email(field: str, value: Any) -> FieldProblem | None:
    problem = check_text(field, value, EMAIL_MAX)
    if problem:
        return problem
    if not _EMAIL.match(str(value).strip()):
        return FieldProblem(
            field, InputErrorCode.INVALID_EMAIL, f"{value!r} is not an email address"
        )
    return None


def check_grade_level(field: str, value: Any) -> FieldProblem | None:
    if value is None:
        return FieldProblem(field, InputErrorCode.REQUIRED, f"{field} is required")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 12:
        return FieldProblem(
            field, InputErrorCode.OUT_OF_RANGE, f"{field} must be between 1 and 12"
        )
    return None


def student_problems(
    *,
    student_id: Any = ...,
    name: Any = ...,
    email: Any = ...,
    grade_level: Any = ...,
) -> list[FieldProblem]:
    """Problems with the given fields; a field left as `...` is not being set."""
    checks = (
        ("studentId", student_id, lambda f, v: check_text(f, v, STUDENT_ID_MAX)),
        ("name", name, lambda f, v: check_text(f, v, NAME_MAX)),
        ("email", email, check_email),
        ("gradeLevel", grade_level, check_grade_level),
    )
    return [p for f, v, check in checks if v is not ... and (p := check(f, v))]


def new_student(student_id: str, name: str, email: str, grade_level: int) -> NewStudent:
    return NewStudent(
        student_id=student_id.strip(),
        name=name.strip(),
        email=normalize_email(email),
        grade_level=grade_level,
    )


def normalize_email(email: str) -> str:
    return email.strip().lower()


def score_problems(score: Any, max_score: Any) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    finite_max = None
    if max_score is None:
        problems.append(
            FieldProblem("maxScore", InputErrorCode.REQUIRED, "maxScore is required")
        )
    elif not math.isfinite(max_score):
        problems.append(
            FieldProblem(
                "maxScore", InputErrorCode.NOT_FINITE, "maxScore must be finite"
            )
        )
    elif max_score <= 0:
        problems.append(
            FieldProblem(
                "maxScore", InputErrorCode.OUT_OF_RANGE, "maxScore must be above 0"
            )
        )
    else:
        finite_max = max_score
    if score is None:
        problems.append(
            FieldProblem("score", InputErrorCode.REQUIRED, "score is required")
        )
    elif not math.isfinite(score):
        problems.append(
            FieldProblem("score", InputErrorCode.NOT_FINITE, "score must be finite")
        )
    elif score < 0 or (finite_max is not None and score > finite_max):
        bound = f"{finite_max:g}" if finite_max is not None else "maxScore"
        problems.append(
            FieldProblem(
                "score",
                InputErrorCode.OUT_OF_RANGE,
                f"score must be between 0 and {bound}",
            )
        )
    return problems


def grade_problems(
    *,
    student_id: Any = ...,
    subject: Any = ...,
    score: Any = ...,
    max_score: Any = ...,
) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    if student_id is not ... and (
        p := check_text("studentId", student_id, STUDENT_ID_MAX)
    ):
        problems.append(p)
    if subject is not ... and (p := check_text("subject", subject, SUBJECT_MAX)):
        problems.append(p)
    if score is not ... or max_score is not ...:
        problems.extend(score_problems(score, max_score))
    return problems


def new_grade(
    student_id: str,
    subject: str,
    score: float,
    max_score: float = 100.0,
    recorded_at: datetime | None = None,
) -> NewGrade:
    return NewGrade(
        student_id=student_id.strip(),
        subject=subject.strip(),
        score=float(score),
        max_score=float(max_score),
        recorded_at=to_naive_utc(recorded_at) if recorded_at else utcnow(),
    )
