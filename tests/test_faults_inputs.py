"""Faults: generated input (hypothesis). Mutation inputs with any Unicode (NUL and
lone surrogates included), huge and tiny numbers and dates at the edges, sent as
raw JSON; CSV files with bad quoting, byte-order marks, CRLF, empty lines,
duplicate or missing columns, through `gradesImport`. Never a 500 or an unhandled
error, never a partial write: each answer is a success that wrote exactly what it
says, or a refusal that wrote nothing and carries a code (and, for a field, which
one)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from db.validation import InputErrorCode, check_text
from tests.factories import create_student
from tests.factories.imports import GRADES_IMPORT, wait_for_job

pytestmark = pytest.mark.faults

EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same inputs on every run, and in CI
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
STUDENT = "H00001"
COUNT = "{ grades(first: 1) { totalCount } }"
GRADE_ADD = (
    "mutation($in: GradeAddInput!) { gradeAdd(input: $in) { __typename "
    "... on GradeAddSuccess { grade { id score } } "
    "... on InvalidInputError { field code message } "
    "... on NotFoundError { message } } }"
)
GRADES_ADD = (
    "mutation($in: [GradeAddInput!]!) { gradesAdd(input: $in) { __typename "
    "... on GradesAddSuccess { inserted } "
    "... on InvalidRowsError { rows { index field code } } } }"
)

texts = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8"), max_size=5).map(lambda t: t + "\x00"),
    st.sampled_from(["", " ", "\ud800", "x\udfff", "\u202e", "a" * 500, STUDENT]),
)
numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.sampled_from([0, 0.0, -0.0, 5e-324, 1e308, 100, 100.0000001, -1, "88", None]),
)
times = st.one_of(
    st.sampled_from(
        [
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2025-02-29T00:00:00Z",
            "2024-02-29T23:59:59.999999+14:00",
            "2025-10-01T09:00:00-12:00",
            "2025-10-01",
            "not a time",
            "",
        ]
    ),
    st.text(max_size=30),
    st.none(),
)
grade_inputs = st.fixed_dictionaries(
    {"studentId": st.one_of(st.just(STUDENT), texts), "subject": texts},
    optional={"score": numbers, "maxScore": numbers, "recordedAt": times},
)


def raw_json(body: dict[str, Any]) -> bytes:
    """The body as a client might send it: lone surrogates escaped (\\ud800),
    integers of any size."""
    return json.dumps(body, ensure_ascii=True).encode()


async def send(api: Any, query: str, variables: dict[str, Any]) -> tuple[int, Any]:
    response = await api.http.post(
        "/graphql",
        content=raw_json({"query": query, "variables": variables}),
        headers={"content-type": "application/json"},
    )
    assert response.status_code != 500, response.text
    body = response.json()
    for error in body.get("errors") or []:
        assert error["extensions"]["code"], error  # every refusal has its code
        assert error["extensions"]["code"] != "INTERNAL_SERVER_ERROR", error
    return response.status_code, body


async def grade_count(api: Any) -> int:
    body = await api.post(COUNT)
    count: int = body["data"]["grades"]["totalCount"]
    return count


@pytest.fixture
async def target(api: Any) -> Any:
    await create_student(api, studentId=STUDENT)
    return api


@EXAMPLES
@given(grade=grade_inputs)
async def test_generated_grade_inputs_are_written_whole_or_refused_with_a_code(
    target: Any, grade: dict[str, Any]
) -> None:
    before = await grade_count(target)
    _, body = await send(target, GRADE_ADD, {"in": grade})
    result = (body.get("data") or {}).get("gradeAdd")
    after = await grade_count(target)
    if result is None:  # refused before running (a variable that cannot be coerced)
        assert body["errors"]
        assert after == before
    elif result["__typename"] == "GradeAddSuccess":
        assert after == before + 1
    else:
        assert after == before
        if result["__typename"] == "InvalidInputError":
            assert result["field"] and result["code"], result


@EXAMPLES
@given(rows=st.lists(grade_inputs, min_size=1, max_size=8))
async def test_generated_batches_are_all_or_nothing(
    target: Any, rows: list[dict[str, Any]]
) -> None:
    before = await grade_count(target)
    _, body = await send(target, GRADES_ADD, {"in": rows})
    result = (body.get("data") or {}).get("gradesAdd")
    after = await grade_count(target)
    if result is not None and result["__typename"] == "GradesAddSuccess":
        assert result["inserted"] == len(rows)
        assert after == before + len(rows)
    else:
        assert after == before
        if result is not None:
            assert result["rows"], result
            for problem in result["rows"]:
                assert problem["field"] and problem["code"], problem


HEADER = ["student_id", "subject", "score", "max_score", "recorded_at"]
cells = st.one_of(
    st.sampled_from([STUDENT, "Math", "88", "100", "2025-10-01T09:00:00Z", ""]),
    st.text(max_size=12),
    st.sampled_from(['"', '""', '"a,b"', '"unclosed', "a\nb", "\ufeff", "1e999"]),
)
csv_rows = st.lists(st.lists(cells, min_size=0, max_size=7), max_size=6)
headers = st.one_of(
    st.just(HEADER),
    st.lists(st.sampled_from([*HEADER, "extra", ""]), max_size=7),
    st.just([*HEADER, "score"]),  # a duplicate column
    st.just(HEADER[:3]),  # columns missing
)


@st.composite
def csv_files(draw: Any) -> str:
    header = draw(headers)
    rows = draw(csv_rows)
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    lines = [",".join(header), *(",".join(row) for row in rows)]
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), "")  # an empty line
    text = newline.join(lines) + draw(st.sampled_from(["", newline]))
    return ("\ufeff" if draw(st.booleans()) else "") + text


@EXAMPLES
@given(csv=csv_files())
async def test_generated_csv_files_import_whole_or_not_at_all(
    target: Any, csv: str
) -> None:
    before = await grade_count(target)
    _, body = await send(target, GRADES_IMPORT, {"csv": csv})
    result = (body.get("data") or {}).get("gradesImport")
    if result is None or result["__typename"] != "GradesImportSuccess":
        assert await grade_count(target) == before
        if result is not None and result["__typename"] == "InvalidInputError":
            assert result["field"] and result["code"], result
        return
    job = await wait_for_job(target, result["job"]["id"])
    after = await grade_count(target)
    if job["status"] == "SUCCEEDED":
        assert after == before + job["total"]
    else:
        assert job["status"] == "FAILED", job
        assert after == before
        assert job["failureCode"] or job["errors"], job
        for problem in job["errors"]:
            assert problem["field"] and problem["code"], problem


async def test_a_lone_surrogate_anywhere_in_a_request_is_refused_with_a_code(
    target: Any,
) -> None:
    """Found by the generated inputs: "\\ud800" is JSON but not Unicode text; it
    reached the database and came back as an unexpected error."""
    for query, variables in (
        ("query($s: String) { students(search: $s) { totalCount } }", {"s": "\ud800"}),
        (GRADE_ADD, {"in": {"studentId": STUDENT, "subject": "x\udfff", "score": 1}}),
    ):
        status, body = await send(target, query, variables)
        assert status == 400, body
        [error] = body["errors"]
        assert "lone UTF-16 surrogate" in error["message"]
    # A WebSocket message does not pass through the HTTP envelope: the input check
    # refuses it too.
    problem = check_text("subject", "x\udfff", 50)
    assert problem is not None and problem.code is InputErrorCode.INVALID_FORMAT
