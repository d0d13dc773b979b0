"""Unexpected errors in the log: database errors without their message or bound
values (SQLSTATE and where they were raised instead), other bugs with their
traceback."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from resolvers import students
from tests.factories import (
    create_student,
    post,
)


class UniqueViolation(Exception):
    sqlstate = "23505"


LEAKED = "leak.me@example.com"


def integrity_error() -> IntegrityError:
    return IntegrityError(
        "INSERT INTO students (email) VALUES ($1)",
        (LEAKED,),
        UniqueViolation(
            'duplicate key value violates unique constraint "student_email_key"\n'
            f"DETAIL:  Key (email)=({LEAKED}) already exists."
        ),
    )


@pytest.fixture
def error_log(caplog: pytest.LogCaptureFixture) -> Any:
    """Records of gradepulse.errors, which the app's logging setup may keep from
    propagating to the root logger where caplog listens."""
    logger = logging.getLogger("gradepulse.errors")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def logged(caplog: pytest.LogCaptureFixture) -> tuple[list[logging.LogRecord], str]:
    """The error records (each once) and their text as a log handler writes it,
    tracebacks included."""
    records = list(
        {
            id(record): record
            for record in caplog.records
            if record.name == "gradepulse.errors"
        }.values()
    )
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    return records, "\n".join(formatter.format(record) for record in records)


async def broken_students(monkeypatch: Any, error: BaseException) -> None:
    async def fail(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(students, "list_students", fail)


async def test_database_errors_are_logged_without_their_message(
    seeded_api, monkeypatch, error_log
):
    await broken_students(monkeypatch, integrity_error())

    body = (await post(seeded_api, "{ students { totalCount } }")).json()

    assert body["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    [record], text = logged(error_log)
    assert record.levelno == logging.ERROR
    assert record.exc_info is None
    assert LEAKED not in text
    assert "DETAIL" not in text
    assert "IntegrityError from UniqueViolation (SQLSTATE 23505)" in text
    assert ", in fail\n" in text  # where it was raised, still


async def test_a_bug_raised_from_a_database_error_hides_the_database_message(
    seeded_api, monkeypatch, error_log
):
    try:
        raise integrity_error()
    except IntegrityError as cause:
        wrapped = RuntimeError("could not create the student")
        wrapped.__cause__ = cause
    await broken_students(monkeypatch, wrapped)

    await post(seeded_api, "{ students { totalCount } }")

    [record], text = logged(error_log)
    assert LEAKED not in text
    assert "RuntimeError from UniqueViolation (SQLSTATE 23505)" in text


async def test_other_bugs_keep_their_traceback(seeded_api, monkeypatch, error_log):
    await broken_students(monkeypatch, KeyError("no such column"))

    body = (await post(seeded_api, "{ students { totalCount } }")).json()

    assert body["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    [record], text = logged(error_log)
    assert record.exc_info is not None
    assert "KeyError: 'no such column'" in text


SECRET_NAME = "Secret Name 7b1f"
DUPLICATE = text(
    "INSERT INTO students (student_id, name, email, grade_level, created_at) "
    "VALUES (:student_id, :name, :email, 9, :created_at)"
)


async def test_a_statement_failing_in_the_engine_hides_its_bound_values(
    api, monkeypatch, error_log, rows_in
):
    """A real INSERT that violates the unique email, through the app's engine."""
    await create_student(api, studentId="LEAK-1", email=LEAKED)
    values = {
        "student_id": "LEAK-2",
        "name": SECRET_NAME,
        "email": LEAKED,
        "created_at": datetime(2026, 1, 1, 8, 0),
    }

    async def duplicate(*args: Any, **kwargs: Any) -> Any:
        async with api.services.database.writing() as session:
            await session.execute(DUPLICATE, values)

    monkeypatch.setattr(students, "list_students", duplicate)
    body = (await post(api, "{ students { totalCount } }")).json()
    with pytest.raises(IntegrityError) as caught:
        await duplicate()

    assert body["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert body["errors"][0]["message"] == "Unexpected error."
    [record], text = logged(error_log)
    assert record.levelno == logging.ERROR
    assert "IntegrityError from" in text
    assert ", in duplicate\n" in text
    # Neither the log nor the driver error the engine raises carry a bound value.
    for shown in (text, str(caught.value), json.dumps(body)):
        for value in ("LEAK-2", SECRET_NAME, LEAKED):
            assert value not in shown, (value, shown)
    assert "[SQL parameters hidden due to hide_parameters=True]" in str(caught.value)
    assert await rows_in("students") == 1
