"""`python -m resolvers.keys`: create shows a key once and stores only its hash; list
and revoke; bad arguments exit 2 with one line; a student's key dies with them."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from cli.keys import main
from db import models
from db.engine import Database
from db.keys import insert_key
from db.students import delete_student
from resolvers.auth import Authenticator
from resolvers.errors import Unauthenticated
from tests.factories import DB_STUDENT

ROOT = Path(__file__).resolve().parents[1]
STUDENT = DB_STUDENT  # the one student of the `database` fixture
KEY_PATTERN = re.compile(r"gp_[A-Za-z0-9_-]{43}")


async def keys(
    url: str, capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, str, str]:
    """Run the command line in a thread (it starts its own event loop)."""
    code = await asyncio.to_thread(main, [*argv, "--database-url", url])
    out, err = capsys.readouterr()
    return code, out, err


async def rows(database: Database) -> list[dict[str, Any]]:
    async with database.sessions() as session:
        result = await session.execute(
            select(models.ApiKey.__table__).order_by(text("id"))
        )
        return [dict(row._mapping) for row in result]


def authenticator(database: Database) -> Authenticator:
    return Authenticator(database, auth_required=True, key_cache_ttl_s=0)


async def test_create_shows_the_key_once_and_stores_only_its_hash(
    database: Database, scratch_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await keys(
        scratch_url,
        capsys,
        *("create", "--role", "teacher", "--name", "Ms Smith"),
        *("--grade-levels", "10,9", "--expires-in-days", "30"),
    )

    assert code == 0
    key = out.strip()
    assert KEY_PATTERN.fullmatch(key), out
    assert out == key + "\n"  # stdout holds the key and nothing else
    assert re.fullmatch(
        rf"created API key 1 \(gp_{re.escape(key[3:11])}\) for teacher 'Ms Smith', "
        r"grade levels 9,10, expires \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\. This is the "
        r"only time the key is shown: store it now\.\n",
        err,
    ), err
    [row] = await rows(database)
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert row["prefix"] == key[3:11]
    assert (row["name"], row["role"], row["grade_levels"], row["student_id"]) == (
        "Ms Smith",
        "teacher",
        "9,10",
        None,
    )
    assert row["expires_at"] - row["created_at"] == timedelta(days=30)
    assert row["revoked_at"] is None
    # Nothing in the table holds the key, or its secret part, in clear.
    for value in row.values():
        assert key[3:] not in str(value)
        assert key[11:] not in str(value)
    listing = await keys(scratch_url, capsys, "list")
    assert key[11:] not in listing[1]
    assert row["key_hash"] not in listing[1]
    viewer = await authenticator(database).authenticate(f"Bearer {key}", None)
    assert (viewer.identity, viewer.role, viewer.grade_levels) == (
        "key:1",
        "teacher",
        frozenset({9, 10}),
    )


async def test_sqlite_file_never_holds_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keys.db"

    code, out, _ = await keys(
        f"sqlite:///{path}", capsys, "create", "--role", "admin", "--name", "Ops"
    )

    assert code == 0
    key = out.strip()
    stored = b"".join(
        p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("keys.db")
    )
    assert hashlib.sha256(key.encode()).hexdigest().encode() in stored
    assert key[3:].encode() not in stored
    assert key[11:].encode() not in stored


async def test_student_key_names_its_student_and_expires_at_the_given_time(
    database: Database, scratch_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await keys(
        scratch_url,
        capsys,
        *("create", "--role", "student", "--name", "Key Student"),
        *("--student-id", STUDENT, "--expires-at", "2999-01-02T03:04:05+02:00"),
    )

    assert code == 0
    assert f"student {STUDENT}, expires 2999-01-02T01:04:05Z." in err
    [row] = await rows(database)
    assert (row["role"], row["student_id"], row["grade_levels"]) == (
        "student",
        STUDENT,
        None,
    )
    assert row["expires_at"] == datetime(2999, 1, 2, 1, 4, 5)
    viewer = await authenticator(database).authenticate(f"Bearer {out.strip()}", None)
    assert (viewer.role, viewer.student_id) == ("student", STUDENT)


async def test_list_shows_every_key_without_secrets(
    database: Database, scratch_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await keys(scratch_url, capsys, "list") == (0, "no API keys\n", "")
    made = []
    for argv in (
        ("--role", "teacher", "--name", "Ms Smith", "--grade-levels", "9"),
        ("--role", "student", "--name", "Kid", "--student-id", STUDENT),
        ("--role", "admin", "--name", "Ops"),
    ):
        code, out, _ = await keys(scratch_url, capsys, "create", *argv)
        assert code == 0
        made.append(out.strip())
    assert (await keys(scratch_url, capsys, "revoke", "3"))[0] == 0

    code, out, err = await keys(scratch_url, capsys, "list")

    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == [
        *("id", "prefix", "name", "role", "levels", "student"),
        *("created", "expires", "revoked"),
    ]
    cells = [re.split(r"\s{2,}", line) for line in lines[1:]]
    assert [row[:6] for row in cells] == [
        ["1", f"gp_{made[0][3:11]}", "Ms Smith", "teacher", "9", "-"],
        ["2", f"gp_{made[1][3:11]}", "Kid", "student", "-", STUDENT],
        ["3", f"gp_{made[2][3:11]}", "Ops", "admin", "-", "-"],
    ]
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    assert [row[7] for row in cells] == ["-", "-", "-"]  # no expiry
    assert [bool(re.fullmatch(stamp, row[8])) for row in cells] == [
        False,
        False,
        True,
    ]
    for key in made:
        assert key[11:] not in out
    for row in await rows(database):
        assert row["key_hash"] not in out


async def test_revoke_by_prefix_then_again_keeps_the_first_time(
    database: Database, scratch_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await keys(
        scratch_url, capsys, "create", "--role", "admin", "--name", "A"
    )
    assert code == 0
    key = out.strip()
    before = await authenticator(database).authenticate(f"Bearer {key}", None)
    assert before.role == "admin"

    code, out, err = await keys(scratch_url, capsys, "revoke", f"gp_{key[3:11]}")

    assert (code, err) == (0, "")
    assert re.fullmatch(
        rf"revoked API key 1 \(gp_{re.escape(key[3:11])}, 'A'\) at "
        r"(\S+); running servers refuse it within API_KEY_CACHE_TTL_S seconds\n",
        out,
    ), out
    [row] = await rows(database)
    first = row["revoked_at"]
    assert first is not None
    with pytest.raises(Unauthenticated, match="^unknown or revoked API key$"):
        await authenticator(database).authenticate(f"Bearer {key}", None)

    code, out, _ = await keys(scratch_url, capsys, "revoke", key[3:11])

    assert code == 0
    assert out == (
        f"API key 1 (gp_{key[3:11]}) was already revoked at "
        f"{first.strftime('%Y-%m-%dT%H:%M:%SZ')}\n"
    )
    assert (await rows(database))[0]["revoked_at"] == first


async def test_revoke_refuses_an_ambiguous_prefix(
    database: Database, scratch_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with database.writing() as session:
        for tail in ("x" * 35, "y" * 35):
            await insert_key(
                session,
                key="gp_SAMEPREF" + tail,
                name="twin",
                role="admin",
                created_at=datetime(2026, 1, 1),
            )

    code, out, err = await keys(scratch_url, capsys, "revoke", "gp_SAMEPREF")

    assert (code, out) == (2, "")
    assert err == "error: prefix gp_SAMEPREF matches keys 1, 2: revoke by id\n"
    assert [row["revoked_at"] for row in await rows(database)] == [None, None]


async def test_deleting_a_student_deletes_their_key(
    database: Database, scratch_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await keys(
        scratch_url,
        capsys,
        *("create", "--role", "student", "--name", "Kid", "--student-id", STUDENT),
    )
    assert code == 0
    key = out.strip()
    before = await authenticator(database).authenticate(f"Bearer {key}", None)
    assert (before.role, before.student_id) == ("student", STUDENT)
    assert len(await rows(database)) == 1

    async with database.writing() as session:
        await delete_student(session, STUDENT, cascade=True)

    assert await rows(database) == []
    with pytest.raises(Unauthenticated, match="^unknown or revoked API key$"):
        await authenticator(database).authenticate(f"Bearer {key}", None)


CREATE = ("create", "--name", "X")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ("create", "--role", "boss", "--name", "X"),
            "argument --role: invalid choice: 'boss' "
            "(choose from 'admin', 'teacher', 'student')",
        ),
        (("create", "--name", "X"), "the following arguments are required: --role"),
        ((*CREATE, "--role", "student"), "the student role needs --student-id"),
        (
            (*CREATE, "--role", "student", "--student-id", "NOPE"),
            "student 'NOPE' does not exist",
        ),
        (
            (*CREATE, "--role", "teacher", "--grade-levels", "9,13"),
            "argument --grade-levels: '13' is not a grade level "
            "(whole numbers 1-12, e.g. 9,10)",
        ),
        (
            (*CREATE, "--role", "teacher", "--grade-levels", "0"),
            "argument --grade-levels: '0' is not a grade level "
            "(whole numbers 1-12, e.g. 9,10)",
        ),
        (
            (*CREATE, "--role", "admin", "--grade-levels", "9"),
            "--grade-levels applies to the teacher role only",
        ),
        (
            (*CREATE, "--role", "teacher", "--student-id", STUDENT),
            "--student-id applies to the student role only",
        ),
        (
            ("create", "--role", "admin", "--name", "  "),
            "--name must not be blank",
        ),
        (
            (*CREATE, "--role", "admin", "--expires-at", "2020-01-01T00:00:00Z"),
            "--expires-at is in the past",
        ),
        (
            (*CREATE, "--role", "admin", "--expires-at", "next week"),
            "argument --expires-at: 'next week' is not an ISO 8601 time "
            "(e.g. 2026-06-30T00:00:00Z)",
        ),
        (
            (*CREATE, "--role", "admin", "--expires-in-days", "0"),
            "argument --expires-in-days: '0' is not a positive number of days",
        ),
        (
            (
                *(*CREATE, "--role", "admin", "--expires-in-days", "3"),
                *("--expires-at", "2999-01-01"),
            ),
            "argument --expires-at: not allowed with argument --expires-in-days",
        ),
        (("revoke", "7"), "no API key with id 7"),
        (("revoke", "gp_ABCDEFGH"), "no API key with prefix gp_ABCDEFGH"),
        (
            ("revoke", "gp_short"),
            "'gp_short' is neither a key id nor a key prefix "
            "(gp_ and 8 characters, as listed)",
        ),
    ],
)
async def test_bad_arguments_exit_2_with_one_line_and_write_nothing(
    database: Database,
    scratch_url: str,
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
    message: str,
) -> None:
    code, out, err = await keys(scratch_url, capsys, *argv)

    assert (code, out) == (2, "")
    assert err == f"error: {message}\n"
    assert await rows(database) == []


def test_module_entry_point_reads_database_url_from_the_environment(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    env.pop("TEST_DATABASE_URL", None)

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "resolvers.keys", *argv],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    created = run("create", "--role", "admin", "--name", "Ops")
    listed = run("list")

    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert KEY_PATTERN.fullmatch(key)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].startswith(f"1   gp_{key[3:11]}  Ops ")
    assert run("create", "--role", "admin").returncode == 2
