"""Helpers of the test_grades_* modules: grade documents, stored rows."""

from __future__ import annotations

import base64
from typing import Any

from gql import gql
from sqlalchemy import select

from db import models

GRADES_QUERY = """
query Grades(
  $studentId: String, $subject: String, $recordedSince: DateTime,
  $recordedBefore: DateTime, $first: Int! = 20, $after: String
) {
  grades(
    studentId: $studentId, subject: $subject, recordedSince: $recordedSince,
    recordedBefore: $recordedBefore, first: $first, after: $after
  ) {
    totalCount
    edges { cursor node { id studentId subject score maxScore percentage recordedAt } }
    pageInfo { hasNextPage endCursor }
  }
}
"""
GRADES = gql(GRADES_QUERY)

STUDENT_GRADES = gql(
    """
    query StudentGrades($studentId: String!) {
      student(studentId: $studentId) {
        all: grades { id subject recordedAt }
        math: grades(subject: "Math") { id subject recordedAt }
        none: grades(subject: "Latin") { id }
      }
    }
    """
)

GRADES_ADD_QUERY = """
mutation Batch($input: [GradeAddInput!]!, $key: String) {
  gradesAdd(input: $input, idempotencyKey: $key) {
    __typename
    ... on GradesAddSuccess { inserted replayed }
    ... on InvalidRowsError { message rows { index line field code message } }
    ... on IdempotencyKeyReusedError { message }
  }
}
"""
GRADES_ADD = gql(GRADES_ADD_QUERY)


def only_error(body: dict[str, Any]) -> dict[str, Any]:
    assert len(body["errors"]) == 1, body
    error: dict[str, Any] = body["errors"][0]
    assert error["extensions"]["requestId"], error
    return error


G = models.Grade.__table__.c
STORED_COLUMNS = (G.student_id, G.subject, G.score, G.max_score, G.recorded_at)


def global_grade_id(number: int) -> str:
    """A grade's global id, as Relay's convention writes it."""
    return base64.b64encode(f"Grade:{number}".encode()).decode()


def grade_number(grade_id: str) -> int:
    """The row a Grade's global id names (base64 of "Grade:<number>"), decoded
    here by hand so that the tests check the server's encoding."""
    kind, _, number = base64.b64decode(grade_id).decode().partition(":")
    assert kind == "Grade", grade_id
    return int(number)


async def stored_grade(api: Any, grade_id: str) -> dict[str, Any] | None:
    async with api.services.database.sessions() as session:
        query = select(*STORED_COLUMNS).where(G.id == grade_number(grade_id))
        row = (await session.execute(query)).first()
        return dict(row._mapping) if row else None
