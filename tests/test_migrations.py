"""Migrations: the history builds what the models say, create_all databases are stamped
with their rows kept, concurrent starts migrate once, staging refuses a database not
at head, and `python -m cli.migrate` (make migrate) upgrades and is idempotent."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from asgi_lifespan import LifespanManager
from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from app import StartRefused, check_schema, create_app
from db import models
from db.engine import Database, create_database
from db.migrations import BASELINE, MigrationError, Upgrade, head, revision, upgrade
from tests.conftest import make_settings
from tests.factories import ROOT, TEST_JWT_SECRET, free_port
from tests.factories.migrations import seed_old_schema, upgrade_to

TIMEOUT_S = 60  # every wait below is bounded by this
HEAD = head()


@pytest.fixture
async def scratch(scratch_url: str) -> AsyncIterator[Database]:
    database = create_database(scratch_url)
    yield database
    await database.dispose()


def _differences(connection: Connection) -> list[Any]:
    return list(
        compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    )


async def differences(database: Database) -> list[Any]:
    """What autogenerate would write to make the database match the models."""
    async with database.engine.connect() as conn:
        return await conn.run_sync(_differences)


async def tables(database: Database) -> set[str]:
    async with database.engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def version_rows(database: Database) -> list[str]:
    async with database.sessions() as session:
        result = await session.execute(text("SELECT version_num FROM alembic_version"))
        return [row[0] for row in result]


async def all_rows(database: Database) -> tuple[list[tuple[Any, ...]], ...]:
    """The rows of students and grades, in the columns the first revision had."""
    s, g = models.Student.__table__.c, models.Grade.__table__.c
    first = (s.id, s.student_id, s.name, s.email, s.grade_level, s.created_at)
    async with database.sessions() as session:
        students = (await session.execute(select(*first).order_by(s.id))).all()
        grades = (await session.execute(select(*g).order_by(g.id))).all()
    return [tuple(r) for r in students], [tuple(r) for r in grades]


def _first_revision_without_history(connection: Connection) -> None:
    upgrade_to(connection, BASELINE)
    connection.execute(text("DROP TABLE alembic_version"))


async def legacy_database(database: Database) -> tuple[list[tuple[Any, ...]], ...]:
    """A database as every demo was made before migrations: create_all of that
    day's models (the first revision's tables and columns, with no history), then
    rows."""
    async with database.write_engine.begin() as conn:
        await conn.run_sync(_first_revision_without_history)
    await seed_old_schema(database, students=8, grades_per_student=3, seed=7)
    return await all_rows(database)


# --- upgrade ------------------------------------------------------------------------


async def test_upgrading_an_empty_database_builds_what_the_models_say(
    scratch: Database,
):
    done = await upgrade(scratch)

    assert done == Upgrade(before=None, after=HEAD, stamped=False)
    assert await differences(scratch) == []
    assert await tables(scratch) == {t for t in SQLModel.metadata.tables} | {
        "alembic_version"
    }
    assert await version_rows(scratch) == [HEAD]
    assert (await revision(scratch)).at_head


async def test_upgrading_a_database_at_head_changes_nothing(scratch: Database):
    await upgrade(scratch)

    again = await upgrade(scratch)

    assert again == Upgrade(before=HEAD, after=HEAD, stamped=False)
    assert not again.changed
    assert await version_rows(scratch) == [HEAD]


async def test_a_create_all_database_is_stamped_and_keeps_its_rows(scratch: Database):
    before = await legacy_database(scratch)
    assert len(before[0]) == 8 and len(before[1]) == 24
    assert (await revision(scratch)).current is None

    done = await upgrade(scratch)

    assert done == Upgrade(before=None, after=HEAD, stamped=True)
    assert await all_rows(scratch) == before
    assert await version_rows(scratch) == [HEAD]
    assert await differences(scratch) == []


async def test_development_start_stamps_a_create_all_database_and_serves_its_rows(
    scratch: Database, scratch_url: str, make_api: Any
):
    students, _ = await legacy_database(scratch)

    api = await make_api(scratch_url)

    body = await api.post("{ students(first: 100) { edges { node { studentId } } } }")
    served = [edge["node"]["studentId"] for edge in body["data"]["students"]["edges"]]
    assert sorted(served) == sorted(row[1] for row in students)
    assert await version_rows(scratch) == [HEAD]


async def test_a_database_with_other_tables_and_no_history_is_refused(
    scratch: Database,
):
    # Half a schema: not what create_all made, so not safe to stamp.
    async with scratch.engine.begin() as conn:
        await conn.run_sync(
            SQLModel.metadata.create_all,
            tables=[SQLModel.metadata.tables["students"]],
        )

    with pytest.raises(MigrationError, match=r"^the database has tables but no "):
        await upgrade(scratch)

    assert await tables(scratch) == {"students"}  # nothing written


# --- concurrent starts --------------------------------------------------------------


async def test_two_migrations_started_together_migrate_once(scratch_url: str):
    first, second = create_database(scratch_url), create_database(scratch_url)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(upgrade(first), upgrade(second)), TIMEOUT_S
        )
        assert sorted(results, key=lambda r: r.before or "") == [
            Upgrade(before=None, after=HEAD, stamped=False),
            Upgrade(before=HEAD, after=HEAD, stamped=False),
        ]
        assert await version_rows(first) == [HEAD]
        assert await differences(first) == []
    finally:
        await first.dispose()
        await second.dispose()


async def test_two_apps_starting_together_on_an_empty_database_both_start(
    scratch: Database, scratch_url: str
):
    apps = [create_app(make_settings(scratch_url)) for _ in range(2)]
    managers = [LifespanManager(app, startup_timeout=TIMEOUT_S) for app in apps]

    started = await asyncio.wait_for(
        asyncio.gather(
            *(manager.__aenter__() for manager in managers), return_exceptions=True
        ),
        TIMEOUT_S,
    )
    try:
        assert [error for error in started if isinstance(error, BaseException)] == []
        assert await version_rows(scratch) == [HEAD]
        assert await differences(scratch) == []
    finally:
        for manager, outcome in zip(managers, started, strict=True):
            if not isinstance(outcome, BaseException):
                await manager.__aexit__(None, None, None)


def migrate_command(url: str, *args: str) -> subprocess.Popen[str]:
    """`make migrate`'s command, in a process of its own."""
    return subprocess.Popen(
        [sys.executable, "-m", "cli.migrate", "--database-url", url, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return process.returncode, out, err


async def test_two_migrate_processes_started_together_both_succeed(
    scratch: Database, scratch_url: str
):
    processes = [migrate_command(scratch_url) for _ in range(2)]

    outcomes = sorted(finish(process) for process in processes)

    assert outcomes == sorted(
        [
            (0, f"migrated from an empty database to {HEAD}\n", ""),
            (0, f"already at the latest migration ({HEAD}): nothing to do\n", ""),
        ]
    )
    assert await version_rows(scratch) == [HEAD]


# --- the command --------------------------------------------------------------------


async def test_migrate_command_upgrades_a_fresh_database_and_is_idempotent(
    scratch: Database, scratch_url: str
):
    first = finish(migrate_command(scratch_url))
    second = finish(migrate_command(scratch_url))

    assert first == (0, f"migrated from an empty database to {HEAD}\n", "")
    assert second == (
        0,
        f"already at the latest migration ({HEAD}): nothing to do\n",
        "",
    )
    assert await differences(scratch) == []


async def test_migrate_command_stamps_a_create_all_database(
    scratch: Database, scratch_url: str
):
    before = await legacy_database(scratch)

    outcome = finish(migrate_command(scratch_url))

    assert outcome == (0, f"a database made before migrations: stamped at {HEAD}\n", "")
    assert await all_rows(scratch) == before


def test_migrate_command_reads_database_url_from_the_environment(tmp_path: Path):
    path = tmp_path / "fresh.db"
    process = subprocess.run(
        [sys.executable, "-m", "cli.migrate"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": f"sqlite:///{path}"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )

    assert (process.returncode, process.stderr) == (0, "")
    assert process.stdout == f"migrated from an empty database to {HEAD}\n"


async def test_seed_if_empty_leaves_the_demo_database_at_head(tmp_path: Path):
    path = tmp_path / "demo.db"
    process = subprocess.run(
        [sys.executable, "-m", "db.seed", "--if-empty", "--students", "5"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": f"sqlite:///{path}"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert process.returncode == 0, process.stderr

    database = create_database(f"sqlite+aiosqlite:///{path}")
    try:
        assert (await revision(database)).at_head
        async with database.sessions() as session:
            count = await session.scalar(
                select(func.count()).select_from(models.Student)
            )
        assert count == 5
    finally:
        await database.dispose()


# --- staging and production ---------------------------------------------------------


def refusal(current: str | None) -> str:
    return (
        f"refusing to start: the database is at migration {current or 'none'}, not at "
        f"the latest ({HEAD}): run gradepulse migrate (make migrate) first"
    )


def serve(
    environment: str, url: str, workdir: Path
) -> subprocess.CompletedProcess[str]:
    """`python app.py` as an operator starts it; a server that starts is killed by the
    timeout (and the test fails)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "app.py")],
        cwd=workdir,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "ENVIRONMENT": environment,
            "DATABASE_URL": url,
            "JWT_SECRET": TEST_JWT_SECRET,
            "HOST": "127.0.0.1",
            "PORT": str(free_port()),
        },
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


async def test_staging_refuses_an_empty_database_with_one_line(
    scratch: Database, scratch_url: str, tmp_path: Path
):
    process = serve("staging", scratch_url, tmp_path)

    assert process.returncode == 1
    assert process.stderr == refusal(None) + "\n"
    assert await tables(scratch) == set()  # nothing written


async def test_staging_refuses_a_create_all_database_until_migrated(
    scratch: Database, scratch_url: str, tmp_path: Path
):
    before = await legacy_database(scratch)

    process = serve("staging", scratch_url, tmp_path)

    assert (process.returncode, process.stderr) == (1, refusal(None) + "\n")
    assert "alembic_version" not in await tables(scratch)
    assert await all_rows(scratch) == before


@pytest.mark.parametrize("environment", ["staging", "production"])
async def test_staging_and_production_refuse_a_database_not_at_head(
    scratch: Database, scratch_url: str, environment: str
):
    await upgrade(scratch)
    # As if the code had moved on: the database is at an older revision.
    async with scratch.engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = 'older'"))
    settings = make_settings(
        scratch_url, environment=environment, jwt_secret=TEST_JWT_SECRET
    )

    with pytest.raises(StartRefused) as refused:
        await check_schema(settings)
    assert str(refused.value) == refusal("older")

    app = create_app(settings)
    with pytest.raises(StartRefused):
        async with LifespanManager(app, startup_timeout=TIMEOUT_S):
            pass
    assert await version_rows(scratch) == ["older"]  # nothing migrated


async def test_staging_starts_against_a_database_at_head(
    scratch: Database, scratch_url: str
):
    await upgrade(scratch)
    settings = make_settings(
        scratch_url, environment="staging", jwt_secret=TEST_JWT_SECRET
    )

    await check_schema(settings)

    async with LifespanManager(create_app(settings), startup_timeout=TIMEOUT_S):
        assert await version_rows(scratch) == [HEAD]
