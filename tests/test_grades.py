"""grades, subjects, Student.grades and the grade mutations, single and batch."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from gql import gql
from sqlalchemy import select, text

from db import models
from tests.factories import GRADE_ADD, add_grade, create_student, grade_input

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

SUBJECTS = gql("{ subjects }")

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


def cursor_of(*parts: Any) -> str:
    raw = json.dumps(list(parts), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def row_errors(payload: dict[str, Any]) -> list[tuple[int, Any, str, str]]:
    """(index, line, field, code) of each row error, in index then field order."""
    assert all(row["message"] for row in payload["rows"])
    return sorted(
        (r["index"], r["line"], r["field"], r["code"]) for r in payload["rows"]
    )


G = models.Grade.__table__.c
_STORED = (G.student_id, G.subject, G.score, G.max_score, G.recorded_at)


async def stored_grade(api: Any, grade_id: str) -> dict[str, Any] | None:
    async with api.services.database.sessions() as session:
        query = select(*_STORED).where(G.id == int(grade_id))
        row = (await session.execute(query)).first()
        return dict(row._mapping) if row else None


def as_node(row: Any) -> dict[str, Any]:
    """A stored grade row as the API shows it."""
    return {
        "id": str(row.id),
        "studentId": row.student_id,
        "subject": row.subject,
        "score": row.score,
        "maxScore": row.max_score,
        "percentage": 100 * row.score / row.max_score,
        "recordedAt": row.recorded_at.isoformat() + "Z",
    }


async def count_rows(api: Any, table: str) -> int:
    async with api.services.database.sessions() as session:
        return int(
            (await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
        )


async def all_grade_pages(api: Any, **variables: Any) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []
    after = None
    while True:
        page = (await api.execute(GRADES, after=after, **variables))["grades"]
        nodes.extend(edge["node"] for edge in page["edges"])
        if not page["pageInfo"]["hasNextPage"]:
            return nodes
        after = page["pageInfo"]["endCursor"]


@pytest.fixture
async def two_students(api: Any) -> tuple[str, str]:
    first = await create_student(api, studentId="G00001")
    second = await create_student(api, studentId="G00002")
    return first["studentId"], second["studentId"]


# Out of insertion order on purpose, with a tie on recordedAt (ordered by id then).
SAMPLE = [
    ("G00001", "Math", 70.0, "2025-10-03T09:00:00Z"),
    ("G00002", "Art", 90.0, "2025-09-15T09:00:00Z"),
    ("G00001", "Science", 60.0, "2025-10-01T09:00:00Z"),
    ("G00001", "Math", 80.0, "2025-10-01T09:00:00Z"),
    ("G00002", "Math", 50.0, "2025-11-20T12:30:00Z"),
    ("G00001", "Art", 95.0, "2025-10-01T09:00:00Z"),
    ("G00002", "Math", 65.0, "2025-09-01T08:00:00Z"),
]


@pytest.fixture
async def sample(api: Any, two_students: tuple[str, str]) -> list[dict[str, Any]]:
    """SAMPLE in one batch; the stored rows as API nodes, oldest first (then by id)."""
    rows = [
        grade_input(student_id, subject=subject, score=score, recordedAt=when)
        for student_id, subject, score, when in SAMPLE
    ]
    result = await api.execute(GRADES_ADD, input=rows)
    assert result["gradesAdd"]["inserted"] == len(SAMPLE)
    async with api.services.database.sessions() as session:
        stored = (await session.execute(select(G.id, *_STORED))).all()
    return [as_node(r) for r in sorted(stored, key=lambda r: (r.recorded_at, r.id))]


# --- grades ----------------------------------------------------------------------------


async def test_grades_lists_oldest_first_with_ties_by_id(api, sample):
    result = await api.execute(GRADES)

    grades = result["grades"]
    assert [e["node"] for e in grades["edges"]] == sample
    assert [
        (n["studentId"], n["subject"], n["percentage"], n["recordedAt"]) for n in sample
    ] == [
        ("G00002", "Math", 65.0, "2025-09-01T08:00:00Z"),
        ("G00002", "Art", 90.0, "2025-09-15T09:00:00Z"),
        ("G00001", "Science", 60.0, "2025-10-01T09:00:00Z"),
        ("G00001", "Math", 80.0, "2025-10-01T09:00:00Z"),
        ("G00001", "Art", 95.0, "2025-10-01T09:00:00Z"),
        ("G00001", "Math", 70.0, "2025-10-03T09:00:00Z"),
        ("G00002", "Math", 50.0, "2025-11-20T12:30:00Z"),
    ]
    assert grades["totalCount"] == len(SAMPLE)
    assert grades["pageInfo"] == {
        "hasNextPage": False,
        "endCursor": grades["edges"][-1]["cursor"],
    }


async def test_grades_pages_through_ties_without_gaps(api, sample):
    nodes = await all_grade_pages(api, first=2)

    assert nodes == sample


SINCE, BEFORE = "2025-10-01T09:00:00Z", "2025-10-03T09:00:00Z"


@pytest.mark.parametrize(
    ("variables", "wanted", "count"),
    [
        ({"studentId": "G00001"}, lambda g: g["studentId"] == "G00001", 4),
        ({"subject": "Math"}, lambda g: g["subject"] == "Math", 4),
        (
            {"studentId": "G00002", "subject": "Math"},
            lambda g: g["studentId"] == "G00002" and g["subject"] == "Math",
            2,
        ),
        ({"recordedSince": SINCE}, lambda g: g["recordedAt"] >= SINCE, 5),
        ({"recordedBefore": SINCE}, lambda g: g["recordedAt"] < SINCE, 2),
        (
            {"recordedSince": "2025-10-01T11:00:00+02:00", "recordedBefore": BEFORE},
            lambda g: SINCE <= g["recordedAt"] < BEFORE,
            3,
        ),
        ({"studentId": "NOBODY"}, lambda g: False, 0),
        ({"subject": "math"}, lambda g: False, 0),
    ],
    ids=[
        "student",
        "subject",
        "student-and-subject",
        "since-inclusive",
        "before-exclusive",
        "window-with-offset",
        "unknown-student",
        "subject-is-exact",
    ],
)
async def test_grades_filters(api, sample, variables, wanted, count):
    expected = [g for g in sample if wanted(g)]

    nodes = await all_grade_pages(api, first=2, **variables)
    total = (await api.execute(GRADES, **variables))["grades"]["totalCount"]

    assert nodes == expected
    assert total == len(expected) == count


async def test_grades_pages_a_seeded_subject_in_order(seeded_api):
    async with seeded_api.services.database.sessions() as session:
        rows = await session.execute(
            text(
                "SELECT id FROM grades WHERE subject = 'Math' ORDER BY recorded_at, id"
            )
        )
        expected = [str(row[0]) for row in rows]
    assert len(expected) > 100

    nodes = await all_grade_pages(seeded_api, first=100, subject="Math")

    assert [n["id"] for n in nodes] == expected


@pytest.mark.parametrize("first", [0, 101])
async def test_grades_refuses_first_out_of_range(seeded_api, first):
    body = await seeded_api.post(GRADES_QUERY, {"first": first})

    assert only_error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    assert body["data"] == {"grades": None}  # nullable: FORBIDDEN lookups too


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        cursor_of("s:student_id:a", "S00001", "S00001"),  # a students cursor
        cursor_of("g", "not a time", 1),
        cursor_of("g", "2025-10-01T09:00:00", "one"),
        cursor_of("g", 5, 1),
        cursor_of("g", "2025-10-01T09:00:00", 2**40),
    ],
)
async def test_grades_refuses_a_bad_cursor(seeded_api, cursor):
    body = await seeded_api.post(GRADES_QUERY, {"after": cursor})

    assert only_error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    assert body["data"] == {"grades": None}  # nullable: FORBIDDEN lookups too


async def test_subjects_lists_distinct_subjects_alphabetically(api, sample):
    result = await api.execute(SUBJECTS)

    assert result == {"subjects": ["Art", "Math", "Science"]}


async def test_subjects_is_empty_without_grades(api):
    assert await api.execute(SUBJECTS) == {"subjects": []}


async def test_student_grades_are_oldest_first_and_filter_by_subject(api, sample):
    result = await api.execute(STUDENT_GRADES, studentId="G00001")

    mine = [
        {"id": g["id"], "subject": g["subject"], "recordedAt": g["recordedAt"]}
        for g in sample
        if g["studentId"] == "G00001"
    ]
    student = result["student"]
    assert student["all"] == mine
    assert student["math"] == [g for g in mine if g["subject"] == "Math"]
    assert student["none"] == []


# --- gradeAdd --------------------------------------------------------------------------


async def test_grade_add_stores_the_grade(api, rows_in, two_students):
    result = await api.execute(
        GRADE_ADD,
        input=grade_input(
            "G00001",
            subject=" Science ",
            score=45.0,
            maxScore=60.0,
            recordedAt="2025-10-01T11:00:00+02:00",
        ),
    )

    payload = result["gradeAdd"]
    assert payload["__typename"] == "GradeAddSuccess"
    grade = payload["grade"]
    assert grade == {
        "id": grade["id"],
        "studentId": "G00001",
        "subject": "Science",
        "score": 45.0,
        "maxScore": 60.0,
        "percentage": 75.0,
        "recordedAt": "2025-10-01T09:00:00Z",
    }
    assert await rows_in("grades") == 1
    assert await stored_grade(api, grade["id"]) == {
        "student_id": "G00001",
        "subject": "Science",
        "score": 45.0,
        "max_score": 60.0,
        "recorded_at": datetime(2025, 10, 1, 9, 0),
    }


async def test_grade_add_defaults_max_score_and_recorded_at(api, rows_in, two_students):
    before = datetime.now(UTC)
    result = await api.execute(
        GRADE_ADD, input={"studentId": "G00002", "subject": "Art", "score": 88.5}
    )
    after = datetime.now(UTC)

    grade = result["gradeAdd"]["grade"]
    assert grade["maxScore"] == 100.0
    assert grade["percentage"] == 88.5
    assert grade["recordedAt"].endswith("Z")
    recorded = datetime.fromisoformat(grade["recordedAt"])
    assert before - timedelta(seconds=1) <= recorded <= after + timedelta(seconds=1)
    assert await rows_in("grades") == 1


async def test_grade_add_accepts_the_limits(api, rows_in, two_students):
    await add_grade(api, "G00001", score=0.0)
    await add_grade(api, "G00001", score=100.0)
    await add_grade(api, "G00001", score=0.5, maxScore=0.5, subject="s" * 64)

    assert await rows_in("grades") == 3


async def test_grade_add_for_an_unknown_student_is_not_found(
    api, rows_in, two_students
):
    result = await api.execute(GRADE_ADD, input=grade_input("NOBODY"))

    assert result["gradeAdd"] == {
        "__typename": "NotFoundError",
        "message": "student 'NOBODY' does not exist",
    }
    assert await rows_in("grades") == 0


@pytest.mark.parametrize(
    ("overrides", "field", "code"),
    [
        ({"score": -1.0}, "score", "OUT_OF_RANGE"),
        ({"score": 100.5}, "score", "OUT_OF_RANGE"),
        ({"score": 50.0, "maxScore": 40.0}, "score", "OUT_OF_RANGE"),
        ({"maxScore": 0.0}, "maxScore", "OUT_OF_RANGE"),
        ({"maxScore": -10.0, "score": 5.0}, "maxScore", "OUT_OF_RANGE"),
        ({"subject": "s" * 65}, "subject", "TOO_LONG"),
        ({"subject": ""}, "subject", "REQUIRED"),
        ({"subject": "  "}, "subject", "REQUIRED"),
        ({"studentId": ""}, "studentId", "REQUIRED"),
        ({"subject": "Ma\x00th"}, "subject", "INVALID_FORMAT"),
    ],
)
async def test_grade_add_refuses_invalid_input(
    api, rows_in, two_students, overrides, field, code
):
    await add_grade(api, "G00001")

    result = await api.execute(GRADE_ADD, input=grade_input("G00001", **overrides))

    payload = result["gradeAdd"]
    assert payload["__typename"] == "InvalidInputError"
    assert (payload["field"], payload["code"]) == (field, code)
    assert payload["message"]
    assert await rows_in("grades") == 1


@pytest.mark.parametrize(
    ("variable", "literal"),
    [("score", b"NaN"), ("score", b"Infinity"), ("maxScore", b"-Infinity")],
)
async def test_grade_add_refuses_non_finite_numbers(
    api, rows_in, two_students, literal, variable
):
    query = (
        "mutation($score: Float!, $maxScore: Float!) { gradeAdd(input: "
        '{studentId: "G00001", subject: "Math", score: $score, maxScore: $maxScore}) '
        "{ __typename } }"
    )
    values = {b"score": b"50", b"maxScore": b"100", variable.encode(): literal}
    content = (
        b'{"query": '
        + json.dumps(query).encode()
        + b', "variables": {"score": '
        + values[b"score"]
        + b', "maxScore": '
        + values[b"maxScore"]
        + b"}}"
    )

    response = await api.http.post(
        "/graphql", content=content, headers={"content-type": "application/json"}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert only_error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    assert "data" not in body  # refused while coercing variables: never executed
    assert await rows_in("grades") == 0


async def test_grades_add_refuses_non_finite_numbers(api, rows_in, two_students):
    content = (
        b'{"query": '
        + json.dumps(GRADES_ADD_QUERY).encode()
        + b', "variables": {"input": [{"studentId": "G00001", "subject": "Math", '
        b'"score": 50}, {"studentId": "G00001", "subject": "Math", "score": NaN}]}}'
    )

    response = await api.http.post(
        "/graphql", content=content, headers={"content-type": "application/json"}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert only_error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    assert await rows_in("grades") == 0


# --- gradeUpdate -----------------------------------------------------------------------


@pytest.fixture
async def grade(api: Any, two_students: tuple[str, str]) -> dict[str, Any]:
    return await add_grade(
        api,
        "G00001",
        subject="Math",
        score=40.0,
        maxScore=50.0,
        recordedAt="2025-10-01T09:00:00Z",
    )


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


# --- gradesAdd -------------------------------------------------------------------------


def batch(*student_ids: str, **overrides: Any) -> list[dict[str, Any]]:
    return [grade_input(student_id, **overrides) for student_id in student_ids]


async def test_grades_add_inserts_every_row(api, rows_in, two_students):
    rows = batch("G00001", "G00002", "G00001")
    rows[1]["subject"] = "Art"
    del rows[2]["maxScore"], rows[2]["recordedAt"]

    result = await api.execute(GRADES_ADD, input=rows)

    assert result["gradesAdd"] == {
        "__typename": "GradesAddSuccess",
        "inserted": 3,
        "replayed": False,
    }
    assert await rows_in("grades") == 3
    listed = await api.execute(GRADES, studentId="G00002")
    assert [
        (e["node"]["subject"], e["node"]["score"]) for e in listed["grades"]["edges"]
    ] == [("Art", 80.0)]


async def test_grades_add_of_an_empty_list_inserts_nothing(api, rows_in):
    result = await api.execute(GRADES_ADD, input=[])

    assert result["gradesAdd"] == {
        "__typename": "GradesAddSuccess",
        "inserted": 0,
        "replayed": False,
    }
    assert await rows_in("grades") == 0


async def test_grades_add_lists_every_invalid_row_and_writes_nothing(
    api, rows_in, two_students
):
    rows = [
        grade_input("G00001"),
        grade_input("G00001", score=-1.0),
        grade_input("G00002", subject=""),
        grade_input("G00002"),
        grade_input("G00001", subject="s" * 65, maxScore=0.0),
        grade_input("NOBODY"),
        grade_input("G00001", score=101.0),
        grade_input("G00002", subject="Art\x00"),
    ]

    result = await api.execute(GRADES_ADD, input=rows)

    payload = result["gradesAdd"]
    assert payload["__typename"] == "InvalidRowsError"
    assert row_errors(payload) == [
        (1, None, "score", "OUT_OF_RANGE"),
        (2, None, "subject", "REQUIRED"),
        (4, None, "maxScore", "OUT_OF_RANGE"),
        (4, None, "subject", "TOO_LONG"),
        (5, None, "studentId", "NOT_FOUND"),
        (6, None, "score", "OUT_OF_RANGE"),
        (7, None, "subject", "INVALID_FORMAT"),
    ]
    assert await rows_in("grades") == 0


async def test_grades_add_reports_an_unknown_student_row(api, rows_in, two_students):
    result = await api.execute(GRADES_ADD, input=batch("G00001", "NOBODY", "G00002"))

    payload = result["gradesAdd"]
    assert payload["__typename"] == "InvalidRowsError"
    assert row_errors(payload) == [(1, None, "studentId", "NOT_FOUND")]
    assert await rows_in("grades") == 0


async def test_grades_add_refuses_more_rows_than_the_batch_limit(make_api, scratch_url):
    api = await make_api(scratch_url, max_batch_size=3)
    await create_student(api, studentId="G00001")

    refused = await api.execute(GRADES_ADD, input=batch(*["G00001"] * 4))

    payload = refused["gradesAdd"]
    assert payload["__typename"] == "InvalidRowsError"
    assert row_errors(payload) == [(-1, None, "input", "TOO_MANY_ROWS")]
    assert await count_rows(api, "grades") == 0

    accepted = await api.execute(GRADES_ADD, input=batch(*["G00001"] * 3))

    assert accepted["gradesAdd"] == {
        "__typename": "GradesAddSuccess",
        "inserted": 3,
        "replayed": False,
    }
    assert await count_rows(api, "grades") == 3


async def test_grades_add_replays_the_same_key_and_payload(api, rows_in, two_students):
    rows = batch("G00001", "G00002")

    first = await api.execute(GRADES_ADD, input=rows, key="batch-1")
    again = await api.execute(GRADES_ADD, input=rows, key="batch-1")

    assert first["gradesAdd"] == {
        "__typename": "GradesAddSuccess",
        "inserted": 2,
        "replayed": False,
    }
    assert again["gradesAdd"] == {
        "__typename": "GradesAddSuccess",
        "inserted": 2,
        "replayed": True,
    }
    assert await rows_in("grades") == 2


async def test_grades_add_refuses_the_same_key_with_another_payload(
    api, rows_in, two_students
):
    await api.execute(GRADES_ADD, input=batch("G00001", "G00002"), key="batch-1")

    result = await api.execute(
        GRADES_ADD, input=batch("G00001", "G00002", score=81.0), key="batch-1"
    )

    payload = result["gradesAdd"]
    assert payload["__typename"] == "IdempotencyKeyReusedError"
    assert payload["message"] == (
        "idempotency key 'batch-1' was already used for a different payload"
    )
    assert await rows_in("grades") == 2


async def test_grades_add_without_a_key_inserts_again(api, rows_in, two_students):
    rows = batch("G00001")

    await api.execute(GRADES_ADD, input=rows)
    again = await api.execute(GRADES_ADD, input=rows)

    assert again["gradesAdd"]["replayed"] is False
    assert await rows_in("grades") == 2


async def test_grades_add_refused_batch_does_not_use_up_its_key(
    api, rows_in, two_students
):
    refused = await api.execute(GRADES_ADD, input=batch("G00001", score=-1.0), key="k")
    accepted = await api.execute(GRADES_ADD, input=batch("G00001"), key="k")

    assert refused["gradesAdd"]["__typename"] == "InvalidRowsError"
    assert accepted["gradesAdd"] == {
        "__typename": "GradesAddSuccess",
        "inserted": 1,
        "replayed": False,
    }
    assert await rows_in("grades") == 1


@pytest.mark.parametrize(("key", "code"), [("k" * 201, "TOO_LONG"), ("", "REQUIRED")])
async def test_grades_add_refuses_a_bad_idempotency_key(
    api, rows_in, two_students, key, code
):
    result = await api.execute(GRADES_ADD, input=batch("G00001"), key=key)

    payload = result["gradesAdd"]
    assert payload["__typename"] == "InvalidRowsError"
    assert row_errors(payload) == [(-1, None, "idempotencyKey", code)]
    assert await rows_in("grades") == 0
    assert await rows_in("idempotency_keys") == 0


async def test_grades_add_accepts_a_key_of_200_characters(api, rows_in, two_students):
    rows = batch("G00001")

    first = await api.execute(GRADES_ADD, input=rows, key="k" * 200)
    again = await api.execute(GRADES_ADD, input=rows, key="k" * 200)

    assert first["gradesAdd"]["replayed"] is False
    assert again["gradesAdd"]["replayed"] is True
    assert await rows_in("grades") == 1
