"""The summaries every write keeps (db.summaries) stay exactly what the grades say:
after each kind of write, through the API, the command-line import and concurrent
writers on two apps, they equal what a rebuild from every grade computes (counts
exactly, sums to the last few ulps), and the analytics read from them match the
plain-Python reference."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from sqlalchemy import select

from db import models, summaries
from db.engine import Database, create_database
from db.importer import import_rows
from db.migrations import upgrade
from db.validation import new_grade
from tests.factories import add_grade, create_student
from tests.factories.analytics import approx
from tests.factories.imports import csv_of, start, wait_for_job
from tests.factories.migrations import seed_old_schema, upgrade_to

S = models.Student.__table__.c
SS = models.StudentSubjectStats.__table__.c
V = models.GradeValueCount.__table__.c
WAIT_S = 10.0

GRADES_ADD = """
mutation Batch($input: [GradeAddInput!]!) {
  gradesAdd(input: $input) { __typename ... on GradesAddSuccess { inserted } }
}"""
GRADE_UPDATE = """
mutation Update($id: ID!, $input: GradeUpdateInput!) {
  gradeUpdate(id: $id, input: $input) { __typename }
}"""
GRADE_DELETE = "mutation Delete($id: ID!) { gradeDelete(id: $id) { __typename } }"
STUDENT_UPDATE = """
mutation Move($studentId: String!, $input: StudentUpdateInput!) {
  studentUpdate(studentId: $studentId, input: $input) { __typename }
}"""
STUDENT_DELETE = """
mutation Gone($studentId: String!) {
  studentDelete(studentId: $studentId, cascade: true) { __typename }
}"""
CLASS = """
query Class($level: Int, $subject: String) {
  classAnalytics(gradeLevel: $level, subject: $subject) {
    studentCount gradeCount mean median stdDev min max
    letters { a b c d f } histogram { from to count }
    subjects { subject count average min max latest }
    top { studentId average } bottom { studentId average }
  }
}"""


async def read(database: Database) -> dict[str, Any]:
    async with database.sessions() as session:
        return await read_in(session)


async def read_in(session: Any) -> dict[str, Any]:
    """Every summary row, in key order; value counts of 0 left out."""
    totals = (
        await session.execute(
            select(
                S.student_id, S.grade_count, S.sum_p, S.sum_x, S.sum_xx, S.sum_xp
            ).order_by(S.student_id)
        )
    ).all()
    subjects = (
        await session.execute(select(*SS).order_by(SS.student_id, SS.subject))
    ).all()
    values = (
        await session.execute(
            select(V.grade_level, V.subject, V.p, V.n)
            .where(V.n != 0)
            .order_by(V.grade_level, V.subject, V.p)
        )
    ).all()
    return {
        "totals": [tuple(r) for r in totals],
        "subjects": [tuple(r) for r in subjects],
        "values": [tuple(r) for r in values],
    }


async def rebuilt(database: Database) -> dict[str, Any]:
    """What a rebuild from every grade makes (rolled back afterwards)."""
    async with database.write_sessions() as session, session.begin():
        await summaries.rebuild(session)
        state = await read_in(session)
        await session.rollback()
    return state


def assert_same(kept: dict[str, Any], expected: dict[str, Any]) -> None:
    assert kept["values"] == expected["values"]  # integer counts: exact
    for name in ("totals", "subjects"):
        assert len(kept[name]) == len(expected[name]), name
        for row, want in zip(kept[name], expected[name], strict=True):
            close = [
                pytest.approx(w, rel=1e-9, abs=1e-9) if isinstance(w, float) else w
                for w in want
            ]
            assert list(row) == close, (name, row, want)


async def check(api: Any) -> None:
    database = api.services.database
    assert_same(await read(database), await rebuilt(database))


async def grade_ids(api: Any, student_id: str) -> list[str]:
    body = await api.post(
        "query Ids($id: String) "
        "{ grades(studentId: $id, first: 100) { edges { node { id } } } }",
        {"id": student_id},
    )
    return [edge["node"]["id"] for edge in body["data"]["grades"]["edges"]]


@pytest.fixture
async def school(api: Any) -> list[str]:
    students = []
    for number in range(4):
        student = await create_student(api, gradeLevel=9 + number % 2)
        students.append(student["studentId"])
    return students


async def test_each_kind_of_write_keeps_the_summaries_exact(
    api: Any, school: list[str]
) -> None:
    a, b, c, d = school
    await check(api)  # students without grades: zeros, no rows

    await add_grade(api, a, subject="Math", score=81.5)
    await add_grade(api, a, subject="Math", score=60.0, maxScore=80.0)
    await add_grade(api, b, subject="Art", score=99.0)
    await check(api)

    rows = [
        {"studentId": s, "subject": subject, "score": score}
        for s, subject, score in (
            (a, "Art", 70.0),
            (b, "Math", 55.5),
            (c, "Math", 81.5),  # the same percentage as a's: one value count of 2
            (c, "History", 90.0),
            (d, "Math", 42.0),
        )
    ]
    body = await api.post(GRADES_ADD, {"input": rows})
    assert body["data"]["gradesAdd"] == {
        "__typename": "GradesAddSuccess",
        "inserted": 5,
    }
    await check(api)

    first_of_a = (await grade_ids(api, a))[0]
    for change in (
        {"score": 12.25},
        {"subject": "Science"},
        {"recordedAt": "2020-02-03T04:05:06Z"},
        {"studentId": d},  # moves the grade to another student (and level)
    ):
        body = await api.post(GRADE_UPDATE, {"id": first_of_a, "input": change})
        assert body["data"]["gradeUpdate"]["__typename"] == "GradeUpdateSuccess"
        await check(api)

    body = await api.post(GRADE_DELETE, {"id": (await grade_ids(api, b))[0]})
    assert body["data"]["gradeDelete"]["__typename"] == "GradeDeleteSuccess"
    await check(api)

    for change in ({"gradeLevel": 11}, {"studentId": "RENAMED-C"}):
        body = await api.post(STUDENT_UPDATE, {"studentId": c, "input": change})
        assert body["data"]["studentUpdate"]["__typename"] == "StudentUpdateSuccess"
        c = change.get("studentId", c)
        await check(api)

    body = await api.post(STUDENT_DELETE, {"studentId": d})
    assert body["data"]["studentDelete"]["__typename"] == "StudentDeleteSuccess"
    await check(api)


async def test_an_import_job_and_the_command_line_import_keep_them_exact(
    api: Any, school: list[str]
) -> None:
    a, b, c, _ = school
    await add_grade(api, a, subject="Math", score=50.0)
    rows = [
        (s, subject, float(score))
        for s, subject, score in (
            (a, "Math", 77),
            (b, "Math", 50),
            (b, "Art", 91),
            (c, "History", 66),
        )
    ]
    started = await start(api, csv=csv_of(rows))
    job = await wait_for_job(api, started["job"]["id"])
    assert job["status"] == "SUCCEEDED", job
    await check(api)

    grades = [new_grade(a, "Math", 10.0 + n, 100.0, None) for n in range(30)]
    done = await import_rows(api.services.database, [], grades)
    assert done.grades == 30
    await check(api)


async def test_a_refused_batch_leaves_them_as_they_were(
    api: Any, school: list[str]
) -> None:
    a = school[0]
    await add_grade(api, a, subject="Math", score=81.5)
    before = await read(api.services.database)

    rows = [
        {"studentId": a, "subject": "Math", "score": 90.0},
        {"studentId": "NOBODY", "subject": "Math", "score": 90.0},
    ]
    body = await api.post(GRADES_ADD, {"input": rows})

    assert body["data"]["gradesAdd"]["__typename"] == "InvalidRowsError"
    assert await read(api.services.database) == before


async def test_concurrent_writers_on_two_apps_keep_them_exact(
    make_api: Any, scratch_url: str
) -> None:
    """Two apps (two pools) adding, updating and deleting grades of the same few
    students at once: every write waits for the others of its students, and the
    value counts, shared by all, only ever change by differences."""
    first = await make_api(scratch_url)
    second = await make_api(scratch_url)
    students = [
        (await create_student(first, gradeLevel=7))["studentId"] for _ in range(3)
    ]
    rng = random.Random(11)

    async def writer(api: Any, number: int) -> None:
        for step in range(12):
            student = rng.choice(students)
            kind = (number + step) % 4
            if kind == 3 and (ids := await grade_ids(api, student)):
                body = await api.post(GRADE_DELETE, {"id": ids[-1]})
                assert "errors" not in body, body
            elif kind == 2 and (ids := await grade_ids(api, student)):
                change = {"score": float(rng.randrange(0, 101)), "subject": "Art"}
                body = await api.post(GRADE_UPDATE, {"id": ids[0], "input": change})
                assert "errors" not in body, body
            else:
                rows = [
                    {
                        "studentId": rng.choice(students),
                        "subject": rng.choice(("Math", "Art")),
                        "score": float(rng.randrange(0, 101)),
                    }
                    for _ in range(rng.randrange(1, 4))
                ]
                body = await api.post(GRADES_ADD, {"input": rows})
                assert body["data"]["gradesAdd"]["__typename"] == "GradesAddSuccess"

    await asyncio.wait_for(
        asyncio.gather(*(writer(api, n) for n, api in enumerate([first, second] * 2))),
        6 * WAIT_S,
    )
    await check(first)


async def test_class_analytics_after_writes_match_a_rebuild(
    api: Any, school: list[str]
) -> None:
    """The figures read from kept summaries are those read after a rebuild."""
    for number, student in enumerate(school):
        for k in range(5):
            await add_grade(
                api,
                student,
                subject=("Math", "Art")[k % 2],
                score=float((number * 37 + k * 13) % 101),
            )
    ids = await grade_ids(api, school[0])
    await api.post(GRADE_UPDATE, {"id": ids[1], "input": {"score": 3.0}})
    await api.post(GRADE_DELETE, {"id": ids[2]})

    kept = [
        (await api.post(CLASS, variables))["data"]
        for variables in ({}, {"level": 9}, {"subject": "Math"})
    ]
    async with api.services.database.writing() as session:
        await summaries.rebuild(session)
    api.services.cache.clear()
    fresh = [
        (await api.post(CLASS, variables))["data"]
        for variables in ({}, {"level": 9}, {"subject": "Math"})
    ]

    assert kept == approx(fresh)
    assert kept[0]["classAnalytics"]["gradeCount"] == 19


async def test_the_migration_fills_them_for_an_existing_database(
    scratch_url: str,
) -> None:
    """A database at revision 0004 with students and grades: 0005 adds the summaries
    and fills them with what a rebuild computes."""
    database = create_database(scratch_url)
    try:
        async with database.write_engine.begin() as conn:
            await conn.run_sync(upgrade_to, "0004")
        _, grades = await seed_old_schema(
            database, students=12, grades_per_student=6, seed=3
        )

        await upgrade(database)

        filled = await read(database)
        assert len(filled["subjects"]) == len(
            {(g["student_id"], g["subject"]) for g in grades}
        )
        assert sum(row[-1] for row in filled["values"]) == len(grades)
        assert_same(filled, await rebuilt(database))
    finally:
        await database.dispose()
