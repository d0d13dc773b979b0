"""The FERPA audit log: one record per response with exactly the students it returned,
group commit, withheld data when the record fails, write records, auditLog."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError
from websockets.asyncio.client import connect

from db.audit import AuditLog, AuditNotWritten, NewAuditEntry, insert_entries
from db.engine import create_database, create_tables
from monitoring.tally import Tally, count_statement, current_tally
from resolvers.audit import UNAVAILABLE_MESSAGE, WRITE_UNAVAILABLE_MESSAGE
from tests.conftest import make_settings
from tests.factories import (
    TEST_JWT_SECRET,
    add_grade,
    bearer_header,
    create_student,
    jwt_token,
    post,
    serve_in_process,
    wait_until,
)

ANONYMOUS = "ip:127.0.0.1"  # the anonymous loopback admin of the development profile

STUDENTS_WITH_GRADES = (
    "query { students(first: 5) { edges { node { studentId grades { score } } } } }"
)
ONE_ANALYTICS = (
    'query One { student(studentId: "S00007") { name analytics { average } } }'
)
GRADES_OF = (
    "query($id: String!) { grades(studentId: $id, first: 3) "
    "{ edges { node { studentId score } } } }"
)
GRADE_ADD = """
mutation($input: GradeAddInput!) {
  gradeAdd(input: $input) {
    __typename ... on GradeAddSuccess { grade { id studentId score } }
  }
}
"""
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
AUDIT_LOG = """
query Audit($studentId: String, $actor: String, $since: DateTime, $before: DateTime,
            $first: Int! = 20, $after: String) {
  auditLog(studentId: $studentId, actor: $actor, recordedSince: $since,
           recordedBefore: $before, first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { node { at actor role operation action requestId studentIds } }
  }
}
"""


def answer(response: httpx.Response) -> tuple[str, dict[str, Any]]:
    """(the request id the app gave the request, the JSON body)."""
    body: dict[str, Any] = response.json()
    return response.headers["x-request-id"], body


Row = tuple[str, str, str, str, list[str]]


async def records(api: Any, request_id: str | None = None) -> list[Row]:
    """(actor, role, operation, action, student ids) of the stored records, oldest
    first; only those of one request when given (the seeded database is shared)."""
    where = "WHERE request_id = :rid " if request_id is not None else ""
    async with api.services.database.sessions() as session:
        rows = await session.execute(
            text(
                "SELECT actor, role, operation, action, student_ids FROM audit_log "
                f"{where}ORDER BY id"
            ),
            {"rid": request_id} if request_id is not None else {},
        )
        return [(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]


async def indexed(api: Any) -> list[tuple[int, str]]:
    async with api.services.database.sessions() as session:
        rows = await session.execute(
            text("SELECT audit_id, student_id FROM audit_students ORDER BY 1, 2")
        )
        return [(r[0], r[1]) for r in rows]


# --- one record per response, with exactly its students -----------------------------


async def test_students_page_with_grades_is_one_record_of_its_five_students(
    seeded_api,
):
    request_id, body = answer(await post(seeded_api, STUDENTS_WITH_GRADES))

    ids = [edge["node"]["studentId"] for edge in body["data"]["students"]["edges"]]
    assert ids == ["S00001", "S00002", "S00003", "S00004", "S00005"]
    assert all(
        len(e["node"]["grades"]) == 12 for e in body["data"]["students"]["edges"]
    )
    assert await records(seeded_api, request_id) == [
        (ANONYMOUS, "admin", "query:students", "read", ids)
    ]


async def test_one_students_analytics_is_recorded_under_the_operation_name(
    seeded_api,
):
    request_id, body = answer(await post(seeded_api, ONE_ANALYTICS))

    assert body["data"]["student"]["analytics"]["average"] is not None
    assert await records(seeded_api, request_id) == [
        (ANONYMOUS, "admin", "One", "read", ["S00007"])
    ]


async def test_grades_by_student_are_recorded(seeded_api):
    request_id, body = answer(await post(seeded_api, GRADES_OF, {"id": "S00003"}))

    nodes = [edge["node"] for edge in body["data"]["grades"]["edges"]]
    assert [node["studentId"] for node in nodes] == ["S00003"] * 3
    assert await records(seeded_api, request_id) == [
        (ANONYMOUS, "admin", "query:grades", "read", ["S00003"])
    ]


async def test_aliased_fields_of_one_response_share_one_sorted_record(seeded_api):
    request_id, body = answer(
        await post(
            seeded_api,
            """{ b: studentAnalytics(studentId: "S00012") { average }
             a: student(studentId: "S00010") { grades { score } }
             c: grades(studentId: "S00010", first: 1) { edges { node { score } } }
             d: atRiskStudents(first: 2) { edges { node { studentId } } } }""",
        )
    )

    at_risk = [e["node"]["studentId"] for e in body["data"]["d"]["edges"]]
    assert len(at_risk) == 2
    expected = sorted({"S00010", "S00012", *at_risk})
    assert await records(seeded_api, request_id) == [
        (
            ANONYMOUS,
            "admin",
            "query:studentAnalytics,student,grades,atRiskStudents",
            "read",
            expected,
        )
    ]


async def test_class_rankings_are_recorded_but_aggregates_are_not(seeded_api):
    aggregates_id, _ = answer(
        await post(
            seeded_api, "{ classAnalytics(gradeLevel: 3) { mean median gradeCount } }"
        )
    )
    ranking_id, body = answer(
        await post(
            seeded_api,
            "{ classAnalytics(gradeLevel: 3) { top { studentId } bottom { studentId } } }",
        )
    )

    named = {
        row["studentId"]
        for part in ("top", "bottom")
        for row in body["data"]["classAnalytics"][part]
    }
    assert len(named) >= 5
    assert await records(seeded_api, aggregates_id) == []
    assert await records(seeded_api, ranking_id) == [
        (ANONYMOUS, "admin", "query:classAnalytics", "read", sorted(named))
    ]


async def test_responses_without_grades_or_analytics_write_no_record(seeded_api):
    directory_id, body = answer(
        await post(
            seeded_api,
            "{ students(first: 5) { edges { node { studentId name email } } } subjects }",
        )
    )
    nobody_id, empty = answer(await post(seeded_api, GRADES_OF, {"id": "NOBODY"}))
    absent_id, absent = answer(
        await post(seeded_api, '{ student(studentId: "NOBODY") { grades { score } } }')
    )

    assert len(body["data"]["students"]["edges"]) == 5
    assert empty["data"]["grades"]["edges"] == []
    assert absent["data"] == {"student": None}
    for request_id in (directory_id, nobody_id, absent_id):
        assert await records(seeded_api, request_id) == []


async def test_audit_inserts_are_not_counted_as_the_operations_statements(
    seeded_api,
):
    seeded_api.counter.reset()
    request_id, body = answer(await post(seeded_api, STUDENTS_WITH_GRADES))

    # The page and its grades: the audit record goes through the log's own engine.
    assert seeded_api.counter.statements == seeded_api.counter.reads
    assert len(seeded_api.counter.reads) == 2
    assert body["extensions"]["cost"]["dbQueries"] == 2
    assert len(await records(seeded_api, request_id)) == 1


# --- group commit -------------------------------------------------------------------


async def test_concurrent_records_share_one_commit(scratch_url):
    database = create_database(scratch_url)
    await create_tables(database)
    log = AuditLog(database)
    inserts: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT"):
            inserts.append(statement)

    event.listen(database.engine.sync_engine, "before_cursor_execute", count)
    log.start()
    try:
        entries = [
            NewAuditEntry(
                at=datetime(2026, 1, 1, 9, 0, n),
                actor=f"user:{n}",
                role="teacher",
                operation="query:students",
                action="read",
                request_id=f"r{n}",
                student_ids=(f"S{n:05d}", "S99999"),
            )
            for n in range(20)
        ]
        await asyncio.gather(*(log.record(entry) for entry in entries))
    finally:
        await log.stop()
    async with database.sessions() as session:
        stored = (
            await session.execute(text("SELECT count(*) FROM audit_log"))
        ).scalar_one()
        links = (
            await session.execute(text("SELECT count(*) FROM audit_students"))
        ).scalar_one()
    await database.dispose()

    assert (log.flushes, log.failures) == (1, 0)
    assert len(inserts) == 2  # the records, then their student index
    assert (stored, links) == (20, 40)


async def test_a_failed_batch_fails_every_waiter_and_a_stopped_log_refuses(tmp_path):
    # A database that cannot be opened: its directory does not exist.
    database = create_database(f"sqlite+aiosqlite:///{tmp_path / 'none' / 'a.db'}")
    log = AuditLog(database)
    log.start()
    entries = [_entry(9, f"user:{n}", ("S1",)) for n in range(3)]

    results = await asyncio.gather(
        *(log.record(entry) for entry in entries), return_exceptions=True
    )
    await log.stop()
    with pytest.raises(AuditNotWritten):
        await log.record(entries[0])
    await database.dispose()

    assert [type(result) for result in results] == [AuditNotWritten] * 3
    assert all(isinstance(r.__cause__, OperationalError) for r in results)
    assert (log.flushes, log.failures) == (0, 1)


async def test_flusher_statements_are_not_charged_to_the_operation_that_started_it(
    scratch_url,
):
    database = create_database(scratch_url)
    await create_tables(database)
    event.listen(
        database.engine.sync_engine,
        "before_cursor_execute",
        lambda *args: count_statement(),
    )
    log = AuditLog(database)
    tally = Tally()
    token = current_tally.set(tally)  # as if an operation started the app
    try:
        log.start()
        await log.record(_entry(9, "user:a", ("S1",)))
    finally:
        current_tally.reset(token)
        await log.stop()
        await database.dispose()

    assert (log.flushes, tally.db_queries) == (1, 0)


async def test_concurrent_requests_share_commits(seeded_api):
    audit = seeded_api.services.audit
    flushes = audit.flushes

    results = await asyncio.gather(
        *(post(seeded_api, GRADES_OF, {"id": f"S{n:05d}"}) for n in range(1, 21))
    )

    assert audit.flushes - flushes < 20
    for n, (request_id, body) in enumerate(map(answer, results), start=1):
        assert len(body["data"]["grades"]["edges"]) == 3
        assert await records(seeded_api, request_id) == [
            (ANONYMOUS, "admin", "query:grades", "read", [f"S{n:05d}"])
        ]


# --- a failing record withholds the data --------------------------------------------


async def drop_student_index(api: Any) -> None:
    async with api.services.database.engine.begin() as conn:
        await conn.execute(text("DROP TABLE audit_students"))


async def test_failing_audit_write_withholds_the_data(api, rows_in):
    await create_student(api, studentId="W-1", gradeLevel=4)
    await add_grade(api, "W-1", subject="Chemistry", score=87.25)
    before = await rows_in("audit_log")
    await drop_student_index(api)
    handler = _capture("gradepulse.audit")

    request_id = uuid.uuid4().hex
    response = await api.http.post(
        "/graphql",
        json={
            "query": '{ student(studentId: "W-1") { name grades { subject score } } '
            "subjects }"
        },
        headers={"X-Request-ID": request_id},
    )

    body = response.json()
    assert body["data"] is None
    assert body["errors"] == [
        {
            "message": UNAVAILABLE_MESSAGE,
            "extensions": {"code": "DB_UNAVAILABLE", "requestId": request_id},
        }
    ]
    for value in ("Chemistry", "87.25", "W-1", "Test Student"):
        assert value not in response.text
    assert await rows_in("audit_log") == before  # the failed batch was rolled back
    messages = [record.getMessage() for record in handler.records]
    assert len(messages) == 2
    assert messages[0].startswith("audit records not written: ")
    assert messages[1] == ("response withheld, audit record failed: AuditUnavailable")
    assert not any("W-1" in m or "87.25" in m for m in messages)


async def test_a_write_whose_record_fails_is_not_made(api, rows_in):
    await create_student(api, studentId="W-2", gradeLevel=4)
    await drop_student_index(api)

    _, body = answer(
        await post(
            api,
            GRADE_ADD,
            {"input": {"studentId": "W-2", "subject": "Art", "score": 50}},
        )
    )

    assert body["data"] is None  # gradeAdd is non-null
    assert [e["extensions"]["code"] for e in body["errors"]] == ["DB_UNAVAILABLE"]
    assert body["errors"][0]["message"] == WRITE_UNAVAILABLE_MESSAGE
    assert await rows_in("grades") == 0
    assert await rows_in("audit_log") == 0


def _capture(name: str) -> Any:
    """Our loggers do not propagate (app.py): listen on the logger itself."""

    class Handler(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    handler = Handler()
    logging.getLogger(name).addHandler(handler)
    return handler


@pytest.fixture(autouse=True)
def _remove_capture_handlers() -> Any:
    yield
    logger = logging.getLogger("gradepulse.audit")
    for handler in list(logger.handlers):
        if type(handler).__name__ == "Handler":
            logger.removeHandler(handler)


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


# --- auditLog -----------------------------------------------------------------------


def _entry(
    hour: int, actor: str, ids: tuple[str, ...], action: str = "read"
) -> NewAuditEntry:
    return NewAuditEntry(
        at=datetime(2026, 1, 1, hour),
        actor=actor,
        role="teacher" if actor.startswith("user:") else "admin",
        operation=f"op{hour}",
        action=action,
        request_id=f"req-{hour}-{actor}",
        student_ids=ids,
    )


ENTRIES = [
    _entry(10, "user:a", ("S1",)),  # e1
    _entry(11, "user:b", ("S1", "S2")),  # e2
    _entry(12, "user:a", ("S2",)),  # e3
    _entry(12, "user:a", ("S1", "S3"), "write"),  # e4: same time, later id
    _entry(13, "key:7", ("S3",)),  # e5
]


@pytest.fixture
async def logged(api: Any) -> Any:
    async with api.services.database.writing() as session:
        await insert_entries(session, ENTRIES[:2])
    async with api.services.database.writing() as session:
        await insert_entries(session, ENTRIES[2:])
    return api


async def audit_page(api: Any, **variables: Any) -> dict[str, Any]:
    _, body = answer(await post(api, AUDIT_LOG, variables))
    assert "errors" not in body, body
    page: dict[str, Any] = body["data"]["auditLog"]
    return page


def requests_of(page: dict[str, Any]) -> list[str]:
    return [edge["node"]["requestId"] for edge in page["edges"]]


def request_of(n: int) -> str:
    entry = ENTRIES[n - 1]
    assert entry.request_id is not None
    return entry.request_id


async def test_audit_log_pages_newest_first(logged):
    first = await audit_page(logged, first=2)
    second = await audit_page(logged, first=2, after=first["pageInfo"]["endCursor"])
    third = await audit_page(logged, first=2, after=second["pageInfo"]["endCursor"])

    assert requests_of(first) == [request_of(5), request_of(4)]
    assert requests_of(second) == [request_of(3), request_of(2)]
    assert requests_of(third) == [request_of(1)]
    assert [p["pageInfo"]["hasNextPage"] for p in (first, second, third)] == [
        True,
        True,
        False,
    ]
    assert first["totalCount"] == 5
    assert first["edges"][1]["node"] == {
        "at": "2026-01-01T12:00:00Z",
        "actor": "user:a",
        "role": "teacher",
        "operation": "op12",
        "action": "WRITE",
        "requestId": "req-12-user:a",
        "studentIds": ["S1", "S3"],
    }
    assert first["edges"][0]["node"]["action"] == "READ"


async def test_audit_log_filters(logged):
    by_student = await audit_page(logged, studentId="S1")
    by_actor = await audit_page(logged, actor="user:a")
    by_time = await audit_page(
        logged, since="2026-01-01T11:00:00Z", before="2026-01-01T13:00:00Z"
    )
    both = await audit_page(logged, studentId="S1", actor="user:a")
    nobody = await audit_page(logged, studentId="S9")
    paged = await audit_page(logged, studentId="S1", first=1)
    rest = await audit_page(
        logged, studentId="S1", first=1, after=paged["pageInfo"]["endCursor"]
    )

    assert requests_of(by_student) == [request_of(4), request_of(2), request_of(1)]
    assert by_student["totalCount"] == 3
    assert requests_of(by_actor) == [request_of(4), request_of(3), request_of(1)]
    assert requests_of(by_time) == [request_of(4), request_of(3), request_of(2)]
    assert requests_of(both) == [request_of(4), request_of(1)]
    assert (requests_of(nobody), nobody["totalCount"]) == ([], 0)
    assert nobody["pageInfo"] == {"hasNextPage": False, "endCursor": None}
    assert requests_of(paged) == [request_of(4)]
    assert requests_of(rest) == [request_of(2)]


async def test_reading_the_audit_log_is_not_recorded(logged):
    await audit_page(logged, first=5)

    assert len(await records(logged)) == 5


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"first": 0}, "first must be between 1 and 100, got 0"),
        ({"after": "bm9wZQ"}, "invalid cursor 'bm9wZQ' for this list"),
    ],
)
async def test_audit_log_refuses_bad_arguments(api, variables, message):
    _, body = answer(await post(api, AUDIT_LOG, variables))

    assert body["data"] is None
    assert [(e["message"], e["extensions"]["code"]) for e in body["errors"]] == [
        (message, "BAD_USER_INPUT")
    ]


@pytest.mark.parametrize("role", ["teacher", "student"])
async def test_audit_log_is_forbidden_to_others_than_admins(
    make_api, scratch_url, role
):
    api = await make_api(scratch_url, jwt_secret=TEST_JWT_SECRET)
    async with api.services.database.writing() as session:
        await insert_entries(session, ENTRIES)
    claims = {"student_id": "S1"} if role == "student" else {}

    _, body = answer(
        await post(api, AUDIT_LOG, {}, headers=bearer_header(jwt_token(role, **claims)))
    )

    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]
    assert "S1" not in json.dumps(body)


# --- WebSocket: queries are recorded per operation, events per event -----------------


class Served:
    """The real app under uvicorn in this event loop, so that a test can reach into
    its services while a WebSocket client talks to it."""

    def __init__(self, app: Any, port: int) -> None:
        self.app = app
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/graphql"

    async def post(self, query: str) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.url) as http:
            response = await http.post("/graphql", json={"query": query})
        body: dict[str, Any] = response.json()
        return body

    @contextlib.contextmanager
    def audit_unreachable(self) -> Iterator[None]:
        """The audit log's database cannot be opened while inside."""
        audit = self.app.state.services.audit
        broken = create_database("sqlite+aiosqlite:////nonexistent-dir/audit.db")
        working, audit.database = audit.database, broken
        try:
            yield
        finally:
            audit.database = working


@contextlib.asynccontextmanager
async def served(database_url: str) -> AsyncIterator[Served]:
    from app import create_app

    app = create_app(make_settings(database_url))
    async with serve_in_process(app) as port:
        yield Served(app, port)


async def ws_records(served: Served) -> list[tuple[str, str, str, list[str]]]:
    async with served.app.state.services.database.sessions() as session:
        rows = await session.execute(
            text(
                "SELECT operation, action, request_id, student_ids FROM audit_log "
                "ORDER BY id"
            )
        )
        return [(r[0], r[1], r[2], json.loads(r[3])) for r in rows]


@contextlib.asynccontextmanager
async def ws_session(served: Served) -> AsyncIterator[Any]:
    async with connect(served.ws_url, subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert ack["type"] == "connection_ack"
        yield ws


async def subscribe(ws: Any, number: int, query: str) -> None:
    message = {"id": str(number), "type": "subscribe", "payload": {"query": query}}
    await ws.send(json.dumps(message))


async def receive(ws: Any) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
    return message


CREATE = (
    'mutation {{ studentCreate(input: {{studentId: "{0}", name: "{0}", '
    'email: "{0}@school.example", gradeLevel: 5}}) {{ __typename }} }}'
)
ADD = (
    'mutation {{ gradeAdd(input: {{studentId: "{0}", subject: "Math", '
    "score: {1}}}) {{ __typename }} }}"
)
GRADES_OF_WS = '{{ student(studentId: "{0}") {{ grades {{ score }} }} }}'


async def test_websocket_queries_are_recorded_per_operation_and_withheld_on_failure(
    scratch_url,
):
    async with served(scratch_url) as server:
        await server.post(CREATE.format("WS-1"))
        await server.post(ADD.format("WS-1", 66.5))
        async with ws_session(server) as ws:
            await subscribe(ws, 1, GRADES_OF_WS.format("WS-1"))
            first = await receive(ws)
            assert await receive(ws) == {"id": "1", "type": "complete"}
            # The same connection, no student data: no record (the set is reset).
            await subscribe(ws, 2, "{ subjects }")
            second = await receive(ws)
            assert await receive(ws) == {"id": "2", "type": "complete"}
            after_two = await ws_records(server)
            with server.audit_unreachable():
                await subscribe(ws, 3, GRADES_OF_WS.format("WS-1"))
                third = await receive(ws)

    assert first["payload"]["data"] == {"student": {"grades": [{"score": 66.5}]}}
    assert second["payload"]["data"] == {"subjects": ["Math"]}
    assert [(r[0], r[1], r[3]) for r in after_two] == [
        ("mutation:gradeAdd", "write", ["WS-1"]),
        ("query:student", "read", ["WS-1"]),
    ]
    assert third["type"] == "next"
    assert third["payload"]["data"] is None
    assert [
        (e["message"], e["extensions"]["code"]) for e in third["payload"]["errors"]
    ] == [(UNAVAILABLE_MESSAGE, "DB_UNAVAILABLE")]
    assert "66.5" not in json.dumps(third)


async def test_grade_events_are_recorded_per_event_before_they_are_sent(scratch_url):
    async with served(scratch_url) as server:
        await server.post(CREATE.format("EV-1"))
        registry = server.app.state.monitor.registry
        async with ws_session(server) as ws:
            await subscribe(
                ws, 1, "subscription { gradeEvents { studentId grades { score } } }"
            )
            await wait_until(lambda: registry.active_subscriptions >= 1)
            await server.post(ADD.format("EV-1", 91))
            sent = await receive(ws)
            recorded = await ws_records(server)
            with server.audit_unreachable():
                await server.post(ADD.format("EV-1", 92.375))
                refused = await receive(ws)
            ended = await receive(ws)
        final = await ws_records(server)

    assert sent["payload"]["data"] == {
        "gradeEvents": {"studentId": "EV-1", "grades": [{"score": 91.0}]}
    }
    assert [(r[0], r[1], r[3]) for r in recorded] == [
        ("mutation:gradeAdd", "write", ["EV-1"]),
        ("subscription:gradeEvents", "read", ["EV-1"]),
    ]
    # The event whose record failed is not sent: the stream ends with the error.
    assert refused["type"] == "next"
    assert refused["payload"]["data"] is None
    assert [
        (e["message"], e["extensions"]["code"]) for e in refused["payload"]["errors"]
    ] == [(UNAVAILABLE_MESSAGE, "DB_UNAVAILABLE")]
    assert "92.375" not in json.dumps(refused)
    assert ended == {"id": "1", "type": "complete"}
    assert [(r[0], r[1]) for r in final] == [
        ("mutation:gradeAdd", "write"),
        ("subscription:gradeEvents", "read"),
        ("mutation:gradeAdd", "write"),
    ]
