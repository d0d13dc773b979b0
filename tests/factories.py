"""Plain factory functions for tests: inputs for mutations, rows through the API,
API keys and JWTs."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from itertools import count
from typing import Any

import jwt
from gql import gql
from sqlalchemy import insert

from db import models
from db.engine import Database, create_database, create_tables
from db.keys import insert_key, new_key

_numbers = count(1)

# 64 characters: long enough for HS512 too, which a test signs with to be refused.
TEST_JWT_SECRET = "gradepulse-test-jwt-secret-" + "x" * 37

STUDENT_CREATE = gql(
    """
    mutation Create($input: StudentCreateInput!) {
      studentCreate(input: $input) {
        __typename
        ... on StudentCreateSuccess { student { studentId name email gradeLevel } }
        ... on InvalidInputError { message field code }
        ... on ConflictError { message field code }
      }
    }
    """
)

GRADE_ADD = gql(
    """
    mutation Add($input: GradeAddInput!) {
      gradeAdd(input: $input) {
        __typename
        ... on GradeAddSuccess { grade { id studentId subject score maxScore percentage recordedAt } }
        ... on InvalidInputError { message field code }
        ... on NotFoundError { message }
      }
    }
    """
)


def student_input(**overrides: Any) -> dict[str, Any]:
    number = next(_numbers)
    values: dict[str, Any] = {
        "studentId": f"T{number:05d}",
        "name": f"Test Student {number}",
        "email": f"test.{number}@school.example",
        "gradeLevel": 7,
    }
    values.update(overrides)
    return values


def grade_input(student_id: str, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "studentId": student_id,
        "subject": "Math",
        "score": 80.0,
        "maxScore": 100.0,
        "recordedAt": "2025-10-01T09:00:00Z",
    }
    values.update(overrides)
    return values


async def create_student(api: Any, **overrides: Any) -> dict[str, Any]:
    result = await api.execute(STUDENT_CREATE, input=student_input(**overrides))
    payload: dict[str, Any] = result["studentCreate"]
    assert payload["__typename"] == "StudentCreateSuccess", payload
    return payload["student"]


async def add_grade(api: Any, student_id: str, **overrides: Any) -> dict[str, Any]:
    result = await api.execute(GRADE_ADD, input=grade_input(student_id, **overrides))
    payload: dict[str, Any] = result["gradeAdd"]
    assert payload["__typename"] == "GradeAddSuccess", payload
    return payload["grade"]


async def database_with_student(url: str, student_id: str, name: str) -> Database:
    """A database with its tables and one grade-9 student, for db-level tests."""
    database = create_database(url)
    await create_tables(database)
    async with database.writing() as session:
        await session.execute(
            insert(models.Student).values(
                student_id=student_id,
                name=name,
                email=f"{name.lower().replace(' ', '.')}@school.example",
                grade_level=9,
                created_at=datetime(2025, 8, 25, 8, 0),
            )
        )
    return database


def jwt_token(
    role: str | None = "admin",
    *,
    secret: str = TEST_JWT_SECRET,
    lifetime_s: float = 600,
    algorithm: str = "HS256",
    **claims: Any,
) -> str:
    """A JWT: sub `<role>-1`, exp `lifetime_s` from now; None claims are left out."""
    payload: dict[str, Any] = {
        "sub": f"{role}-1",
        "role": role,
        "exp": time.time() + lifetime_s,
    }
    payload.update(claims)
    present = {name: value for name, value in payload.items() if value is not None}
    return jwt.encode(present, secret, algorithm=algorithm)


def bearer_header(token: str) -> dict[str, str]:
    """The Authorization header that carries `token` (an API key or a JWT)."""
    return {"Authorization": f"Bearer {token}"}


async def add_key(
    database: Database, role: str = "admin", **fields: Any
) -> tuple[str, int]:
    """A new API key for `role` stored through insert_key: (the key, its row id)."""
    values: dict[str, Any] = {
        "name": f"{role} key",
        "created_at": datetime.now(UTC).replace(tzinfo=None),
    }
    values.update(fields)
    key = new_key()
    async with database.writing() as session:
        record = await insert_key(session, key=key, role=role, **values)
    return key, record.id
