"""Plain factory functions for tests: inputs for mutations and rows through the API."""

from __future__ import annotations

from datetime import datetime
from itertools import count
from typing import Any

from gql import gql
from sqlalchemy import insert

from db import models
from db.engine import Database, create_database, create_tables

_numbers = count(1)

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
