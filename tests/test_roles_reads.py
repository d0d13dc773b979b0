"""Roles on reads: lookups, filtered lists, grades, filtering in SQL, HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from resolvers.viewer import Viewer
from tests.conftest import SEEDED_GRADES_PER_STUDENT, SEEDED_STUDENTS
from tests.factories import TEST_JWT_SECRET, bearer_header, jwt_token
from tests.factories.grades import global_grade_id
from tests.factories.roles import (
    ADMIN,
    STUDENT,
    STUDENT_DOC,
    TEACHER,
    TEACHER_LEVELS,
    TEACHERS_GRADES,
    VIEWERS,
    forbidden,
    run,
    sql,
)

# The policy as data: whom each role may read.
READABLE = {
    "admin": lambda student_id, level: True,
    "teacher": lambda student_id, level: level in TEACHER_LEVELS,
    "student": lambda student_id, level: student_id == STUDENT.student_id,
}


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
    return [
        {"node": {"id": global_grade_id(row[0]), "studentId": row[1]}} for row in rows
    ]


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
