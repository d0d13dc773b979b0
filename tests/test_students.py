"""student, students and the student mutations; malformed requests and request ids."""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

import pytest
from gql import gql
from sqlalchemy import text

from tests.conftest import SEEDED_STUDENTS
from tests.factories import STUDENT_CREATE, add_grade, create_student, student_input

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

ORDER_COLUMNS = {
    "STUDENT_ID": "student_id",
    "NAME": "name",
    "GRADE_LEVEL": "grade_level",
    "CREATED_AT": "created_at",
}


def only_error(body: dict[str, Any]) -> dict[str, Any]:
    """The single top-level error of a response; every error carries a requestId."""
    assert len(body["errors"]) == 1, body
    error: dict[str, Any] = body["errors"][0]
    assert error["extensions"]["requestId"], error
    return error


def cursor_of(*parts: Any) -> str:
    """A cursor in the server's encoding (for hand-crafted, well-formed but wrong ones)."""
    raw = json.dumps(list(parts), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def stored_students(api: Any) -> list[dict[str, Any]]:
    """Every student row, read with plain SQL (the reference for ordering and filters)."""
    async with api.services.database.sessions() as session:
        rows = await session.execute(
            text(
                "SELECT student_id, name, email, grade_level, created_at FROM students"
            )
        )
        return [dict(row._mapping) for row in rows]


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


async def read_student(api: Any, student_id: str) -> dict[str, Any] | None:
    result = await api.execute(STUDENT, studentId=student_id)
    student: dict[str, Any] | None = result["student"]
    return student


async def all_pages(api: Any, **variables: Any) -> list[dict[str, Any]]:
    """Follow endCursor to the end; returns every node in order."""
    nodes: list[dict[str, Any]] = []
    after = None
    while True:
        page = (await api.execute(STUDENTS, after=after, **variables))["students"]
        nodes.extend(edge["node"] for edge in page["edges"])
        if page["edges"]:
            assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]
        if not page["pageInfo"]["hasNextPage"]:
            return nodes
        after = page["pageInfo"]["endCursor"]


# --- student ---------------------------------------------------------------------------


async def test_student_returns_the_seeded_row(seeded_api):
    result = await seeded_api.execute(STUDENT, studentId="S00001")

    student = result["student"]
    stored = await stored_student(seeded_api, "S00001")
    assert stored is not None
    assert student["studentId"] == "S00001"
    assert student["name"] == stored["name"]
    assert student["email"] == stored["email"]
    assert student["gradeLevel"] == stored["grade_level"]
    assert student["createdAt"] == "2025-08-25T08:00:00Z"
    assert len(student["grades"]) == 12


async def test_student_is_null_when_absent(seeded_api):
    result = await seeded_api.execute(STUDENT, studentId="S99999")

    assert result == {"student": None}


# --- students: paging ------------------------------------------------------------------


async def test_students_default_page_is_first_twenty_by_student_id(seeded_api):
    result = await seeded_api.execute(
        gql(
            "{ students { totalCount edges { cursor node { studentId } } pageInfo { hasNextPage endCursor } } }"
        )
    )

    students = result["students"]
    assert students["totalCount"] == SEEDED_STUDENTS
    assert [e["node"]["studentId"] for e in students["edges"]] == [
        f"S{n:05d}" for n in range(1, 21)
    ]
    assert students["pageInfo"] == {
        "hasNextPage": True,
        "endCursor": students["edges"][-1]["cursor"],
    }


@pytest.mark.parametrize("first", [1, 100])
async def test_students_accepts_first_at_its_bounds(seeded_api, first):
    result = await seeded_api.execute(STUDENTS, first=first)

    assert len(result["students"]["edges"]) == first
    assert result["students"]["pageInfo"]["hasNextPage"] is True


@pytest.mark.parametrize("first", [0, 101, -1])
async def test_students_refuses_first_out_of_range(seeded_api, first):
    body = await seeded_api.post(STUDENTS_QUERY, {"first": first})

    error = only_error(body)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["path"] == ["students"]
    assert body["data"] is None


@pytest.mark.parametrize("direction", ["ASC", "DESC"])
@pytest.mark.parametrize("order_by", list(ORDER_COLUMNS))
async def test_students_pages_follow_every_order_without_gaps(
    seeded_api, order_by, direction
):
    rows = await stored_students(seeded_api)
    column = ORDER_COLUMNS[order_by]
    expected = [
        row["student_id"]
        for row in sorted(
            rows,
            key=lambda r: (r[column], r["student_id"]),
            reverse=direction == "DESC",
        )
    ]

    nodes = await all_pages(seeded_api, first=17, orderBy=order_by, direction=direction)

    ids = [node["studentId"] for node in nodes]
    assert len(set(ids)) == len(ids) == SEEDED_STUDENTS
    assert ids == expected


async def test_students_page_by_distinct_created_at_and_tied_names(api):
    # Fresh rows have distinct created_at (microseconds) and a tie on the name.
    for name in ["Zed Adams", "amy Brown", "Bea Cole", "Zed Adams", "Bea Cole"]:
        await create_student(api, name=name)
    rows = await stored_students(api)

    for order_by, direction in itertools.product(
        ("CREATED_AT", "NAME"), ("ASC", "DESC")
    ):
        reverse = direction == "DESC"
        column = ORDER_COLUMNS[order_by]
        expected = [
            r["student_id"]
            for r in sorted(
                rows, key=lambda r: (r[column], r["student_id"]), reverse=reverse
            )
        ]
        nodes = await all_pages(api, first=2, orderBy=order_by, direction=direction)
        assert [n["studentId"] for n in nodes] == expected


async def test_students_last_page_has_no_next_page(seeded_api):
    result = await seeded_api.execute(STUDENTS, first=100)
    after = result["students"]["pageInfo"]["endCursor"]

    rest = (await seeded_api.execute(STUDENTS, first=100, after=after))["students"]

    assert len(rest["edges"]) == SEEDED_STUDENTS - 100
    assert rest["pageInfo"]["hasNextPage"] is False
    assert rest["totalCount"] == SEEDED_STUDENTS


async def test_students_empty_database_gives_empty_connection(api):
    result = await api.execute(STUDENTS)

    assert result["students"] == {
        "totalCount": 0,
        "edges": [],
        "pageInfo": {"hasNextPage": False, "endCursor": None},
    }


async def _cursor(api: Any, **variables: Any) -> str:
    page = (await api.execute(STUDENTS, first=2, **variables))["students"]
    cursor: str = page["pageInfo"]["endCursor"]
    return cursor


@pytest.mark.parametrize(
    ("cursor", "variables"),
    [
        ("garbage", {}),
        ("!!!not base64!!!", {}),
        ("", {}),
        (cursor_of("g", "2025-09-01T08:00:00", 1), {}),  # a grades cursor
        (cursor_of("s:grade_level:a", "seven", "S00001"), {"orderBy": "GRADE_LEVEL"}),
        (cursor_of("s:name:a", 7, "S00001"), {"orderBy": "NAME"}),
        (cursor_of("s:student_id:a", "S00001", ["x"]), {}),
        (cursor_of("s:created_at:a", "yesterday", "S00001"), {"orderBy": "CREATED_AT"}),
        (cursor_of("s:created_at:a", 5, "S00001"), {"orderBy": "CREATED_AT"}),
    ],
)
async def test_students_refuses_a_bad_cursor(seeded_api, cursor, variables):
    body = await seeded_api.post(STUDENTS_QUERY, {"after": cursor, **variables})

    error = only_error(body)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert body["data"] is None


@pytest.mark.parametrize(
    ("made_with", "used_with"),
    [
        ({"orderBy": "NAME"}, {"orderBy": "STUDENT_ID"}),
        ({"orderBy": "STUDENT_ID"}, {"orderBy": "GRADE_LEVEL"}),
        ({"orderBy": "CREATED_AT"}, {"orderBy": "NAME"}),
        ({"direction": "ASC"}, {"direction": "DESC"}),
    ],
)
async def test_students_refuses_a_cursor_from_another_ordering(
    seeded_api, made_with, used_with
):
    cursor = await _cursor(seeded_api, **made_with)

    body = await seeded_api.post(STUDENTS_QUERY, {"after": cursor, **used_with})

    error = only_error(body)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert body["data"] is None


# --- students: filters -----------------------------------------------------------------


async def test_students_filters_by_grade_level(seeded_api):
    rows = await stored_students(seeded_api)
    expected = sorted(r["student_id"] for r in rows if r["grade_level"] == 7)
    assert expected  # the seed has students in grade 7

    nodes = await all_pages(seeded_api, first=5, gradeLevel=7)
    total = (await seeded_api.execute(STUDENTS, gradeLevel=7))["students"]["totalCount"]

    assert [n["studentId"] for n in nodes] == expected
    assert {n["gradeLevel"] for n in nodes} == {7}
    assert total == len(expected)


@pytest.mark.parametrize(
    "search", ["SMITH", "sMiTh", "s0001", "S00042", "GRACE.", "@School.Example"]
)
async def test_students_search_is_case_insensitive_on_name_id_and_email(
    seeded_api, search
):
    rows = await stored_students(seeded_api)
    needle = search.lower()
    expected = sorted(
        r["student_id"]
        for r in rows
        if any(needle in r[c].lower() for c in ("name", "student_id", "email"))
    )
    assert expected

    nodes = await all_pages(seeded_api, first=100, search=search)
    total = (await seeded_api.execute(STUDENTS, search=search))["students"][
        "totalCount"
    ]

    assert [n["studentId"] for n in nodes] == expected
    assert total == len(expected)


async def test_students_search_combines_with_grade_level(seeded_api):
    rows = await stored_students(seeded_api)
    expected = sorted(
        r["student_id"]
        for r in rows
        if r["grade_level"] == 3
        and any("ar" in r[c].lower() for c in ("name", "email"))
    )
    assert expected

    result = await seeded_api.execute(STUDENTS, first=100, gradeLevel=3, search="AR")

    students = result["students"]
    assert [e["node"]["studentId"] for e in students["edges"]] == expected
    assert students["totalCount"] == len(expected)


async def test_students_search_treats_like_wildcards_literally(api):
    for name in ["100% Sure", "Under_score", "Back\\slash", "Plain Name"]:
        await create_student(api, name=name)

    for search, expected_name in [
        ("%", "100% Sure"),
        ("0%", "100% Sure"),
        ("_", "Under_score"),
        ("\\", "Back\\slash"),
    ]:
        students = (await api.execute(STUDENTS, search=search))["students"]
        assert [e["node"]["name"] for e in students["edges"]] == [expected_name], search
        assert students["totalCount"] == 1


async def test_students_search_with_no_match_is_empty(seeded_api):
    result = await seeded_api.execute(STUDENTS, search="no such student")

    assert result["students"]["edges"] == []
    assert result["students"]["totalCount"] == 0
    assert result["students"]["pageInfo"] == {"hasNextPage": False, "endCursor": None}


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


# --- malformed requests and request ids ------------------------------------------------


async def test_malformed_document_is_a_parse_error(seeded_api):
    body = await seeded_api.post("{ students {")

    error = only_error(body)
    assert error["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    assert body.get("data") is None


async def test_unknown_field_is_a_validation_error(seeded_api):
    body = await seeded_api.post("{ students { edges { node { shoeSize } } } }")

    error = only_error(body)
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert body.get("data") is None


async def test_wrong_variable_type_is_bad_user_input(api, rows_in):
    body = await api.post(
        "mutation($input: StudentCreateInput!) { studentCreate(input: $input) { __typename } }",
        {"input": {**student_input(), "gradeLevel": "seven"}},
    )

    error = only_error(body)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert await rows_in("students") == 0


@pytest.mark.parametrize(
    "query",
    ["{ students {", "{ nope }", "{ students(first: 0) { totalCount } }"],
)
async def test_error_carries_the_request_id_from_the_header(seeded_api, query):
    response = await seeded_api.http.post(
        "/graphql", json={"query": query}, headers={"X-Request-ID": "abc"}
    )

    assert response.status_code == 200
    error = only_error(response.json())
    assert error["extensions"]["requestId"] == "abc"


async def test_each_request_gets_its_own_request_id(seeded_api):
    first = only_error(await seeded_api.post("{ nope }"))
    second = only_error(await seeded_api.post("{ nope }"))

    assert first["extensions"]["requestId"] != second["extensions"]["requestId"]
