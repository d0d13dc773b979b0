"""Helpers of the test_roles_* modules: viewers, running as one, SQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text
from starlette.routing import Route

from resolvers.viewer import Viewer

TEACHER_LEVELS = frozenset({6, 10})
ADMIN = Viewer(identity="user:admin", role="admin", anonymous=False)
TEACHER = Viewer(
    identity="user:teacher",
    role="teacher",
    grade_levels=TEACHER_LEVELS,
    anonymous=False,
)
# S00017 is in grade level 8 (outside the teacher's levels) and at risk.
STUDENT = Viewer(
    identity="user:student", role="student", student_id="S00017", anonymous=False
)
VIEWERS = {"admin": ADMIN, "teacher": TEACHER, "student": STUDENT}


def forbidden(*path: str | int) -> list[tuple[tuple[str | int, ...], str]]:
    return [(path, "FORBIDDEN")]


def schema_of(api: Any) -> Any:
    """The schema the app serves /graphql with, its extensions (audit) included."""
    for route in api.app.routes:
        if isinstance(route, Route) and route.path == "/graphql":
            return route.endpoint.schema
    raise AssertionError("no /graphql route")


async def run(
    api: Any, viewer: Viewer, document: str, **variables: Any
) -> tuple[Any, list[tuple[Any, str]]]:
    """Execute in process as `viewer`: the data, and (path, code) of each error."""
    result = await schema_of(api).execute(
        document,
        variable_values=variables or None,
        context_value=api.services.context(viewer=viewer),
    )
    errors = sorted(
        (tuple(e.path) if e.path else None, (e.extensions or {}).get("code"))
        for e in result.errors or []
    )
    return result.data, errors


async def sql(api: Any, statement: str, **params: Any) -> list[tuple[Any, ...]]:
    async with api.services.database.sessions() as session:
        return [tuple(row) for row in await session.execute(text(statement), params)]


STUDENT_DOC = """
query($id: String!) {
  student(studentId: $id) {
    studentId gradeLevel grades { studentId } analytics { gradeCount }
  }
  studentAnalytics(studentId: $id) { gradeCount }
}
"""


TEACHERS_GRADES = (
    "student_id IN (SELECT student_id FROM students WHERE grade_level IN (6, 10))"
)

AGGREGATES = """
studentCount gradeCount mean median stdDev min max letters { a b c d f }
histogram { from to count } subjects { subject count average min max latest }
"""
CLASS_AGGREGATES_DOC = (
    f"query($level: Int) {{ classAnalytics(gradeLevel: $level) {{ {AGGREGATES} }} }}"
)

# MINE is the student viewer's own record; PEER shares the level; AWAY does not.
SCHOOL = (("MINE", 6), ("PEER", 6), ("AWAY", 1))
ME = Viewer(identity="user:mine", role="student", student_id="MINE", anonymous=False)

STUDENT_CREATE = """
mutation($input: StudentCreateInput!) { studentCreate(input: $input) { __typename } }
"""
GRADE_ADD = """
mutation($id: String!, $score: Float! = 75) {
  gradeAdd(input: {studentId: $id, subject: "Math", score: $score}) { __typename }
}
"""
GRADES_ADD = """
mutation($input: [GradeAddInput!]!) { gradesAdd(input: $input) { __typename } }
"""


async def state(api: Any) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every student and grade row, to prove that a refused write wrote nothing."""
    students = await sql(
        api,
        "SELECT student_id, name, email, grade_level FROM students ORDER BY student_id",
    )
    grades = await sql(
        api,
        "SELECT id, student_id, subject, score, max_score, recorded_at FROM grades "
        "ORDER BY id",
    )
    return students, grades


def grade_row(
    student_id: str, score: float = 70.0, subject: str = "Art"
) -> dict[str, Any]:
    return {"studentId": student_id, "subject": subject, "score": score}


async def subscribe(api: Any, viewer: Viewer, document: str, **variables: Any) -> Any:
    return await schema_of(api).subscribe(
        document,
        variable_values=variables or None,
        context_value=api.services.context(viewer=viewer, over_http=False),
    )


async def refusal(stream: Any) -> list[tuple[Any, str]]:
    """The (path, code) of each error of a refused subscription: a first result
    without data, and then the end of the stream."""
    first = await asyncio.wait_for(anext(stream), 5)
    assert first.data is None
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    return [(tuple(e.path), e.extensions["code"]) for e in first.errors]
