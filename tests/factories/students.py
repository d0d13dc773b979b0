"""Helpers of the test_students_* modules: student documents, stored rows."""

from __future__ import annotations

from typing import Any

from gql import gql
from sqlalchemy import text

STUDENT = gql(
    """
    query One($studentId: String!) {
      student(studentId: $studentId) {
        studentId name email gradeLevel createdAt
        grades { id studentId subject }
      }
    }
    """
)

STUDENTS_QUERY = """
query Page(
  $first: Int! = 20, $after: String, $gradeLevel: Int, $search: String,
  $orderBy: StudentOrderField! = STUDENT_ID, $direction: OrderDirection! = ASC
) {
  students(
    first: $first, after: $after, gradeLevel: $gradeLevel, search: $search,
    orderBy: $orderBy, direction: $direction
  ) {
    totalCount
    edges { cursor node { studentId name email gradeLevel createdAt } }
    pageInfo { hasNextPage endCursor }
  }
}
"""
STUDENTS = gql(STUDENTS_QUERY)


async def stored_student(api: Any, student_id: str) -> dict[str, Any] | None:
    async with api.services.database.sessions() as session:
        row = (
            await session.execute(
                text(
                    "SELECT student_id, name, email, grade_level FROM students "
                    "WHERE student_id = :student_id"
                ),
                {"student_id": student_id},
            )
        ).first()
        return dict(row._mapping) if row else None
