"""`gradepulse check`: every setting as it applies with the secrets masked, the
database (answers, at the latest migration?) and Redis (PING); exit 1 with the
reasons; `--explain` prints the hot statements' plans."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from cli.main import main
from db.engine import create_database
from db.migrations import head, upgrade
from db.plans import explain_hot_statements
from db.seed import seed
from settings import Settings
from tests.factories import free_port

JWT = "jwt-secret-that-is-long-enough-0123456789"
TOKEN = "metrics-token-value"


async def check(
    capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, list[str], str]:
    """The command in a thread (it runs its own event loop): code, stdout lines,
    stderr."""
    code = await asyncio.to_thread(main, ["check", *argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


async def migrated(url: str, students: int = 0) -> None:
    database = create_database(url)
    try:
        await upgrade(database)
        if students:
            await seed(database, students=students, grades_per_student=4, seed=7)
    finally:
        await database.dispose()


def shown_database(url: str) -> str:
    if url.startswith("sqlite"):
        return f"sqlite, {url.split(':///', 1)[1]}"
    return f"postgresql, {url}"  # TEST_DATABASE_URL carries no password


async def test_prints_every_setting_and_finds_the_database_and_redis_ok(
    scratch_url: str,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await migrated(scratch_url)
    monkeypatch.setenv("DATABASE_URL", scratch_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("JWT_SECRET", JWT)
    monkeypatch.setenv("METRICS_TOKEN", TOKEN)

    code, lines, err = await check(capsys)

    assert (code, err) == (0, "")
    settings = lines[:-2]
    assert len(settings) == len(Settings.model_fields)
    assert all("=" in line for line in settings)
    assert f"DATABASE_URL={scratch_url}" in settings
    assert f"REDIS_URL={redis_url}" in settings
    assert "JWT_SECRET=****" in settings
    assert "METRICS_TOKEN=****" in settings
    assert "AUTH_REQUIRED=false" in settings  # development's, as it applies
    assert "MAX_TOKENS=2000" in settings  # not a secret for its name
    assert lines[-2:] == [
        f"database: ok ({shown_database(scratch_url)}, at the latest migration "
        f"{head()})",
        f"redis: ok (PING answered, {redis_url})",
    ]
    assert JWT not in "\n".join(lines) and TOKEN not in "\n".join(lines)


async def test_masks_passwords_and_fails_with_the_reasons(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()  # nothing listens there
    database_url = f"postgresql+asyncpg://app:hunter2@127.0.0.1:{port}/grades"
    redis = f"redis://:sesame@127.0.0.1:{port}/0?password=sesame"
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("REDIS_URL", redis)

    code, lines, err = await check(capsys)

    assert code == 1
    assert (
        f"DATABASE_URL=postgresql+asyncpg://app:****@127.0.0.1:{port}/grades" in lines
    )
    assert f"REDIS_URL=redis://:****@127.0.0.1:{port}/0?password=****" in lines
    assert not [line for line in lines if line.startswith(("database:", "redis:"))]
    problems = err.splitlines()
    assert len(problems) == 2, err
    assert problems[0].startswith("error: database: ")
    assert problems[0].endswith(
        f"(postgresql+asyncpg://app:****@127.0.0.1:{port}/grades)"
    )
    assert problems[1].startswith("error: redis: ")
    assert problems[1].endswith(f"(redis://:****@127.0.0.1:{port}/0?password=****)")
    everything = "\n".join(lines) + err
    assert "hunter2" not in everything and "sesame" not in everything


@pytest.mark.parametrize(
    ("environment", "code", "out", "err"),
    [
        (
            "development",
            0,
            "database: ok (sqlite, {path}, at migration 0005: development migrates "
            "it to the latest, {head}, at start)",
            "",
        ),
        (
            "staging",
            1,
            None,
            "error: database: at migration 0005, not at the latest ({head}): staging "
            "refuses to start; run gradepulse migrate first\n",
        ),
    ],
)
async def test_a_database_behind_fails_where_the_server_would_refuse_it(
    environment: str,
    code: int,
    out: str | None,
    err: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "behind.db"
    await migrated(f"sqlite:///{path}")
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0005'")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("ENVIRONMENT", environment)

    got_code, lines, got_err = await check(capsys)

    assert (got_code, got_err) == (code, err.format(head=head()))
    database_lines = [line for line in lines if line.startswith("database:")]
    expected = [out.format(path=path, head=head())] if out else []
    assert database_lines == expected


@pytest.mark.parametrize(
    ("environment", "code", "out", "err"),
    [
        (
            "development",
            0,
            [
                "database: {path} does not exist yet: the server creates it at start "
                "(development)"
            ],
            "",
        ),
        (
            "production",
            1,
            [],
            "error: database: {path} does not exist: run gradepulse migrate\n",
        ),
    ],
)
async def test_a_missing_sqlite_file_is_not_created(
    environment: str,
    code: int,
    out: list[str],
    err: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "new.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("ENVIRONMENT", environment)

    got_code, lines, got_err = await check(capsys)

    assert (got_code, got_err) == (code, err.format(path=path))
    assert [line for line in lines if line.startswith("database:")] == [
        line.format(path=path) for line in out
    ]
    assert not path.exists()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PORT", "0", "PORT: Input should be greater than or equal to 1"),
        (
            "ALERT_RULES",
            '[{"id": "high_memory", "threshold": -1}]',
            "ALERT_RULES: ",
        ),
        ("DATABASE_URL", "mysql://x", "DATABASE_URL: must start with sqlite:///"),
    ],
)
async def test_invalid_settings_are_one_line_and_exit_1(
    variable: str,
    value: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(variable, value)

    code, lines, err = await check(capsys)

    assert (code, lines) == (1, [])
    assert err.startswith(f"error: invalid settings: {message}"), err
    assert err.count("\n") == 1 and err.endswith("\n")


async def test_a_manifest_the_server_would_refuse_fails_the_check(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text('{"abc": "{ subjects }"}')
    monkeypatch.setenv("PERSISTED_OPERATIONS_MANIFEST", str(manifest))

    code, lines, err = await check(capsys)

    assert (code, lines) == (1, [])
    assert err == (
        "error: refusing to start: PERSISTED_OPERATIONS_MANIFEST "
        f"{manifest}: 'abc' is not a sha256 hash (64 hex digits)\n"
    )


async def test_explain_prints_each_hot_statements_plan_and_index(
    scratch_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await migrated(scratch_url, students=30)
    database = create_database(scratch_url)
    try:
        plans = await explain_hot_statements(database)
    finally:
        await database.dispose()
    monkeypatch.setenv("DATABASE_URL", scratch_url)

    code, lines, err = await check(capsys, "--explain")

    assert (code, err) == (0, "")
    start = lines.index(
        f"query plans ({'sqlite' if 'sqlite' in scratch_url else 'postgresql'}):"
    )
    expected = []
    for plan in plans:
        expected.append(
            f"{plan.name}: {plan.index or 'no index (reads the table whole)'}"
        )
        expected += [f"    {line}" for line in plan.plan]
    assert lines[start + 1 :] == expected
    assert len(plans) > 10
    if "sqlite" in scratch_url:  # PostgreSQL reads 120 grades whole, rightly
        assert any(
            line.startswith("grades by student: ix_grades_") for line in lines[start:]
        )


async def test_explain_is_not_run_when_the_database_fails(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "junk.db").write_text("not a database")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'junk.db'}")

    code, lines, err = await check(capsys, "--explain")

    assert code == 1
    assert not [line for line in lines if line.startswith("query plans")]
    assert err == f"error: database: {tmp_path / 'junk.db'}: file is not a database\n"
