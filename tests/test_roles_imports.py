"""Roles on CSV imports: who may import, read and cancel which jobs."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import text

from resolvers import import_runner, imports
from resolvers.jobs import ImportJob
from resolvers.viewer import Viewer
from tests.factories.roles import (
    ADMIN,
    ME,
    SCHOOL,
    TEACHER,
    TEACHER_LEVELS,
    forbidden,
    refusal,
    run,
    state,
    subscribe,
)

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
    deadline = time.monotonic() + 20
    while not (job := await imports.load_job(api.services, job_id)).finished:
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

    assert (job.status.value, job.errors, job.failure_code) == ("SUCCEEDED", (), None)
    assert await rows_in("grades") == len(SCHOOL) + 2


async def test_a_student_moved_out_of_the_levels_before_the_move_is_refused(
    api: Any, rows_in: Any, school: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check inside the moving transaction catches a level changed after the
    first check (which is made to see nothing here)."""
    real = import_runner.staging.staged_outside_levels
    calls: list[int] = []

    async def first_sees_nothing(session: Any, job_id: str, levels: Any) -> Any:
        calls.append(1)
        return [] if len(calls) == 1 else await real(session, job_id, levels)

    monkeypatch.setattr(
        import_runner.staging, "staged_outside_levels", first_sees_nothing
    )
    async with api.services.database.writing() as session:
        await session.execute(
            text("UPDATE students SET grade_level = 1 WHERE student_id = 'PEER'")
        )

    job = await finished(api, await start_import(api, TEACHER, csv_of("MINE", "PEER")))

    assert (job.status.value, job.failure_code) == ("FAILED", "INVALID_ROWS")
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
    assert (await imports.load_job(api.services, job_id)).status.value == "SUCCEEDED"
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


async def test_a_long_identity_owns_its_job(api: Any, school: dict[str, str]) -> None:
    long = Viewer(
        identity="user:" + "x" * 300,
        role="teacher",
        grade_levels=TEACHER_LEVELS,
        anonymous=False,
    )
    job_id = await start_import(api, long, csv_of("PEER"))
    await finished(api, job_id)

    data, errors = await run(api, long, IMPORT_JOB, id=job_id)

    assert (data, errors) == ({"importJob": {"status": "SUCCEEDED", "errors": []}}, [])
    assert await run(api, OTHER_TEACHER, IMPORT_JOB, id=job_id) == (
        {"importJob": None},
        forbidden("importJob"),
    )
