"""Roles field by field: what admins, teachers and students may read and write. What a
role may not read is a FORBIDDEN error at its path and null, never data; lists are
filtered to what the viewer may read; refused writes write nothing."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from starlette.routing import Route

from monitoring.monitor import ALERTS, COSTS, METRICS
from resolvers import imports, live
from resolvers.jobs import ImportJob
from resolvers.viewer import Viewer
from tests.conftest import SEEDED_GRADES_PER_STUDENT, SEEDED_STUDENTS
from tests.factories import TEST_JWT_SECRET, bearer_header, jwt_token

TEACHER_LEVELS = frozenset({6, 10})
ADMIN = Viewer(identity="user:admin", role="admin", anonymous=False)
TEACHER = Viewer(
    identity="user:teacher",
    role="teacher",
    grade_levels=TEACHER_LEVELS,
    anonymous=False,
)
# A teacher whose credentials list no levels: every level.
ALL_LEVELS_TEACHER = Viewer(identity="user:head", role="teacher", anonymous=False)
# S00017 is in grade level 8 (outside the teacher's levels) and at risk.
STUDENT = Viewer(
    identity="user:student", role="student", student_id="S00017", anonymous=False
)
VIEWERS = {"admin": ADMIN, "teacher": TEACHER, "student": STUDENT}
# The policy as data: whom each role may read.
READABLE = {
    "admin": lambda student_id, level: True,
    "teacher": lambda student_id, level: level in TEACHER_LEVELS,
    "student": lambda student_id, level: student_id == STUDENT.student_id,
}


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


@pytest.fixture
async def levels(seeded_api: Any) -> dict[str, int]:
    """student_id -> grade level of the seeded database."""
    rows = await sql(seeded_api, "SELECT student_id, grade_level FROM students")
    return {student_id: level for student_id, level in rows}


async def test_the_seeded_students_the_tables_rely_on(levels: dict[str, int]) -> None:
    assert len(levels) == SEEDED_STUDENTS
    assert [levels[s] for s in ("S00001", "S00002", "S00003", "S00017")] == [
        1,
        10,
        6,
        8,
    ]
    assert sum(1 for level in levels.values() if level in TEACHER_LEVELS) == 30


# --- student and studentAnalytics: direct lookups ------------------------------------

STUDENT_DOC = """
query($id: String!) {
  student(studentId: $id) {
    studentId gradeLevel grades { studentId } analytics { gradeCount }
  }
  studentAnalytics(studentId: $id) { gradeCount }
}
"""

LOOKUPS = [
    # (role, studentId, readable, refused)
    ("admin", "S00001", True, False),
    ("admin", "S00017", True, False),
    ("admin", "NOBODY", False, False),
    ("teacher", "S00003", True, False),  # level 6
    ("teacher", "S00002", True, False),  # level 10
    ("teacher", "S00001", False, True),  # level 1
    ("teacher", "S00017", False, True),  # level 8
    ("teacher", "NOBODY", False, False),  # absent: null, as for anyone
    ("student", "S00017", True, False),  # themselves
    ("student", "S00001", False, True),
    ("student", "S00003", False, True),
    ("student", "NOBODY", False, True),  # refused unseen: no hint that it is absent
]


@pytest.mark.parametrize(("role", "student_id", "readable", "refused"), LOOKUPS)
async def test_student_and_student_analytics_lookups(
    seeded_api: Any,
    levels: dict[str, int],
    role: str,
    student_id: str,
    readable: bool,
    refused: bool,
) -> None:
    data, errors = await run(seeded_api, VIEWERS[role], STUDENT_DOC, id=student_id)

    if readable:
        assert data == {
            "student": {
                "studentId": student_id,
                "gradeLevel": levels[student_id],
                "grades": [{"studentId": student_id}] * SEEDED_GRADES_PER_STUDENT,
                "analytics": {"gradeCount": SEEDED_GRADES_PER_STUDENT},
            },
            "studentAnalytics": {"gradeCount": SEEDED_GRADES_PER_STUDENT},
        }
    else:
        assert data == {"student": None, "studentAnalytics": None}
    expected = [(("student",), "FORBIDDEN"), (("studentAnalytics",), "FORBIDDEN")]
    assert errors == (expected if refused else [])


# --- students and atRiskStudents: filtered lists --------------------------------------

STUDENTS_DOC = """
query($level: Int) {
  students(first: 100, gradeLevel: $level) {
    totalCount edges { node { studentId } } pageInfo { hasNextPage }
  }
}
"""


@pytest.mark.parametrize(
    ("role", "grade_level"),
    [
        ("admin", None),
        ("admin", 6),
        ("teacher", None),
        ("teacher", 6),
        ("teacher", 1),  # outside the teacher's levels: empty, not FORBIDDEN
        ("student", None),
        ("student", 8),
        ("student", 6),
    ],
)
async def test_students_are_filtered_to_what_the_viewer_may_read(
    seeded_api: Any, levels: dict[str, int], role: str, grade_level: int | None
) -> None:
    data, errors = await run(seeded_api, VIEWERS[role], STUDENTS_DOC, level=grade_level)

    matching = sorted(
        student_id
        for student_id, level in levels.items()
        if READABLE[role](student_id, level)
        and (grade_level is None or level == grade_level)
    )
    assert errors == []
    assert data == {
        "students": {
            "totalCount": len(matching),
            "edges": [{"node": {"studentId": s}} for s in matching[:100]],
            "pageInfo": {"hasNextPage": len(matching) > 100},
        }
    }


PAGE_DOC = """
query($after: String) {
  students(first: 7, after: $after, orderBy: GRADE_LEVEL, direction: DESC) {
    edges { node { studentId gradeLevel } } pageInfo { hasNextPage endCursor }
  }
}
"""


async def test_a_teachers_pages_stay_full_and_cursors_walk_their_students(
    seeded_api: Any, levels: dict[str, int]
) -> None:
    pages: list[list[tuple[str, int]]] = []
    after = None
    while True:
        data, errors = await run(seeded_api, TEACHER, PAGE_DOC, after=after)
        assert errors == []
        connection = data["students"]
        pages.append(
            [
                (e["node"]["studentId"], e["node"]["gradeLevel"])
                for e in connection["edges"]
            ]
        )
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["pageInfo"]["endCursor"]

    expected = sorted(
        ((s, level) for s, level in levels.items() if level in TEACHER_LEVELS),
        key=lambda pair: (pair[1], pair[0]),
        reverse=True,  # DESC orders ties by studentId descending too
    )
    assert [len(page) for page in pages] == [7, 7, 7, 7, 2]
    assert [pair for page in pages for pair in page] == expected


AT_RISK_DOC = (
    "{ atRiskStudents(first: 100) { totalCount edges { node { studentId } } } }"
)


async def test_at_risk_students_are_filtered_to_what_the_viewer_may_read(
    seeded_api: Any, levels: dict[str, int]
) -> None:
    everyone, errors = await run(seeded_api, ADMIN, AT_RISK_DOC)
    assert errors == []
    at_risk = [e["node"]["studentId"] for e in everyone["atRiskStudents"]["edges"]]
    assert everyone["atRiskStudents"]["totalCount"] == len(at_risk) == 10
    not_at_risk = Viewer(
        identity="user:s1", role="student", student_id="S00001", anonymous=False
    )
    assert "S00001" not in at_risk

    for viewer, expected in (
        (TEACHER, [s for s in at_risk if levels[s] in TEACHER_LEVELS]),
        (STUDENT, ["S00017"]),
        (not_at_risk, []),
    ):
        data, errors = await run(seeded_api, viewer, AT_RISK_DOC)
        assert errors == []
        assert data == {
            "atRiskStudents": {
                "totalCount": len(expected),
                "edges": [{"node": {"studentId": s}} for s in expected],
            }
        }
    assert [s for s in at_risk if levels[s] in TEACHER_LEVELS] == ["S00008", "S00023"]


# --- grades: a filtered list, or one student's (a direct lookup) --------------------

GRADES_DOC = """
query($id: String) {
  grades(studentId: $id, first: 100) { totalCount edges { node { id studentId } } }
}
"""


async def _first_grades(api: Any, where: str, **params: Any) -> list[dict[str, str]]:
    rows = await sql(
        api,
        f"SELECT id, student_id FROM grades WHERE {where} "
        "ORDER BY recorded_at, id LIMIT 100",
        **params,
    )
    return [{"node": {"id": str(row[0]), "studentId": row[1]}} for row in rows]


TEACHERS_GRADES = (
    "student_id IN (SELECT student_id FROM students WHERE grade_level IN (6, 10))"
)


@pytest.mark.parametrize(
    ("role", "student_id", "where", "total"),
    [
        ("admin", None, "1 = 1", SEEDED_STUDENTS * SEEDED_GRADES_PER_STUDENT),
        ("admin", "S00001", "student_id = 'S00001'", 12),
        ("teacher", None, TEACHERS_GRADES, 30 * 12),
        ("teacher", "S00003", "student_id = 'S00003'", 12),
        ("teacher", "S00001", None, None),  # level 1: FORBIDDEN
        ("teacher", "NOBODY", "student_id = 'NOBODY'", 0),
        ("student", None, "student_id = 'S00017'", 12),
        ("student", "S00017", "student_id = 'S00017'", 12),
        ("student", "S00001", None, None),
        ("student", "NOBODY", None, None),
    ],
)
async def test_grades_list_and_lookup(
    seeded_api: Any,
    role: str,
    student_id: str | None,
    where: str | None,
    total: int | None,
) -> None:
    data, errors = await run(seeded_api, VIEWERS[role], GRADES_DOC, id=student_id)

    if where is None:
        assert data == {"grades": None}
        assert errors == forbidden("grades")
        return
    counted = await sql(seeded_api, f"SELECT count(*) FROM grades WHERE {where}")
    assert counted == [(total,)]
    assert errors == []
    assert data == {
        "grades": {
            "totalCount": total,
            "edges": await _first_grades(seeded_api, where),
        }
    }


# --- classAnalytics: aggregates for everyone, names for admins and teachers ----------

AGGREGATES = """
studentCount gradeCount mean median stdDev min max letters { a b c d f }
histogram { from to count } subjects { subject count average min max latest }
"""
CLASS_DOC = f"""
query($level: Int) {{
  classAnalytics(gradeLevel: $level) {{
    {AGGREGATES}
    top {{ studentId name average }} bottom {{ studentId name average }}
  }}
}}
"""
CLASS_AGGREGATES_DOC = (
    f"query($level: Int) {{ classAnalytics(gradeLevel: $level) {{ {AGGREGATES} }} }}"
)


@pytest.mark.parametrize("grade_level", [None, 1, 8])
async def test_students_read_class_aggregates_but_not_names(
    seeded_api: Any, grade_level: int | None
) -> None:
    reference, errors = await run(seeded_api, ADMIN, CLASS_DOC, level=grade_level)
    assert errors == []
    assert len(reference["classAnalytics"]["top"]) == 5

    data, errors = await run(seeded_api, STUDENT, CLASS_DOC, level=grade_level)
    aggregates, aggregate_errors = await run(
        seeded_api, STUDENT, CLASS_AGGREGATES_DOC, level=grade_level
    )

    assert data == {
        "classAnalytics": {**reference["classAnalytics"], "top": None, "bottom": None}
    }
    assert errors == [
        (("classAnalytics", "bottom"), "FORBIDDEN"),
        (("classAnalytics", "top"), "FORBIDDEN"),
    ]
    expected = dict(reference["classAnalytics"])
    del expected["top"], expected["bottom"]
    assert aggregates == {"classAnalytics": expected}
    assert aggregate_errors == []


@pytest.mark.parametrize("grade_level", [6, 10])
async def test_teachers_read_everything_of_their_levels(
    seeded_api: Any, levels: dict[str, int], grade_level: int
) -> None:
    reference, _ = await run(seeded_api, ADMIN, CLASS_DOC, level=grade_level)

    data, errors = await run(seeded_api, TEACHER, CLASS_DOC, level=grade_level)

    assert errors == []
    assert data == reference
    top = data["classAnalytics"]["top"]
    assert len(top) == 5
    assert {levels[row["studentId"]] for row in top} == {grade_level}


@pytest.mark.parametrize("grade_level", [1, 8])
async def test_teachers_are_refused_other_levels(
    seeded_api: Any, grade_level: int
) -> None:
    data, errors = await run(seeded_api, TEACHER, CLASS_DOC, level=grade_level)

    assert data == {"classAnalytics": None}
    assert errors == forbidden("classAnalytics")


async def test_a_teachers_class_analytics_without_a_level_cover_their_levels(
    seeded_api: Any,
) -> None:
    scope = TEACHERS_GRADES
    ((grades, students, mean),) = await sql(
        seeded_api,
        "SELECT count(*), count(DISTINCT student_id), "
        f"avg(100.0 * score / max_score) FROM grades WHERE {scope}",
    )
    best = await sql(
        seeded_api,
        "SELECT student_id, avg(100.0 * score / max_score) AS a FROM grades "
        f"WHERE {scope} GROUP BY student_id ORDER BY a DESC, student_id LIMIT 5",
    )

    data, errors = await run(seeded_api, TEACHER, CLASS_DOC)

    assert errors == []
    stats = data["classAnalytics"]
    assert (stats["gradeCount"], stats["studentCount"]) == (grades, students)
    assert (grades, students) == (360, 30)
    assert stats["mean"] == pytest.approx(float(mean), rel=1e-12)
    assert [row["studentId"] for row in stats["top"]] == [row[0] for row in best]


async def test_class_analytics_cache_entries_never_cross_roles(
    make_api: Any, seeded_url: str
) -> None:
    """Each order on a cold cache: whoever asks first, the others get their own."""
    for order in ((ADMIN, TEACHER, STUDENT), (TEACHER, STUDENT, ADMIN)):
        api = await make_api(seeded_url)
        seen = {}
        for viewer in order:
            seen[viewer.role] = await run(api, viewer, CLASS_DOC)
        admin, teacher, student = seen["admin"], seen["teacher"], seen["student"]
        assert admin[0]["classAnalytics"]["studentCount"] == SEEDED_STUDENTS
        assert len(admin[0]["classAnalytics"]["top"]) == 5
        assert teacher[0]["classAnalytics"]["studentCount"] == 30
        assert student[0]["classAnalytics"] == {
            **admin[0]["classAnalytics"],
            "top": None,
            "bottom": None,
        }
        assert student[1] == [
            (("classAnalytics", "bottom"), "FORBIDDEN"),
            (("classAnalytics", "top"), "FORBIDDEN"),
        ]


async def test_a_cached_student_record_is_still_refused_to_others(
    seeded_api: Any,
) -> None:
    loaded, _ = await run(seeded_api, ADMIN, STUDENT_DOC, id="S00001")
    assert loaded["student"]["studentId"] == "S00001"
    seeded_api.counter.reset()

    for viewer in (TEACHER, STUDENT):
        data, errors = await run(seeded_api, viewer, STUDENT_DOC, id="S00001")
        assert data == {"student": None, "studentAnalytics": None}
        assert errors == [
            (("student",), "FORBIDDEN"),
            (("studentAnalytics",), "FORBIDDEN"),
        ]
    assert seeded_api.counter.statements == []  # answered from the shared cache


# --- statement counts: filtering is SQL, not extra statements -----------------------

README_DOC = """
{ students(first: 100) { edges { node { grades { score } analytics { average } } } } }
"""


@pytest.mark.parametrize("role", ["admin", "teacher", "student"])
async def test_the_readme_query_takes_three_statements_for_every_role(
    make_api: Any, seeded_url: str, role: str
) -> None:
    api = await make_api(seeded_url)  # a cold cache
    api.counter.reset()

    data, errors = await run(api, VIEWERS[role], README_DOC)

    assert errors == []
    assert (
        len(data["students"]["edges"])
        == {
            "admin": 100,
            "teacher": 30,
            "student": 1,
        }[role]
    )
    assert len(api.counter.reads) == 3


async def test_a_teachers_grades_lookup_adds_one_statement_on_a_cold_cache(
    make_api: Any, seeded_url: str
) -> None:
    counts = {}
    for viewer in (ADMIN, TEACHER):
        api = await make_api(seeded_url)
        api.counter.reset()
        data, errors = await run(api, viewer, GRADES_DOC, id="S00003")
        assert errors == []
        assert data["grades"]["totalCount"] == 12
        counts[viewer.role] = len(api.counter.reads)
        api.counter.reset()
        await run(api, viewer, GRADES_DOC, id="S00003")
        counts[viewer.role + " warm"] = len(api.counter.reads)

    assert counts["teacher"] == counts["admin"] + 1  # the student's grade level
    assert counts["teacher warm"] == counts["admin warm"]


# --- monitoring queries -------------------------------------------------------------

MONITORING_DOC = """
{ metrics { environment } alerts { rule } costs { apiRequests }
  slowestResolvers(first: 100) { field } }
"""


@pytest.mark.parametrize("role", ["admin", "teacher"])
async def test_operators_read_the_monitoring_queries(
    seeded_api: Any, role: str
) -> None:
    data, errors = await run(seeded_api, VIEWERS[role], MONITORING_DOC)

    assert errors == []
    assert data["metrics"] == {"environment": "development"}
    assert isinstance(data["alerts"], list)
    assert isinstance(data["costs"]["apiRequests"], int)
    assert isinstance(data["slowestResolvers"], list)


async def test_students_are_refused_every_monitoring_query(seeded_api: Any) -> None:
    data, errors = await run(seeded_api, STUDENT, MONITORING_DOC)

    assert data == {
        "metrics": None,
        "alerts": None,
        "costs": None,
        "slowestResolvers": None,
    }
    assert errors == [
        (("alerts",), "FORBIDDEN"),
        (("costs",), "FORBIDDEN"),
        (("metrics",), "FORBIDDEN"),
        (("slowestResolvers",), "FORBIDDEN"),
    ]


async def test_the_role_is_checked_before_the_arguments(seeded_api: Any) -> None:
    document = "{ alerts(last: 0) { rule } }"

    assert await run(seeded_api, STUDENT, document) == (
        {"alerts": None},
        forbidden("alerts"),
    )
    assert await run(seeded_api, TEACHER, document) == (
        {"alerts": None},
        [(("alerts",), "BAD_USER_INPUT")],
    )


# --- writes on a scratch database ---------------------------------------------------

# MINE is the student viewer's own record; PEER shares the level; AWAY does not.
SCHOOL = (("MINE", 6), ("PEER", 6), ("AWAY", 1))
ME = Viewer(identity="user:mine", role="student", student_id="MINE", anonymous=False)
WRITERS = {"teacher": TEACHER, "student": ME}

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
GRADE_UPDATE = """
mutation($id: ID!, $input: GradeUpdateInput!) {
  gradeUpdate(id: $id, input: $input) { __typename }
}
"""
GRADE_DELETE = "mutation($id: ID!) { gradeDelete(id: $id) { __typename } }"


@pytest.fixture
async def school(api: Any) -> dict[str, str]:
    """Three students with one grade each; the grade id of each student."""
    grade_ids = {}
    for student_id, level in SCHOOL:
        created, errors = await run(
            api,
            ADMIN,
            STUDENT_CREATE,
            input={
                "studentId": student_id,
                "name": student_id.title(),
                "email": f"{student_id.lower()}@school.example",
                "gradeLevel": level,
            },
        )
        assert errors == [], errors
        assert created == {"studentCreate": {"__typename": "StudentCreateSuccess"}}
        added, errors = await run(api, ADMIN, GRADE_ADD, id=student_id)
        assert added == {"gradeAdd": {"__typename": "GradeAddSuccess"}}, errors
        ((grade_id,),) = await sql(
            api, "SELECT id FROM grades WHERE student_id = :s", s=student_id
        )
        grade_ids[student_id] = str(grade_id)
    return grade_ids


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


def _row(student_id: str, score: float = 70.0) -> dict[str, Any]:
    return {"studentId": student_id, "subject": "Art", "score": score}


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
    ("teacher", GRADES_ADD, {"input": [_row("PEER"), _row("AWAY")]}, "gradesAdd"),
    ("student", GRADES_ADD, {"input": [_row("MINE")]}, "gradesAdd"),
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
    batch = {"input": [_row("AWAY", 58.0)], "key": "math-final"}
    stored, _ = await run(api, ADMIN, GRADES_ADD_KEYED, **batch)
    grades_before = await rows_in("grades")

    # The same key and payload from a teacher outside AWAY's level: neither a
    # replay (which would confirm the score) nor a write.
    probe, errors = await run(api, TEACHER, GRADES_ADD_KEYED, **batch)
    other_guess, other_errors = await run(
        api, TEACHER, GRADES_ADD_KEYED, input=[_row("AWAY", 40.0)], key="math-final"
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
            {"input": [_row("PEER"), _row("MINE")]},
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


# --- imports ------------------------------------------------------------------------

GRADES_IMPORT = """
mutation($csv: String!) {
  gradesImport(csv: $csv) { __typename ... on GradesImportSuccess { job { id } } }
}
"""
IMPORT_JOB = """
query($id: ID!) {
  importJob(jobId: $id) { status errors { index line field code message } }
}
"""
IMPORT_CANCEL = "mutation($id: ID!) { importCancel(jobId: $id) { __typename } }"
OTHER_TEACHER = Viewer(
    identity="user:other", role="teacher", grade_levels=TEACHER_LEVELS, anonymous=False
)


def csv_of(*student_ids: str) -> str:
    return "student_id,subject,score\n" + "".join(f"{s},Art,66\n" for s in student_ids)


async def finished(api: Any, job_id: str) -> ImportJob:
    job = api.services.imports.get(job_id)
    deadline = time.monotonic() + 20
    while not job.finished:
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.02)
    return job


async def start_import(api: Any, viewer: Viewer, csv: str) -> str:
    data, errors = await run(api, viewer, GRADES_IMPORT, csv=csv)
    assert errors == []
    job_id: str = data["gradesImport"]["job"]["id"]
    return job_id


async def test_students_may_not_import(
    api: Any, rows_in: Any, school: dict[str, str]
) -> None:
    before = await state(api)

    data, errors = await run(api, ME, GRADES_IMPORT, csv=csv_of("MINE"))

    assert data is None
    assert errors == forbidden("gradesImport")
    await asyncio.sleep(0.05)
    assert await state(api) == before
    assert await rows_in("grade_import_rows") == 0


@pytest.mark.parametrize(
    ("rows", "errors"),
    [
        (
            ("PEER", "AWAY", "MINE"),
            [(1, 3, "FORBIDDEN", "you may not write grades of student 'AWAY'")],
        ),
        (
            ("PEER", "NOBODY", "AWAY"),
            [
                (1, 3, "NOT_FOUND", "no student with studentId 'NOBODY'"),
                (2, 4, "FORBIDDEN", "you may not write grades of student 'AWAY'"),
            ],
        ),
    ],
)
async def test_a_teachers_import_outside_their_levels_fails_whole(
    api: Any,
    rows_in: Any,
    school: dict[str, str],
    rows: tuple[str, ...],
    errors: list[tuple[int, int, str, str]],
) -> None:
    before = await state(api)

    job_id = await start_import(api, TEACHER, csv_of(*rows))
    await finished(api, job_id)
    data, query_errors = await run(api, TEACHER, IMPORT_JOB, id=job_id)

    assert query_errors == []
    assert data == {
        "importJob": {
            "status": "FAILED",
            "errors": [
                {
                    "index": index,
                    "line": line,
                    "field": "studentId",
                    "code": code,
                    "message": message,
                }
                for index, line, code, message in errors
            ],
        }
    }
    assert await state(api) == before
    assert await rows_in("grade_import_rows") == 0


async def test_a_teachers_import_within_their_levels_succeeds(
    api: Any, rows_in: Any, school: dict[str, str]
) -> None:
    job_id = await start_import(api, TEACHER, csv_of("PEER", "MINE"))
    job = await finished(api, job_id)

    assert (job.status.value, job.errors) == ("SUCCEEDED", [])
    assert await rows_in("grades") == len(SCHOOL) + 2


async def test_a_student_moved_out_of_the_levels_before_the_move_is_refused(
    api: Any, rows_in: Any, school: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check inside the moving transaction catches a level changed after the
    first check (which is made to see nothing here)."""
    real = imports.staging.staged_outside_levels
    calls: list[int] = []

    async def first_sees_nothing(session: Any, job_id: str, levels: Any) -> Any:
        calls.append(1)
        return [] if len(calls) == 1 else await real(session, job_id, levels)

    monkeypatch.setattr(imports.staging, "staged_outside_levels", first_sees_nothing)
    async with api.services.database.writing() as session:
        await session.execute(
            text("UPDATE students SET grade_level = 1 WHERE student_id = 'PEER'")
        )

    job = await finished(api, await start_import(api, TEACHER, csv_of("MINE", "PEER")))

    assert job.status.value == "FAILED"
    assert [(e.index, e.line, e.code.value) for e in job.errors] == [
        (1, 3, "FORBIDDEN")
    ]
    assert len(calls) == 2
    assert await rows_in("grades") == len(SCHOOL)
    assert await rows_in("grade_import_rows") == 0


async def test_import_jobs_belong_to_their_creator_and_admins(
    api: Any, school: dict[str, str]
) -> None:
    job_id = await start_import(api, TEACHER, csv_of("PEER"))
    await finished(api, job_id)

    for viewer in (TEACHER, ADMIN):
        data, errors = await run(api, viewer, IMPORT_JOB, id=job_id)
        assert (data, errors) == (
            {"importJob": {"status": "SUCCEEDED", "errors": []}},
            [],
        )
    for viewer in (OTHER_TEACHER, ME):
        assert await run(api, viewer, IMPORT_JOB, id=job_id) == (
            {"importJob": None},
            forbidden("importJob"),
        )
        assert await run(api, viewer, IMPORT_CANCEL, id=job_id) == (
            None,
            forbidden("importCancel"),
        )
    assert api.services.imports.get(job_id).status.value == "SUCCEEDED"
    cancelled, errors = await run(api, TEACHER, IMPORT_CANCEL, id=job_id)
    assert (cancelled, errors) == (
        {"importCancel": {"__typename": "ImportCancelSuccess"}},
        [],
    )


async def test_import_progress_is_refused_to_others(
    api: Any, school: dict[str, str]
) -> None:
    job_id = await start_import(api, TEACHER, csv_of("PEER"))
    await finished(api, job_id)
    document = "subscription($id: ID!) { importProgress(jobId: $id) { status } }"

    refused = await subscribe(api, OTHER_TEACHER, document, id=job_id)
    owned = await subscribe(api, TEACHER, document, id=job_id)

    assert await refusal(refused) == [(("importProgress",), "FORBIDDEN")]
    first = await anext(owned)
    assert (first.data, first.errors) == (
        {"importProgress": {"status": "SUCCEEDED"}},
        None,
    )
    await owned.aclose()


# --- subscriptions ------------------------------------------------------------------

GRADE_EVENTS = """
subscription($studentId: String, $gradeLevel: Int) {
  gradeEvents(studentId: $studentId, gradeLevel: $gradeLevel) {
    studentId gradeLevel grades { studentId score }
  }
}
"""


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


async def test_grade_events_reach_each_viewer_filtered(
    api: Any, school: dict[str, str]
) -> None:
    bus = api.app.state.monitor.bus
    streams = {
        viewer.role: await subscribe(api, viewer, GRADE_EVENTS)
        for viewer in (ADMIN, TEACHER, ME)
    }
    received: dict[str, list[tuple[str, float]]] = {role: [] for role in streams}

    async def read(role: str, count: int) -> None:
        for _ in range(count):
            result = await anext(streams[role])
            assert result.errors is None
            event = result.data["gradeEvents"]
            received[role] += [(g["studentId"], g["score"]) for g in event["grades"]]

    expected = {
        "admin": [("AWAY", 10.0), ("PEER", 20.0), ("MINE", 30.0), ("MINE", 40.0)],
        "teacher": [("PEER", 20.0), ("MINE", 30.0), ("MINE", 40.0)],
        "student": [("MINE", 30.0), ("MINE", 40.0)],
    }
    readers = [
        asyncio.ensure_future(read(role, len(events)))
        for role, events in expected.items()
    ]
    deadline = time.monotonic() + 5
    while bus.subscribers(live.GRADES) < 3:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)

    batch, _ = await run(
        api,
        ADMIN,
        GRADES_ADD,
        input=[_row("AWAY", 10.0), _row("PEER", 20.0), _row("MINE", 30.0)],
    )
    # The last write reaches everyone: what came before it is all they were sent.
    last, _ = await run(api, ADMIN, GRADE_ADD, id="MINE", score=40.0)
    await asyncio.wait_for(asyncio.gather(*readers), 10)

    assert batch == {"gradesAdd": {"__typename": "GradesAddSuccess"}}
    assert last == {"gradeAdd": {"__typename": "GradeAddSuccess"}}
    assert received == expected
    for stream in streams.values():
        await stream.aclose()


@pytest.mark.parametrize(
    ("viewer", "variables"),
    [
        (ME, {"studentId": "PEER"}),
        (ME, {"studentId": "NOBODY"}),
        (TEACHER, {"gradeLevel": 1}),
        (TEACHER, {"studentId": "AWAY"}),
    ],
)
async def test_grade_events_for_someone_else_are_refused_up_front(
    api: Any, school: dict[str, str], viewer: Viewer, variables: dict[str, Any]
) -> None:
    result = await subscribe(api, viewer, GRADE_EVENTS, **variables)

    assert await refusal(result) == [(("gradeEvents",), "FORBIDDEN")]
    assert api.app.state.monitor.registry.active_subscriptions == 0


@pytest.mark.parametrize(
    ("document", "topic"),
    [
        ("subscription { metrics { environment } }", METRICS),
        ("subscription { alerts { rule } }", ALERTS),
        ("subscription { costs { apiRequests } }", COSTS),
    ],
)
async def test_monitoring_subscriptions_are_for_operators(
    api: Any, document: str, topic: str
) -> None:
    field = document.split()[2]
    bus = api.app.state.monitor.bus

    refused = await refusal(await subscribe(api, ME, document))
    stream = await subscribe(api, TEACHER, document)
    reading = asyncio.ensure_future(anext(stream))
    deadline = time.monotonic() + 5
    while bus.subscribers(topic) == 0:  # the teacher's stream started
        assert time.monotonic() < deadline and not reading.done()
        await asyncio.sleep(0.01)
    reading.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reading
    await stream.aclose()
    assert bus.subscribers(topic) == 0

    assert refused == [((field,), "FORBIDDEN")]


# --- over HTTP, with tokens ---------------------------------------------------------


async def test_roles_apply_over_http_with_tokens(
    make_api: Any, seeded_url: str
) -> None:
    api = await make_api(seeded_url, jwt_secret=TEST_JWT_SECRET, auth_required=True)
    document = (
        '{ students(first: 100) { totalCount } student(studentId: "S00001") '
        "{ studentId } classAnalytics { studentCount top { studentId } } }"
    )

    async def post(headers: dict[str, str]) -> dict[str, Any]:
        response = await api.http.post(
            "/graphql", json={"query": document}, headers=headers
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    teacher = await post(
        bearer_header(jwt_token("teacher", grade_levels=sorted(TEACHER_LEVELS)))
    )
    student = await post(bearer_header(jwt_token("student", student_id="S00017")))
    admin = await post(bearer_header(jwt_token("admin")))

    assert admin["data"]["students"] == {"totalCount": SEEDED_STUDENTS}
    assert admin["data"]["student"] == {"studentId": "S00001"}
    assert "errors" not in admin
    assert teacher["data"]["students"] == {"totalCount": 30}
    assert teacher["data"]["student"] is None
    assert teacher["data"]["classAnalytics"]["studentCount"] == 30
    assert [(e["path"], e["extensions"]["code"]) for e in teacher["errors"]] == [
        (["student"], "FORBIDDEN")
    ]
    assert student["data"] == {
        "students": {"totalCount": 1},
        "student": None,
        "classAnalytics": {"studentCount": SEEDED_STUDENTS, "top": None},
    }
    assert sorted((e["path"], e["extensions"]["code"]) for e in student["errors"]) == [
        (["classAnalytics", "top"], "FORBIDDEN"),
        (["student"], "FORBIDDEN"),
    ]
