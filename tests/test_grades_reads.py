"""grades, subjects and Student.grades: paging, filters and ordering."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from gql import gql
from sqlalchemy import select, text

from tests.conftest import SEEDED_GRADES_PER_STUDENT, SEEDED_STUDENTS
from tests.factories import grade_input
from tests.factories.grades import (
    GRADES,
    GRADES_ADD,
    GRADES_QUERY,
    STORED_COLUMNS,
    STUDENT_GRADES,
    G,
    global_grade_id,
    only_error,
)
from tests.factories.pages import (
    assert_no_offset,
    page_statement,
    sent_statements,
    sqlite_plan,
)

SUBJECTS = gql("{ subjects }")


def cursor_of(*parts: Any) -> str:
    raw = json.dumps(list(parts), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def as_node(row: Any) -> dict[str, Any]:
    """A stored grade row as the API shows it."""
    return {
        "id": global_grade_id(row.id),
        "studentId": row.student_id,
        "subject": row.subject,
        "score": row.score,
        "maxScore": row.max_score,
        "percentage": 100 * row.score / row.max_score,
        "recordedAt": row.recorded_at.isoformat() + "Z",
    }


async def all_grade_pages(api: Any, **variables: Any) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []
    after = None
    while True:
        page = (await api.execute(GRADES, after=after, **variables))["grades"]
        nodes.extend(edge["node"] for edge in page["edges"])
        if not page["pageInfo"]["hasNextPage"]:
            return nodes
        after = page["pageInfo"]["endCursor"]


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
        stored = (await session.execute(select(G.id, *STORED_COLUMNS))).all()
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
        expected = [global_grade_id(row[0]) for row in rows]
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


async def test_a_deep_grades_page_seeks_its_cursor(seeded_api, backend):
    """Keyset pagination: the last of 72 pages asks for what it shows past its
    cursor (a row value the recorded_at index is searched with), never an OFFSET."""
    after, pages = None, 0
    while True:
        with sent_statements(seeded_api) as sent:
            page = (await seeded_api.execute(GRADES, first=20, after=after))["grades"]
        pages += 1
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]

    statement, parameters = page_statement(sent, "grades")
    assert pages == SEEDED_STUDENTS * SEEDED_GRADES_PER_STUDENT // 20
    assert len(page["edges"]) == 20
    assert "(grades.recorded_at, grades.id) >" in statement
    assert_no_offset(backend, statement, parameters, limit=21)
    if backend == "sqlite":
        assert await sqlite_plan(seeded_api, (statement, parameters)) == [
            "SEARCH grades USING INDEX ix_grades_recorded_at (recorded_at>?)"
        ]
