"""Roles on writes: refused writes write nothing, allowed writes per role."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from resolvers.viewer import Viewer
from tests.factories.roles import (
    ADMIN,
    CLASS_AGGREGATES_DOC,
    GRADE_ADD,
    GRADES_ADD,
    ME,
    SCHOOL,
    STUDENT_CREATE,
    TEACHER,
    forbidden,
    grade_row,
    run,
    schema_of,
    state,
)

# A teacher whose credentials list no levels: every level.
ALL_LEVELS_TEACHER = Viewer(identity="user:head", role="teacher", anonymous=False)


# --- writes on a scratch database ---------------------------------------------------

WRITERS = {"teacher": TEACHER, "student": ME}
GRADE_UPDATE = """
mutation($id: ID!, $input: GradeUpdateInput!) {
  gradeUpdate(id: $id, input: $input) { __typename }
}
"""
GRADE_DELETE = "mutation($id: ID!) { gradeDelete(id: $id) { __typename } }"


NEW_STUDENT = {
    "input": {
        "studentId": "NEW",
        "name": "New",
        "email": "new@school.example",
        "gradeLevel": 6,
    }
}
STUDENT_UPDATE = (
    'mutation($id: String!) { studentUpdate(studentId: $id, input: {name: "X"}) '
    "{ __typename } }"
)
STUDENT_DELETE = (
    "mutation($id: String!) { studentDelete(studentId: $id, cascade: true) "
    "{ __typename } }"
)
COST_SUMMARY_WRITE = "mutation { costSummaryWrite { __typename } }"
SCORE = {"score": 9.0}
MOVE = {"studentId": "AWAY"}

# (role, document, variables with grade ids as "<grade:STUDENT>", refused field)
REFUSED_WRITES = [
    ("teacher", STUDENT_CREATE, NEW_STUDENT, "studentCreate"),
    ("student", STUDENT_CREATE, NEW_STUDENT, "studentCreate"),
    ("teacher", STUDENT_UPDATE, {"id": "PEER"}, "studentUpdate"),
    ("student", STUDENT_UPDATE, {"id": "MINE"}, "studentUpdate"),
    ("teacher", STUDENT_DELETE, {"id": "PEER"}, "studentDelete"),
    ("student", STUDENT_DELETE, {"id": "MINE"}, "studentDelete"),
    ("teacher", GRADE_ADD, {"id": "AWAY"}, "gradeAdd"),
    ("student", GRADE_ADD, {"id": "MINE"}, "gradeAdd"),
    # Refused before anything else: no NotFoundError or InvalidInputError to learn from.
    ("student", GRADE_ADD, {"id": "NOBODY"}, "gradeAdd"),
    ("student", GRADE_ADD, {"id": "MINE", "score": 500.0}, "gradeAdd"),
    ("teacher", GRADES_ADD, {"input": [grade_row("PEER"), grade_row("AWAY")]}, "gradesAdd"),
    ("student", GRADES_ADD, {"input": [grade_row("MINE")]}, "gradesAdd"),
    ("teacher", GRADE_UPDATE, {"id": "<grade:AWAY>", "input": SCORE}, "gradeUpdate"),
    # A maxScore below the stored score would say "score must be between 0 and 1":
    # refused first, so the stored score cannot be probed.
    ("teacher", GRADE_UPDATE, {"id": "<grade:AWAY>", "input": {"maxScore": 1.0}}, "gradeUpdate"),
    ("teacher", GRADE_UPDATE, {"id": "<grade:AWAY>", "input": {"score": 1e9}}, "gradeUpdate"),
    # Moving a grade of their level to a student outside it.
    ("teacher", GRADE_UPDATE, {"id": "<grade:PEER>", "input": MOVE}, "gradeUpdate"),
    ("student", GRADE_UPDATE, {"id": "<grade:MINE>", "input": SCORE}, "gradeUpdate"),
    ("teacher", GRADE_DELETE, {"id": "<grade:AWAY>"}, "gradeDelete"),
    ("student", GRADE_DELETE, {"id": "<grade:MINE>"}, "gradeDelete"),
    ("teacher", COST_SUMMARY_WRITE, {}, "costSummaryWrite"),
    ("student", COST_SUMMARY_WRITE, {}, "costSummaryWrite"),
]  # fmt: skip


def _with_grade_ids(value: Any, grade_ids: dict[str, str]) -> Any:
    if isinstance(value, str) and value.startswith("<grade:"):
        return grade_ids[value[len("<grade:") : -1]]
    if isinstance(value, dict):
        return {k: _with_grade_ids(v, grade_ids) for k, v in value.items()}
    return value


GRADES_ADD_KEYED = """
mutation($input: [GradeAddInput!]!, $key: String) {
  gradesAdd(input: $input, idempotencyKey: $key) {
    __typename ... on GradesAddSuccess { inserted replayed }
  }
}
"""


async def test_idempotency_keys_are_per_caller(
    api: Any, rows_in: Any, school: dict[str, str]
) -> None:
    batch = {"input": [grade_row("AWAY", 58.0)], "key": "math-final"}
    stored, _ = await run(api, ADMIN, GRADES_ADD_KEYED, **batch)
    grades_before = await rows_in("grades")

    # The same key and payload from a teacher outside AWAY's level: neither a
    # replay (which would confirm the score) nor a write.
    probe, errors = await run(api, TEACHER, GRADES_ADD_KEYED, **batch)
    other_guess, other_errors = await run(
        api,
        TEACHER,
        GRADES_ADD_KEYED,
        input=[grade_row("AWAY", 40.0)],
        key="math-final",
    )
    replay, _ = await run(api, ADMIN, GRADES_ADD_KEYED, **batch)

    assert stored["gradesAdd"] == {
        "__typename": "GradesAddSuccess",
        "inserted": 1,
        "replayed": False,
    }
    assert probe is None and errors == forbidden("gradesAdd")
    assert other_guess is None and other_errors == forbidden("gradesAdd")
    assert replay["gradesAdd"]["replayed"] is True
    assert await rows_in("grades") == grades_before


@pytest.mark.parametrize(
    ("role", "document", "variables", "field"),
    REFUSED_WRITES,
    ids=[f"{case[0]}-{case[3]}-{i}" for i, case in enumerate(REFUSED_WRITES)],
)
async def test_refused_writes_write_nothing(
    api: Any,
    rows_in: Any,
    school: dict[str, str],
    role: str,
    document: str,
    variables: dict[str, Any],
    field: str,
) -> None:
    before = await state(api)
    grades_before = await rows_in("grades")
    costs_csv = Path("costs.csv")
    csv_before = costs_csv.read_text() if costs_csv.exists() else None

    data, errors = await run(
        api, WRITERS[role], document, **_with_grade_ids(variables, school)
    )

    # Mutation results are non-null unions: a refused one nulls the whole data.
    assert data is None
    assert errors == forbidden(field)
    assert await state(api) == before
    assert await rows_in("grades") == grades_before == len(SCHOOL)
    assert (costs_csv.read_text() if costs_csv.exists() else None) == csv_before


@pytest.mark.parametrize(
    ("viewer", "document", "variables", "result"),
    [
        (TEACHER, GRADE_ADD, {"id": "PEER"}, {"gradeAdd": "GradeAddSuccess"}),
        (
            TEACHER,
            GRADES_ADD,
            {"input": [grade_row("PEER"), grade_row("MINE")]},
            {"gradesAdd": "GradesAddSuccess"},
        ),
        (
            TEACHER,
            GRADE_UPDATE,
            {"id": "<grade:PEER>", "input": {"score": 99.0}},
            {"gradeUpdate": "GradeUpdateSuccess"},
        ),
        (
            TEACHER,
            GRADE_DELETE,
            {"id": "<grade:MINE>"},
            {"gradeDelete": "GradeDeleteSuccess"},
        ),
        (
            ALL_LEVELS_TEACHER,
            GRADE_ADD,
            {"id": "AWAY"},
            {"gradeAdd": "GradeAddSuccess"},
        ),
        (
            ADMIN,
            COST_SUMMARY_WRITE,
            {},
            {"costSummaryWrite": "CostSummaryWriteSuccess"},
        ),
    ],
)
async def test_allowed_writes(
    api: Any,
    school: dict[str, str],
    viewer: Viewer,
    document: str,
    variables: dict[str, Any],
    result: dict[str, str],
) -> None:
    before = await state(api)

    data, errors = await run(
        api, viewer, document, **_with_grade_ids(variables, school)
    )

    assert errors == []
    assert data == {field: {"__typename": name} for field, name in result.items()}
    changed = await state(api) != before
    assert changed == ("costSummaryWrite" not in result)


async def test_a_teachers_class_analytics_follow_grade_writes(
    api: Any, school: dict[str, str]
) -> None:
    """The teacher's own cache entry (their levels) is dropped by a write."""
    first, _ = await run(api, TEACHER, CLASS_AGGREGATES_DOC)
    assert (
        first["classAnalytics"]["gradeCount"],
        first["classAnalytics"]["studentCount"],
    ) == (2, 2)

    added, _ = await run(api, ADMIN, GRADE_ADD, id="PEER", score=10.0)
    assert added == {"gradeAdd": {"__typename": "GradeAddSuccess"}}
    second, _ = await run(api, TEACHER, CLASS_AGGREGATES_DOC)

    assert second["classAnalytics"]["gradeCount"] == 3
    assert second["classAnalytics"]["min"] == 10.0


@pytest.mark.parametrize(
    ("document", "extra"),
    [(GRADE_UPDATE, {"input": SCORE}), (GRADE_DELETE, {})],
)
async def test_a_refused_grade_id_does_not_name_its_student(
    api: Any, school: dict[str, str], document: str, extra: dict[str, Any]
) -> None:
    """A teacher probing grade ids outside their levels learns nothing of whose
    they are."""
    grade_id = school["AWAY"]

    result = await schema_of(api).execute(
        document,
        variable_values={"id": grade_id, **extra},
        context_value=api.services.context(viewer=WRITERS["teacher"]),
    )

    assert result.data is None
    [error] = result.errors or []
    assert (error.extensions or {})["code"] == "FORBIDDEN"
    assert error.message == f"you may not write grade {grade_id!r}"
