"""Roles on classAnalytics (names for admins and teachers) and monitoring."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import SEEDED_STUDENTS
from tests.factories.roles import (
    ADMIN,
    AGGREGATES,
    CLASS_AGGREGATES_DOC,
    GRADE_ADD,
    GRADES_ADD,
    ME,
    STUDENT,
    STUDENT_CREATE,
    STUDENT_DOC,
    TEACHER,
    TEACHERS_GRADES,
    VIEWERS,
    forbidden,
    grade_row,
    run,
    sql,
)

# --- classAnalytics: aggregates for everyone, names for admins and teachers ----------

CLASS_DOC = f"""
query($level: Int) {{
  classAnalytics(gradeLevel: $level) {{
    {AGGREGATES}
    top {{ studentId name average }} bottom {{ studentId name average }}
  }}
}}
"""


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

    expected, refused = student_view(reference["classAnalytics"])
    assert data == {"classAnalytics": expected}
    assert errors == refused
    del expected["top"], expected["bottom"]
    assert aggregates == {"classAnalytics": expected}
    assert aggregate_errors == [e for e in refused if e[0][1] == "subjects"]


def student_view(
    figures: dict[str, Any],
) -> tuple[dict[str, Any], list[tuple[Any, str]]]:
    """What a student gets of an admin's CLASS_DOC figures, and the errors: no
    names (top, bottom) and no subject's latest grade (one student's grade)."""
    subjects = figures["subjects"]
    latest_refused = [
        (("classAnalytics", "subjects", i, "latest"), "FORBIDDEN")
        for i in range(len(subjects))
    ]
    expected = {
        **figures,
        "subjects": [{**subject, "latest": None} for subject in subjects],
        "top": None,
        "bottom": None,
    }
    return expected, [
        (("classAnalytics", "bottom"), "FORBIDDEN"),
        *latest_refused,
        (("classAnalytics", "top"), "FORBIDDEN"),
    ]


SMALL_CELLS_DOC = """
query($level: Int, $subject: String) {
  classAnalytics(gradeLevel: $level, subject: $subject) {
    studentCount gradeCount mean min max letters { a b c d f }
    histogram { count } subjects { subject count average min max }
  }
}
"""


async def test_students_read_no_figures_of_fewer_than_five_students(
    api: Any, school: dict[str, str]
) -> None:
    """Level 6 has two students (MINE and PEER): their mean would be close to
    their grades, one student's figures would be exactly theirs."""
    admin, _ = await run(api, ADMIN, SMALL_CELLS_DOC, level=6)
    assert admin["classAnalytics"]["studentCount"] == 2

    for level in (6, 1, None):
        data, errors = await run(api, ME, SMALL_CELLS_DOC, level=level)
        assert data == {"classAnalytics": None}
        assert errors == forbidden("classAnalytics")


async def test_students_see_only_subjects_that_five_students_have(
    api: Any, school: dict[str, str]
) -> None:
    for number in range(3):  # with MINE and PEER, five students in level 6
        student = f"MORE{number}"
        created, _ = await run(
            api,
            ADMIN,
            STUDENT_CREATE,
            input={
                "studentId": student,
                "name": "More",
                "email": f"more{number}@school.example",
                "gradeLevel": 6,
            },
        )
        assert created == {"studentCreate": {"__typename": "StudentCreateSuccess"}}
        added, _ = await run(api, ADMIN, GRADE_ADD, id=student)
        assert added == {"gradeAdd": {"__typename": "GradeAddSuccess"}}
    # One student alone in History: their grade would be the subject's figures.
    added, _ = await run(
        api, ADMIN, GRADES_ADD, input=[grade_row("PEER", 37.5, "History")]
    )
    assert added == {"gradesAdd": {"__typename": "GradesAddSuccess"}}

    admin, _ = await run(api, ADMIN, SMALL_CELLS_DOC, level=6)
    math, _ = await run(api, ADMIN, SMALL_CELLS_DOC, level=6, subject="Math")
    data, errors = await run(api, ME, SMALL_CELLS_DOC, level=6)
    alone, alone_errors = await run(
        api, ME, SMALL_CELLS_DOC, level=6, subject="History"
    )

    assert [s["subject"] for s in admin["classAnalytics"]["subjects"]] == [
        "History",
        "Math",
    ]
    assert errors == []
    # History is left out of every figure, not only of the list: the totals less
    # the subjects listed would be PEER's History grade.
    assert data == math
    figures = data["classAnalytics"]
    assert figures["gradeCount"] == sum(s["count"] for s in figures["subjects"])
    assert alone == {"classAnalytics": None}
    assert alone_errors == forbidden("classAnalytics")


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
    assert stats["mean"] == round(float(mean), 4)  # figures print to 4 places
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
        expected, refused = student_view(admin[0]["classAnalytics"])
        assert student[0]["classAnalytics"] == expected
        assert student[1] == refused


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


async def test_class_analytics_of_any_number_of_subjects(
    api: Any, school: dict[str, str]
) -> None:
    """501 subjects (a teacher may name any): one statement per subject's latest
    grade was a compound SELECT past SQLite's 500 terms, DB_UNAVAILABLE for all."""
    rows = [grade_row("PEER", float(n % 100), f"R{n:04d}") for n in range(501)]
    added, _ = await run(api, ADMIN, GRADES_ADD, input=rows)
    assert added == {"gradesAdd": {"__typename": "GradesAddSuccess"}}

    data, errors = await run(
        api, ADMIN, "{ classAnalytics(gradeLevel: 6) { subjects { subject latest } } }"
    )

    assert errors == []
    subjects = {s["subject"]: s["latest"] for s in data["classAnalytics"]["subjects"]}
    assert len(subjects) == 501 + 1  # and the school's Math
    assert subjects["R0499"] == 99.0
