"""The FERPA audit log: group commit, and a failing record withholds the data."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from db.audit import AuditLog, AuditNotWritten, NewAuditEntry
from db.engine import create_database
from db.migrations import create_at_head
from monitoring.tally import Tally, count_statement, current_tally
from resolvers.audit import UNAVAILABLE_MESSAGE, WRITE_UNAVAILABLE_MESSAGE
from tests.factories import (
    add_grade,
    create_student,
    post,
)
from tests.factories.audit import (
    ANONYMOUS,
    GRADE_ADD,
    GRADES_OF,
    answer,
    audit_entry,
    records,
)

# --- group commit -------------------------------------------------------------------


async def test_concurrent_records_share_one_commit(scratch_url):
    database = create_database(scratch_url)
    await create_at_head(database)
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
    entries = [audit_entry(9, f"user:{n}", ("S1",)) for n in range(3)]

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
    await create_at_head(database)
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
        await log.record(audit_entry(9, "user:a", ("S1",)))
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
