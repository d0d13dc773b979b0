"""student and students: lookups, paging, filters; malformed requests."""

from __future__ import annotations

import base64
import itertools
import json
import re
from typing import Any

import pytest
from gql import gql
from sqlalchemy import text

from tests.conftest import SEEDED_STUDENTS
from tests.factories import create_student, student_input
from tests.factories.pages import (
    assert_no_offset,
    page_statement,
    sent_statements,
    sqlite_plan,
)
from tests.factories.students import STUDENT, STUDENTS, STUDENTS_QUERY, stored_student

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


@pytest.mark.parametrize("length", [255, 50_000])
async def test_students_refuses_a_search_longer_than_any_field(seeded_api, length):
    seeded_api.counter.reset()
    body = await seeded_api.post(STUDENTS_QUERY, {"search": "x" * length})

    error = only_error(body)
    assert error["message"] == f"search must be at most 254 characters, got {length}"
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["argument"] == "search"
    assert body["data"] is None
    assert seeded_api.counter.statements == []


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


@pytest.mark.parametrize(
    ("order_by", "seek"),
    [
        ("STUDENT_ID", "students.student_id > "),
        ("NAME", "(students.name, students.student_id) > "),
        ("GRADE_LEVEL", "(students.grade_level, students.student_id) > "),
        ("CREATED_AT", "(students.created_at, students.student_id) > "),
    ],
)
async def test_a_deep_students_page_starts_at_its_cursor(
    seeded_api, backend, order_by, seek
):
    """Keyset pagination in every order: the last of 12 pages asks for the rows past
    its cursor (a row value beside the tie-breaking studentId), never an OFFSET."""
    after, pages = None, 0
    while True:
        with sent_statements(seeded_api) as sent:
            page = (
                await seeded_api.execute(
                    STUDENTS, first=10, after=after, orderBy=order_by
                )
            )["students"]
        pages += 1
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]

    statement, parameters = page_statement(sent, "students")
    assert pages == SEEDED_STUDENTS // 10
    assert len(page["edges"]) == 10
    assert seek in statement
    assert_no_offset(backend, statement, parameters, limit=11)
    if backend == "sqlite" and order_by == "STUDENT_ID":
        [plan] = await sqlite_plan(seeded_api, (statement, parameters))
        assert re.fullmatch(
            r"SEARCH students USING INDEX sqlite_autoindex_students_\d "
            r"\(student_id>\?\)",
            plan,
        )
