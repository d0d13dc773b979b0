"""The FERPA audit log of writes and imports, recorded in their transaction."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import text

from tests.factories import (
    TEST_JWT_SECRET,
    add_grade,
    bearer_header,
    create_student,
    jwt_token,
    post,
)
from tests.factories.audit import ANONYMOUS, GRADE_ADD, answer, records

GRADE_UPDATE = """
mutation Move($id: ID!, $input: GradeUpdateInput!) {
  gradeUpdate(id: $id, input: $input) {
    __typename ... on GradeUpdateSuccess { grade { studentId score } }
  }
}
"""
GRADE_DELETE = """
mutation($id: ID!) {
  gradeDelete(id: $id) { __typename ... on GradeDeleteSuccess { grade { score } } }
}
"""
GRADES_ADD = """
mutation($input: [GradeAddInput!]!) {
  gradesAdd(input: $input) { __typename }
}
"""


async def indexed(api: Any) -> list[tuple[int, str]]:
    async with api.services.database.sessions() as session:
        rows = await session.execute(
            text("SELECT audit_id, student_id FROM audit_students ORDER BY 1, 2")
        )
        return [(r[0], r[1]) for r in rows]


# --- writes -------------------------------------------------------------------------


async def test_grade_writes_are_recorded_in_their_transaction(api):
    await create_student(api, studentId="A-1", gradeLevel=3)
    await create_student(api, studentId="A-2", gradeLevel=4)
    assert await records(api) == []  # creating students records nothing

    add_id, added = answer(
        await post(
            api,
            GRADE_ADD,
            {"input": {"studentId": "A-1", "subject": "Art", "score": 61}},
        )
    )
    grade_id = added["data"]["gradeAdd"]["grade"]["id"]
    move_id, moved = answer(
        await post(api, GRADE_UPDATE, {"id": grade_id, "input": {"studentId": "A-2"}})
    )
    empty_id, unchanged = answer(
        await post(api, GRADE_UPDATE, {"id": grade_id, "input": {}})
    )
    delete_id, deleted = answer(await post(api, GRADE_DELETE, {"id": grade_id}))
    batch_id, batch = answer(
        await post(
            api,
            GRADES_ADD,
            {
                "input": [
                    {"studentId": "A-2", "subject": "Math", "score": 70},
                    {"studentId": "A-1", "subject": "Math", "score": 71},
                    {"studentId": "A-2", "subject": "Art", "score": 72},
                ]
            },
        )
    )

    assert added["data"]["gradeAdd"]["__typename"] == "GradeAddSuccess"
    assert moved["data"]["gradeUpdate"]["grade"] == {"studentId": "A-2", "score": 61.0}
    assert unchanged["data"]["gradeUpdate"]["__typename"] == "GradeUpdateSuccess"
    assert deleted["data"]["gradeDelete"]["grade"] == {"score": 61.0}
    assert batch["data"]["gradesAdd"]["__typename"] == "GradesAddSuccess"
    # One record per response: the grade a mutation returns is covered by its write
    # record; an update that changes nothing only returns the grade (a read).
    assert await records(api, add_id) == [
        (ANONYMOUS, "admin", "mutation:gradeAdd", "write", ["A-1"])
    ]
    assert await records(api, move_id) == [
        (ANONYMOUS, "admin", "Move", "write", ["A-1", "A-2"])
    ]
    assert await records(api, empty_id) == [
        (ANONYMOUS, "admin", "Move", "read", ["A-2"])
    ]
    assert await records(api, delete_id) == [
        (ANONYMOUS, "admin", "mutation:gradeDelete", "write", ["A-2"])
    ]
    assert await records(api, batch_id) == [
        (ANONYMOUS, "admin", "mutation:gradesAdd", "write", ["A-1", "A-2"])
    ]
    assert len(await records(api)) == 5
    ids = [row[0] for row in await indexed(api)]
    assert len(ids) == 1 + 2 + 1 + 1 + 2  # one index row per student of each


STUDENT_DELETE = """
mutation($id: String!) {
  studentDelete(studentId: $id, cascade: true) { __typename }
}
"""


async def test_deleting_a_student_with_grades_records_a_grade_write(api):
    await create_student(api, studentId="C-1", gradeLevel=5)
    await create_student(api, studentId="C-2", gradeLevel=5)
    await post(
        api, GRADE_ADD, {"input": {"studentId": "C-1", "subject": "Art", "score": 50}}
    )

    with_grades, first = answer(await post(api, STUDENT_DELETE, {"id": "C-1"}))
    without_grades, second = answer(await post(api, STUDENT_DELETE, {"id": "C-2"}))

    assert first["data"]["studentDelete"]["__typename"] == "StudentDeleteSuccess"
    assert second["data"]["studentDelete"]["__typename"] == "StudentDeleteSuccess"
    assert await records(api, with_grades) == [
        (ANONYMOUS, "admin", "mutation:studentDelete", "write", ["C-1"])
    ]
    assert await records(api, without_grades) == []  # no grade data touched


STUDENT_RENAME = """
mutation($id: String!, $new: String!) {
  studentUpdate(studentId: $id, input: {studentId: $new}) { __typename }
}
"""


async def test_renaming_a_student_records_a_write_under_both_ids(api):
    await create_student(api, studentId="R-1", gradeLevel=5)
    await post(
        api, GRADE_ADD, {"input": {"studentId": "R-1", "subject": "Art", "score": 50}}
    )

    renamed, body = answer(await post(api, STUDENT_RENAME, {"id": "R-1", "new": "R-2"}))
    unchanged, _ = answer(await post(api, STUDENT_RENAME, {"id": "R-2", "new": "R-2"}))

    assert body["data"]["studentUpdate"]["__typename"] == "StudentUpdateSuccess"
    assert await records(api, renamed) == [
        (ANONYMOUS, "admin", "mutation:studentUpdate", "write", ["R-1", "R-2"])
    ]
    assert await records(api, unchanged) == []


async def test_refused_writes_record_nothing(make_api, scratch_url, rows_in):
    api = await make_api(scratch_url, jwt_secret=TEST_JWT_SECRET)
    await create_student(api, studentId="R-1", gradeLevel=7)
    teacher = jwt_token("teacher", grade_levels=[1])

    _, missing = answer(
        await post(
            api,
            GRADE_ADD,
            {"input": {"studentId": "NOBODY", "subject": "Art", "score": 1}},
        )
    )
    _, invalid = answer(
        await post(
            api,
            GRADES_ADD,
            {
                "input": [
                    {"studentId": "R-1", "subject": "Art", "score": 50},
                    {"studentId": "R-1", "subject": "Art", "score": 500},
                ]
            },
        )
    )
    _, forbidden = answer(
        await post(
            api,
            GRADE_ADD,
            {"input": {"studentId": "R-1", "subject": "Art", "score": 50}},
            headers=bearer_header(teacher),
        )
    )

    assert missing["data"]["gradeAdd"]["__typename"] == "NotFoundError"
    assert invalid["data"]["gradesAdd"]["__typename"] == "InvalidRowsError"
    assert [e["extensions"]["code"] for e in forbidden["errors"]] == ["FORBIDDEN"]
    assert await rows_in("grades") == 0
    assert await records(api) == []


async def test_teachers_reads_are_recorded_under_their_identity(make_api, scratch_url):
    api = await make_api(scratch_url, jwt_secret=TEST_JWT_SECRET)
    await create_student(api, studentId="T-1", gradeLevel=2)
    await add_grade(api, "T-1", score=90.0)
    teacher = jwt_token("teacher", grade_levels=[2])

    request_id, body = answer(
        await post(
            api,
            '{ student(studentId: "T-1") { grades { score } } }',
            headers=bearer_header(teacher),
        )
    )

    assert body["data"]["student"]["grades"] == [{"score": 90.0}]
    assert await records(api, request_id) == [
        ("user:teacher-1", "teacher", "query:student", "read", ["T-1"])
    ]


async def test_import_move_is_recorded_in_its_transaction(api):
    await create_student(api, studentId="I-1", gradeLevel=5)
    await create_student(api, studentId="I-2", gradeLevel=6)
    csv = "student_id,subject,score\nI-2,Math,70\nI-1,Math,71\nI-2,Art,72\n"

    request_id, body = answer(
        await post(
            api,
            "mutation Load($csv: String!) { gradesImport(csv: $csv) "
            "{ ... on GradesImportSuccess { job { id } } } }",
            {"csv": csv},
        )
    )
    job_id = body["data"]["gradesImport"]["job"]["id"]
    deadline = time.monotonic() + 20
    while True:
        _, job = answer(
            await post(
                api,
                "query($id: ID!) { importJob(jobId: $id) { status } }",
                {"id": job_id},
            )
        )
        if job["data"]["importJob"]["status"] != "QUEUED" and (
            job["data"]["importJob"]["status"] != "RUNNING"
        ):
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)

    assert job["data"]["importJob"]["status"] == "SUCCEEDED"
    assert await records(api, request_id) == [
        (ANONYMOUS, "admin", "Load", "write", ["I-1", "I-2"])
    ]
    assert len(await records(api)) == 1
