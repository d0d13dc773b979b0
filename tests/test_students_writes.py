"""studentCreate, studentUpdate and studentDelete."""

from __future__ import annotations

from typing import Any

import pytest
from gql import gql

from tests.factories import STUDENT_CREATE, add_grade, create_student, student_input
from tests.factories.students import STUDENT, STUDENTS, stored_student

STUDENT_UPDATE = gql(
    """
    mutation Update($studentId: String!, $input: StudentUpdateInput!) {
      studentUpdate(studentId: $studentId, input: $input) {
        __typename
        ... on StudentUpdateSuccess { student { studentId name email gradeLevel } }
        ... on InvalidInputError { message field code }
        ... on ConflictError { message field code }
        ... on NotFoundError { message }
      }
    }
    """
)

STUDENT_DELETE = gql(
    """
    mutation Delete($studentId: String!, $cascade: Boolean! = false) {
      studentDelete(studentId: $studentId, cascade: $cascade) {
        __typename
        ... on StudentDeleteSuccess { student { studentId name email gradeLevel } }
        ... on ConflictError { message field code }
        ... on NotFoundError { message }
      }
    }
    """
)


async def read_student(api: Any, student_id: str) -> dict[str, Any] | None:
    result = await api.execute(STUDENT, studentId=student_id)
    student: dict[str, Any] | None = result["student"]
    return student


# --- studentCreate ---------------------------------------------------------------------


async def test_student_create_stores_the_student(api, rows_in):
    result = await api.execute(
        STUDENT_CREATE,
        input={
            "studentId": "  N00001 ",
            "name": " Ada Lovelace ",
            "email": "Ada.Lovelace@School.Example",
            "gradeLevel": 12,
        },
    )

    assert result["studentCreate"] == {
        "__typename": "StudentCreateSuccess",
        "student": {
            "studentId": "N00001",
            "name": "Ada Lovelace",
            "email": "ada.lovelace@school.example",
            "gradeLevel": 12,
        },
    }
    assert await rows_in("students") == 1
    assert await stored_student(api, "N00001") == {
        "student_id": "N00001",
        "name": "Ada Lovelace",
        "email": "ada.lovelace@school.example",
        "grade_level": 12,
    }


async def test_student_create_accepts_the_limits(api, rows_in):
    await create_student(api, name="n" * 200, gradeLevel=1)
    await create_student(api, gradeLevel=12)

    assert await rows_in("students") == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("studentId", "T99999"),
        ("studentId", " T99999 "),
        ("email", "TAKEN@School.EXAMPLE"),
    ],
)
async def test_student_create_refuses_a_duplicate(api, rows_in, field, value):
    await create_student(api, studentId="T99999", email="taken@school.example")

    result = await api.execute(STUDENT_CREATE, input=student_input(**{field: value}))

    payload = result["studentCreate"]
    assert payload["__typename"] == "ConflictError"
    assert (payload["field"], payload["code"]) == (field, "DUPLICATE")
    assert await rows_in("students") == 1


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("studentId", "", "REQUIRED"),
        ("studentId", "s" * 65, "TOO_LONG"),
        ("name", "", "REQUIRED"),
        ("name", "   ", "REQUIRED"),
        ("name", "n" * 201, "TOO_LONG"),
        ("email", "", "REQUIRED"),
        ("email", "not-an-email", "INVALID_EMAIL"),
        ("email", "two@@school.example", "INVALID_EMAIL"),
        ("email", "no spaces@school.example", "INVALID_EMAIL"),
        ("gradeLevel", 0, "OUT_OF_RANGE"),
        ("gradeLevel", 13, "OUT_OF_RANGE"),
        ("gradeLevel", -1, "OUT_OF_RANGE"),
        ("name", "Ada\x00Lovelace", "INVALID_FORMAT"),
        ("studentId", "T\x0001", "INVALID_FORMAT"),
    ],
)
async def test_student_create_refuses_invalid_input(api, rows_in, field, value, code):
    await create_student(api)

    result = await api.execute(STUDENT_CREATE, input=student_input(**{field: value}))

    payload = result["studentCreate"]
    assert payload["__typename"] == "InvalidInputError"
    assert (payload["field"], payload["code"]) == (field, code)
    assert payload["message"]
    assert await rows_in("students") == 1


# --- studentUpdate ---------------------------------------------------------------------


async def test_student_update_changes_only_the_given_fields(api):
    student = await create_student(api, name="Old Name", gradeLevel=4)

    result = await api.execute(
        STUDENT_UPDATE,
        studentId=student["studentId"],
        input={"name": " New Name ", "email": "NEW@School.Example"},
    )

    assert result["studentUpdate"] == {
        "__typename": "StudentUpdateSuccess",
        "student": {
            "studentId": student["studentId"],
            "name": "New Name",
            "email": "new@school.example",
            "gradeLevel": 4,
        },
    }
    assert await stored_student(api, student["studentId"]) == {
        "student_id": student["studentId"],
        "name": "New Name",
        "email": "new@school.example",
        "grade_level": 4,
    }


async def test_student_reads_after_an_update_see_the_new_values(api):
    student = await create_student(api, name="Before", gradeLevel=4)
    await api.execute(STUDENT, studentId=student["studentId"])  # cached now
    await api.execute(STUDENTS, gradeLevel=4)

    await api.execute(
        STUDENT_UPDATE,
        studentId=student["studentId"],
        input={"name": "After", "gradeLevel": 5},
    )

    read = await read_student(api, student["studentId"])
    assert (read["name"], read["gradeLevel"]) == ("After", 5)
    assert (await api.execute(STUDENTS, gradeLevel=4))["students"]["totalCount"] == 0
    assert (await api.execute(STUDENTS, gradeLevel=5))["students"]["totalCount"] == 1


async def test_student_update_with_no_changes_returns_the_student(api):
    student = await create_student(api)

    result = await api.execute(STUDENT_UPDATE, studentId=student["studentId"], input={})

    assert result["studentUpdate"] == {
        "__typename": "StudentUpdateSuccess",
        "student": student,
    }


async def test_student_update_of_a_new_student_id_keeps_the_grades(api, rows_in):
    student = await create_student(api, studentId="OLD001")
    other = await create_student(api, studentId="OTHER1")
    first = await add_grade(
        api, "OLD001", subject="Math", recordedAt="2025-09-01T08:00:00Z"
    )
    second = await add_grade(
        api, "OLD001", subject="Art", recordedAt="2025-09-02T08:00:00Z"
    )
    await add_grade(api, other["studentId"])
    assert await read_student(api, "OLD001") is not None

    result = await api.execute(
        STUDENT_UPDATE, studentId=student["studentId"], input={"studentId": "NEW001"}
    )

    assert result["studentUpdate"]["__typename"] == "StudentUpdateSuccess"
    assert result["studentUpdate"]["student"]["studentId"] == "NEW001"
    moved = await read_student(api, "NEW001")
    assert moved["grades"] == [
        {"id": first["id"], "studentId": "NEW001", "subject": "Math"},
        {"id": second["id"], "studentId": "NEW001", "subject": "Art"},
    ]
    assert await read_student(api, "OLD001") is None
    assert await rows_in("grades") == 3
    assert await rows_in("students") == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [("studentId", "TAKEN1"), ("email", "Taken@School.Example")],
)
async def test_student_update_refuses_a_duplicate(api, rows_in, field, value):
    await create_student(api, studentId="TAKEN1", email="taken@school.example")
    student = await create_student(api)
    before = await stored_student(api, student["studentId"])

    result = await api.execute(
        STUDENT_UPDATE, studentId=student["studentId"], input={field: value}
    )

    payload = result["studentUpdate"]
    assert payload["__typename"] == "ConflictError"
    assert (payload["field"], payload["code"]) == (field, "DUPLICATE")
    assert await stored_student(api, student["studentId"]) == before
    assert await rows_in("students") == 2


async def test_student_update_to_its_own_email_in_another_case_is_not_a_duplicate(api):
    student = await create_student(api, email="me@school.example")

    result = await api.execute(
        STUDENT_UPDATE,
        studentId=student["studentId"],
        input={"email": "ME@school.example"},
    )

    assert result["studentUpdate"]["__typename"] == "StudentUpdateSuccess"
    assert result["studentUpdate"]["student"]["email"] == "me@school.example"


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("studentId", "", "REQUIRED"),
        ("studentId", None, "REQUIRED"),
        ("name", "", "REQUIRED"),
        ("name", " ", "REQUIRED"),
        ("name", None, "REQUIRED"),
        ("name", "n" * 201, "TOO_LONG"),
        ("email", "nope", "INVALID_EMAIL"),
        ("email", None, "REQUIRED"),
        ("gradeLevel", 0, "OUT_OF_RANGE"),
        ("gradeLevel", 13, "OUT_OF_RANGE"),
        ("gradeLevel", None, "REQUIRED"),
    ],
)
async def test_student_update_refuses_invalid_input(api, field, value, code):
    student = await create_student(api)
    before = await stored_student(api, student["studentId"])

    result = await api.execute(
        STUDENT_UPDATE, studentId=student["studentId"], input={field: value}
    )

    payload = result["studentUpdate"]
    assert payload["__typename"] == "InvalidInputError"
    assert (payload["field"], payload["code"]) == (field, code)
    assert await stored_student(api, student["studentId"]) == before


async def test_student_update_of_an_unknown_student_is_not_found(api, rows_in):
    result = await api.execute(STUDENT_UPDATE, studentId="NOBODY", input={"name": "X"})

    assert result["studentUpdate"] == {
        "__typename": "NotFoundError",
        "message": "student 'NOBODY' does not exist",
    }
    assert await rows_in("students") == 0


# --- studentDelete ---------------------------------------------------------------------


async def test_student_delete_removes_a_student_without_grades(api, rows_in):
    student = await create_student(api)
    await create_student(api)
    assert await read_student(api, student["studentId"]) is not None  # cached now

    result = await api.execute(STUDENT_DELETE, studentId=student["studentId"])

    assert result["studentDelete"] == {
        "__typename": "StudentDeleteSuccess",
        "student": student,
    }
    assert await rows_in("students") == 1
    assert await read_student(api, student["studentId"]) is None


async def test_student_delete_is_refused_while_the_student_has_grades(api, rows_in):
    student = await create_student(api)
    await add_grade(api, student["studentId"])
    await add_grade(api, student["studentId"])

    result = await api.execute(STUDENT_DELETE, studentId=student["studentId"])

    payload = result["studentDelete"]
    assert payload["__typename"] == "ConflictError"
    assert (payload["field"], payload["code"]) == ("studentId", "HAS_GRADES")
    assert await rows_in("students") == 1
    assert await rows_in("grades") == 2


async def test_student_delete_with_cascade_deletes_the_grades_too(api, rows_in):
    student = await create_student(api)
    other = await create_student(api)
    await add_grade(api, student["studentId"])
    await add_grade(api, student["studentId"])
    kept = await add_grade(api, other["studentId"])

    result = await api.execute(
        STUDENT_DELETE, studentId=student["studentId"], cascade=True
    )

    assert result["studentDelete"] == {
        "__typename": "StudentDeleteSuccess",
        "student": student,
    }
    assert await rows_in("students") == 1
    assert await rows_in("grades") == 1
    remaining = await read_student(api, other["studentId"])
    assert [g["id"] for g in remaining["grades"]] == [kept["id"]]


async def test_student_delete_of_an_unknown_student_is_not_found(api, rows_in):
    await create_student(api)

    result = await api.execute(STUDENT_DELETE, studentId="NOBODY", cascade=True)

    assert result["studentDelete"] == {
        "__typename": "NotFoundError",
        "message": "student 'NOBODY' does not exist",
    }
    assert await rows_in("students") == 1
