"""Unexpected errors in the log: database errors without their message or bound
values (SQLSTATE and where they were raised instead), other bugs with their
traceback."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from resolvers import students
from tests.factories import (
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
