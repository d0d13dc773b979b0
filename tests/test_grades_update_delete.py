"""gradeUpdate and gradeDelete."""

from __future__ import annotations

import pytest
from gql import gql

from tests.factories import add_grade
from tests.factories.grades import (
    GRADES,
    STUDENT_GRADES,
    stored_grade,
)

GRADE_UPDATE = gql(
    """
    mutation Update($id: ID!, $input: GradeUpdateInput!) {
      gradeUpdate(id: $id, input: $input) {
        __typename
        ... on GradeUpdateSuccess {
          grade { id studentId subject score maxScore percentage recordedAt }
        }
        ... on InvalidInputError { message field code }
        ... on NotFoundError { message }
      }
    }
    """
)

GRADE_DELETE = gql(
    """
    mutation Delete($id: ID!) {
      gradeDelete(id: $id) {
        __typename
        ... on GradeDeleteSuccess { grade { id studentId subject score } }
        ... on NotFoundError { message }
      }
    }
    """
)

# --- gradeUpdate -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"score": 45.0}, {"score": 45.0, "percentage": 90.0}),
        ({"maxScore": 80.0}, {"maxScore": 80.0, "percentage": 50.0}),
        (
            {"score": 150.0, "maxScore": 200.0},
            {"score": 150.0, "maxScore": 200.0, "percentage": 75.0},
        ),
        ({"subject": " History "}, {"subject": "History"}),
        ({"studentId": "G00002"}, {"studentId": "G00002"}),
        (
            {"recordedAt": "2025-12-24T18:00:00+01:00"},
            {"recordedAt": "2025-12-24T17:00:00Z"},
        ),
        ({}, {}),
    ],
)
async def test_grade_update_changes_only_the_given_fields(
    api, grade, changes, expected
):
    result = await api.execute(GRADE_UPDATE, id=grade["id"], input=changes)

    assert result["gradeUpdate"] == {
        "__typename": "GradeUpdateSuccess",
        "grade": {**grade, **expected},
    }
    listed = (await api.execute(GRADES))["grades"]["edges"]
    assert [e["node"] for e in listed] == [{**grade, **expected}]


async def test_grade_update_moves_the_grade_between_students(api, grade):
    await api.execute(GRADE_UPDATE, id=grade["id"], input={"studentId": "G00002"})

    old = await api.execute(STUDENT_GRADES, studentId="G00001")
    new = await api.execute(STUDENT_GRADES, studentId="G00002")
    assert old["student"]["all"] == []
    assert [g["id"] for g in new["student"]["all"]] == [grade["id"]]


@pytest.mark.parametrize(
    ("changes", "field", "code"),
    [
        ({"score": 50.5}, "score", "OUT_OF_RANGE"),  # above the stored maxScore 50
        ({"maxScore": 30.0}, "score", "OUT_OF_RANGE"),  # below the stored score 40
        ({"score": -1.0}, "score", "OUT_OF_RANGE"),
        ({"maxScore": 0.0}, "maxScore", "OUT_OF_RANGE"),
        ({"maxScore": -5.0}, "maxScore", "OUT_OF_RANGE"),
        ({"score": 90.0, "maxScore": 80.0}, "score", "OUT_OF_RANGE"),
        ({"score": None}, "score", "REQUIRED"),
        ({"maxScore": None}, "maxScore", "REQUIRED"),
        ({"subject": ""}, "subject", "REQUIRED"),
        ({"subject": None}, "subject", "REQUIRED"),
        ({"subject": "s" * 65}, "subject", "TOO_LONG"),
        ({"studentId": ""}, "studentId", "REQUIRED"),
        ({"recordedAt": None}, "recordedAt", "REQUIRED"),
    ],
)
async def test_grade_update_refuses_invalid_input(api, grade, changes, field, code):
    before = await stored_grade(api, grade["id"])

    result = await api.execute(GRADE_UPDATE, id=grade["id"], input=changes)

    payload = result["gradeUpdate"]
    assert payload["__typename"] == "InvalidInputError"
    assert (payload["field"], payload["code"]) == (field, code)
    assert await stored_grade(api, grade["id"]) == before


@pytest.mark.parametrize(
    ("grade_id", "changes", "message"),
    [
        ("999999", {"score": 1.0}, "grade '999999' does not exist"),
        ("abc", {"score": 1.0}, "grade 'abc' does not exist"),
        ("99999999999", {"score": 1.0}, "grade '99999999999' does not exist"),
        (None, {"studentId": "NOBODY"}, "student 'NOBODY' does not exist"),
    ],
)
async def test_grade_update_of_an_unknown_thing_is_not_found(
    api, rows_in, grade, grade_id, changes, message
):
    before = await stored_grade(api, grade["id"])

    result = await api.execute(GRADE_UPDATE, id=grade_id or grade["id"], input=changes)

    assert result["gradeUpdate"] == {"__typename": "NotFoundError", "message": message}
    assert await stored_grade(api, grade["id"]) == before
    assert await rows_in("grades") == 1


# --- gradeDelete -----------------------------------------------------------------------


async def test_grade_delete_removes_the_grade(api, rows_in, grade):
    kept = await add_grade(api, "G00001")

    result = await api.execute(GRADE_DELETE, id=grade["id"])

    assert result["gradeDelete"] == {
        "__typename": "GradeDeleteSuccess",
        "grade": {
            "id": grade["id"],
            "studentId": "G00001",
            "subject": "Math",
            "score": 40.0,
        },
    }
    assert await rows_in("grades") == 1
    assert await stored_grade(api, kept["id"]) is not None


@pytest.mark.parametrize("grade_id", ["999999", "abc", "-1", "1e3", "9" * 30])
async def test_grade_delete_of_an_unknown_grade_is_not_found(
    api, rows_in, grade, grade_id
):
    result = await api.execute(GRADE_DELETE, id=grade_id)

    assert result["gradeDelete"] == {
        "__typename": "NotFoundError",
        "message": f"grade '{grade_id}' does not exist",
    }
    assert await rows_in("grades") == 1


async def test_grade_delete_twice_is_not_found_the_second_time(api, rows_in, grade):
    await api.execute(GRADE_DELETE, id=grade["id"])

    result = await api.execute(GRADE_DELETE, id=grade["id"])

    assert result["gradeDelete"]["__typename"] == "NotFoundError"
    assert await rows_in("grades") == 0


async def test_student_reads_after_grade_writes_see_the_change(api, grade):
    first = (await api.execute(STUDENT_GRADES, studentId="G00001"))["student"]
    assert [g["id"] for g in first["all"]] == [grade["id"]]

    added = await add_grade(
        api, "G00001", subject="Math", recordedAt="2025-09-01T08:00:00Z"
    )
    await api.execute(GRADE_DELETE, id=grade["id"])

    student = (await api.execute(STUDENT_GRADES, studentId="G00001"))["student"]
    assert [g["id"] for g in student["all"]] == [added["id"]]
