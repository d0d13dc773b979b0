"""gradeAdd and gradesAdd: validation, stored rows, batch all-or-nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from tests.factories import GRADE_ADD, add_grade, create_student, grade_input
from tests.factories.grades import (
    GRADES,
    GRADES_ADD,
    GRADES_ADD_QUERY,
    only_error,
    stored_grade,
)


def row_errors(payload: dict[str, Any]) -> list[tuple[int, Any, str, str]]:
    """(index, line, field, code) of each row error, in index then field order."""
    assert all(row["message"] for row in payload["rows"])
    return sorted(
        (r["index"], r["line"], r["field"], r["code"]) for r in payload["rows"]
    )


async def count_rows(api: Any, table: str) -> int:
    async with api.services.database.sessions() as session:
        return int(
            (await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
        )


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
