"""gradesImport: background CSV imports staged in chunks and moved in one transaction;
importJob, importCancel, uploads and their header, importProgress on a live server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from gql import GraphQLRequest, gql
from sqlalchemy import text

from resolvers import import_runner, imports, live
from tests.factories import (
    GRADE_EVENTS,
    TRANSPORT_WS,
    Server,
    collect,
    create_student,
    live_server,
    wait_until,
    ws_client,
)
from tests.factories.imports import (
    GRADES_IMPORT,
    HEADER,
    IMPORT_CANCEL,
    IMPORT_JOB,
    csv_of,
    start,
    wait_for_job,
)
from tests.factories.roles import ADMIN, subscribe

IMPORT_PROGRESS = gql(
    "subscription Progress($jobId: ID!) { importProgress(jobId: $jobId) "
    "{ id status processed total } }"
)


async def stored_grades(api: Any) -> list[tuple[str, str, float]]:
    body = await api.post(
        "{ grades(first: 100) { edges { node { studentId subject score } } } }"
    )
    nodes = [edge["node"] for edge in body["data"]["grades"]["edges"]]
    return sorted((n["studentId"], n["subject"], n["score"]) for n in nodes)


@pytest.fixture
async def students(api: Any) -> list[str]:
    for student_id, level in (("IMP-1", 7), ("IMP-2", 8)):
        await create_student(api, studentId=student_id, gradeLevel=level)
    return ["IMP-1", "IMP-2"]


ROWS = [
    ("IMP-1", "Math", 71.0),
    ("IMP-2", "Math", 64.5),
    ("IMP-1", "Art", 88.0),
]


async def test_csv_import_succeeds(api: Any, rows_in: Any, students: list[str]) -> None:
    started = await start(api, csv=csv_of(ROWS))

    assert started["__typename"] == "GradesImportSuccess"
    assert started["job"]["status"] == "QUEUED"
    job = await wait_for_job(api, started["job"]["id"])
    assert job == {
        "id": started["job"]["id"],
        "status": "SUCCEEDED",
        "processed": 3,
        "total": 3,
        "errors": [],
        "failureCode": None,
    }
    assert started["replayed"] is False
    assert await stored_grades(api) == sorted(ROWS)
    assert await rows_in("grade_import_rows") == 0


async def test_import_publishes_one_grade_event_per_student(
    api: Any, students: list[str]
) -> None:
    queue = api.app.state.monitor.bus.subscribe(live.GRADES, 16)
    try:
        started = await start(api, csv=csv_of(ROWS))
        await wait_for_job(api, started["job"]["id"])
        write = await asyncio.wait_for(queue.get(), 5)
    finally:
        queue.close()

    assert sorted(
        (e.student_id, e.grade_level, [(g.subject, g.score) for g in e.grades])
        for e in write
    ) == [
        ("IMP-1", 7, [("Math", 71.0), ("Art", 88.0)]),
        ("IMP-2", 8, [("Math", 64.5)]),
    ]


async def test_import_invalidates_cached_analytics(
    api: Any, students: list[str]
) -> None:
    query = '{ studentAnalytics(studentId: "IMP-1") { gradeCount } }'
    before = await api.post(query)
    started = await start(api, csv=csv_of(ROWS))
    await wait_for_job(api, started["job"]["id"])
    after = await api.post(query)

    assert before["data"]["studentAnalytics"]["gradeCount"] == 0
    assert after["data"]["studentAnalytics"]["gradeCount"] == 2


async def test_bad_rows_fail_the_job_with_every_error_and_write_nothing(
    api: Any, rows_in: Any, students: list[str]
) -> None:
    text = (
        HEADER
        + "IMP-1,Math,71,100,2025-10-01T09:00:00Z\n"  # line 2: fine
        + "IMP-1,Math,171,100,2025-10-01T09:00:00Z\n"  # line 3: out of range
        + "\n"  # line 4: blank, skipped
        + "NOBODY,Math,50,100,2025-10-01T09:00:00Z\n"  # line 5: unknown student
        + "IMP-2,,abc,100,2025-10-01T09:00:00Z\n"  # line 6: two problems
    )

    started = await start(api, csv=text)
    job = await wait_for_job(api, started["job"]["id"])

    assert (job["status"], job["processed"], job["total"]) == ("FAILED", 4, 4)
    assert job["failureCode"] == "INVALID_ROWS"
    assert [(e["index"], e["line"], e["field"], e["code"]) for e in job["errors"]] == [
        (1, 3, "score", "OUT_OF_RANGE"),
        (2, 5, "studentId", "NOT_FOUND"),
        (3, 6, "subject", "REQUIRED"),
        (3, 6, "score", "INVALID_FORMAT"),
    ]
    assert job["errors"][1]["message"] == "no student with studentId 'NOBODY'"
    assert await rows_in("grades") == 0
    assert await rows_in("grade_import_rows") == 0


async def test_a_bad_header_fails_the_job(api: Any, rows_in: Any) -> None:
    started = await start(api, csv="who,what\nIMP-1,Math\n")
    job = await wait_for_job(api, started["job"]["id"])

    assert (job["status"], job["processed"], job["total"]) == ("FAILED", 0, 0)
    [error] = job["errors"]
    assert (error["index"], error["line"], error["field"], error["code"]) == (
        -1,
        1,
        "header",
        "INVALID_FORMAT",
    )
    assert await rows_in("grades") == 0


async def test_neither_file_nor_csv_is_invalid_input(api: Any, rows_in: Any) -> None:
    result = await start(api)

    assert result == {
        "__typename": "InvalidInputError",
        "message": "give exactly one of file and csv",
        "field": "file",
        "code": "REQUIRED",
    }
    assert await rows_in("grades") == 0


async def test_both_file_and_csv_is_invalid_input(
    api: Any, rows_in: Any, students: list[str]
) -> None:
    result = await upload(api, csv_of(ROWS), csv=csv_of(ROWS))

    assert result == {
        "__typename": "InvalidInputError",
        "message": "give exactly one of file and csv",
        "field": "csv",
        "code": "INVALID_FORMAT",
    }
    await asyncio.sleep(0.1)
    assert await rows_in("grades") == 0


async def upload(
    api: Any, text: str, *, header: bool = True, csv: str | None = None
) -> Any:
    """A graphql-multipart-request-spec POST; the body, or the response if refused."""
    operations = {"query": GRADES_IMPORT, "variables": {"file": None, "csv": csv}}
    response = await api.http.post(
        "/graphql",
        data={
            "operations": json.dumps(operations),
            "map": json.dumps({"0": ["variables.file"]}),
        },
        files={"0": ("grades.csv", text.encode(), "text/csv")},
        headers={"X-GradePulse-Upload": "1"} if header else {},
    )
    if response.status_code != 200:
        return response
    return response.json()["data"]["gradesImport"]


async def test_file_upload_with_the_header_succeeds(
    api: Any, students: list[str]
) -> None:
    started = await upload(api, csv_of(ROWS))

    assert started["__typename"] == "GradesImportSuccess"
    job = await wait_for_job(api, started["job"]["id"])
    assert (job["status"], job["processed"], job["total"]) == ("SUCCEEDED", 3, 3)
    assert await stored_grades(api) == sorted(ROWS)


async def test_file_upload_without_the_header_is_refused(
    api: Any, rows_in: Any, students: list[str]
) -> None:
    response = await upload(api, csv_of(ROWS), header=False)

    assert response.status_code == 415
    error = response.json()["errors"][0]
    assert (
        error["message"] == "multipart uploads need the header X-GradePulse-Upload: 1"
    )
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    await asyncio.sleep(0.1)
    assert await rows_in("grades") == 0
    assert await rows_in("grade_import_rows") == 0


async def test_cancel_stops_a_running_job_and_writes_nothing(
    make_api: Any, scratch_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two rows per staging transaction and a pause between: time to cancel.
    api = await make_api(scratch_url, import_chunk_size=2)
    monkeypatch.setattr(import_runner, "CHUNK_PAUSE_S", 0.05)
    await create_student(api, studentId="IMP-1")
    many = [("IMP-1", f"S{n}", 50.0) for n in range(40)]
    started = await start(api, csv=csv_of(many))
    job_id = started["job"]["id"]
    deadline = time.monotonic() + 10
    while True:  # until the job has staged a chunk
        body = await api.post(IMPORT_JOB, {"jobId": job_id})
        if body["data"]["importJob"]["processed"] > 0:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)

    body = await api.post(IMPORT_CANCEL, {"jobId": job_id})

    cancelled = body["data"]["importCancel"]
    assert cancelled["__typename"] == "ImportCancelSuccess"
    job = cancelled["job"]
    assert (job["status"], job["total"], job["errors"], job["failureCode"]) == (
        "CANCELLED",
        40,
        [],
        None,
    )
    assert 0 < job["processed"] < 40
    assert (await wait_for_job(api, job_id))["status"] == "CANCELLED"
    async with api.services.database.sessions() as session:
        for table in ("grades", "grade_import_rows"):
            count = await session.execute(text(f"SELECT count(*) FROM {table}"))
            assert count.scalar_one() == 0, table


async def test_each_change_of_a_job_is_announced_on_the_imports_topic(
    make_api: Any, scratch_url: str
) -> None:
    api = await make_api(scratch_url, import_chunk_size=1)
    await create_student(api, studentId="IMP-1")
    queue = api.app.state.monitor.bus.subscribe(import_runner.IMPORTS, 64)
    try:
        started = await start(
            api, csv=csv_of([("IMP-1", f"S{n}", 50.0) for n in range(5)])
        )
        job_id = started["job"]["id"]
        await wait_for_job(api, job_id)
        messages = []
        with contextlib.suppress(TimeoutError):
            while True:
                messages.append(await asyncio.wait_for(queue.get(), 0.2))
    finally:
        queue.close()

    # Queued, running, five chunks, every row checked, succeeded.
    assert messages == [job_id] * 9


async def test_progress_follows_the_announcements_not_only_the_poll(
    make_api: Any, scratch_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = await make_api(scratch_url, import_chunk_size=1)
    await create_student(api, studentId="IMP-1")
    monkeypatch.setattr(imports, "POLL_S", 60.0)
    monkeypatch.setattr(import_runner, "CHUNK_PAUSE_S", 0.05)
    started = await start(api, csv=csv_of([("IMP-1", f"S{n}", 50.0) for n in range(5)]))
    stream = await subscribe(
        api,
        ADMIN,
        "subscription($id: ID!) { importProgress(jobId: $id) { status processed } }",
        id=started["job"]["id"],
    )

    seen = []
    async with asyncio.timeout(10):  # the poll alone would take 60 s per change
        async for event in stream:
            seen.append(event.data["importProgress"])

    assert seen[-1] == {"status": "SUCCEEDED", "processed": 5}
    assert len(seen) >= 4
    assert [e["processed"] for e in seen] == sorted(e["processed"] for e in seen)


async def test_an_unexpected_failure_fails_the_job_and_writes_nothing(
    api: Any, rows_in: Any, students: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(import_runner.staging, "staged_student_levels", broken)
    started = await start(api, csv=csv_of(ROWS))
    job = await wait_for_job(api, started["job"]["id"])

    assert (job["status"], job["failureCode"], job["errors"]) == (
        "FAILED",
        "INTERNAL_SERVER_ERROR",
        [],
    )
    assert await rows_in("grades") == 0
    assert await rows_in("grade_import_rows") == 0


async def test_unknown_job_is_null_and_not_found(api: Any) -> None:
    read = await api.post(IMPORT_JOB, {"jobId": "nope"})
    cancel = await api.post(IMPORT_CANCEL, {"jobId": "nope"})

    assert read["data"] == {"importJob": None}
    assert "errors" not in read
    assert cancel["data"]["importCancel"] == {
        "__typename": "NotFoundError",
        "message": "import job 'nope' does not exist",
    }


# --- importProgress on a live server ------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # One row per staging transaction: a 300-row import runs long enough to watch.
    with live_server(tmp_path_factory.mktemp("imports"), IMPORT_CHUNK_SIZE="1") as live:
        yield live


async def test_import_progress_streams_running_then_succeeded_and_grade_events(
    server: Server,
) -> None:
    body = server.post(
        """mutation { studentCreate(input: {studentId: "LIVE-IMP", name: "L",
             email: "live.imp@school.example", gradeLevel: 9}) { __typename } }"""
    )
    assert body["data"]["studentCreate"]["__typename"] == "StudentCreateSuccess"
    events: list[Any] = []
    listener = asyncio.create_task(
        collect(server, TRANSPORT_WS, GRADE_EVENTS, events, studentId="LIVE-IMP")
    )
    await wait_until(lambda: server.active_subscriptions() == 1)
    text = csv_of([("LIVE-IMP", f"S{n}", 50.0) for n in range(300)])
    body = server.post(GRADES_IMPORT, {"csv": text})
    job_id = body["data"]["gradesImport"]["job"]["id"]

    seen = []
    async with ws_client(server) as session:
        request = GraphQLRequest(IMPORT_PROGRESS, variable_values={"jobId": job_id})
        async for event in session.subscribe(request):
            seen.append(event["importProgress"])

    statuses = [event["status"] for event in seen]
    assert statuses[-1] == "SUCCEEDED"
    assert "RUNNING" in statuses
    assert set(statuses) <= {"QUEUED", "RUNNING", "SUCCEEDED"}
    processed = [event["processed"] for event in seen]
    assert processed == sorted(processed)
    assert seen[-1] == {
        "id": job_id,
        "status": "SUCCEEDED",
        "processed": 300,
        "total": 300,
    }
    count = server.post('{ grades(studentId: "LIVE-IMP") { totalCount } }')
    assert count["data"]["grades"]["totalCount"] == 300
    # Another connection's gradeEvents: one event for the student, every new grade.
    await wait_until(lambda: len(events) == 1)
    listener.cancel()
    await asyncio.gather(listener, return_exceptions=True)
    event = events[0]["gradeEvents"]
    assert (event["studentId"], event["gradeLevel"]) == ("LIVE-IMP", 9)
    assert [g["subject"] for g in event["grades"]] == [f"S{n}" for n in range(300)]


async def test_import_progress_of_an_unknown_job_is_not_found(server: Server) -> None:
    from gql.transport.exceptions import TransportQueryError

    async with ws_client(server) as session:
        request = GraphQLRequest(IMPORT_PROGRESS, variable_values={"jobId": "nope"})
        with pytest.raises(TransportQueryError) as caught:
            async for _ in session.subscribe(request):
                pass

    assert caught.value.errors is not None
    [error] = caught.value.errors
    assert error["extensions"]["code"] == "NOT_FOUND"
    assert error["message"] == "import job 'nope' does not exist"
