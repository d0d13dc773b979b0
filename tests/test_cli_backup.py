"""`gradepulse backup` and `restore`: a consistent SQLite copy while a real server
writes; restore refused while `python app.py` or `gradepulse serve` (two workers)
holds the database, done once it stopped; no server start during a restore; for
PostgreSQL the pg_dump / pg_restore commands, which work as printed."""

from __future__ import annotations

import fcntl
import os
import shlex
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import httpx

from db.engine import create_database
from db.migrations import head, upgrade
from db.seed import seed
from tests.conftest import (
    _admin,
    _ensure_pg_database,
    postgres_url,
    skip_without_postgres,
)
from tests.factories import free_port
from tests.factories.commands import (
    GRADEPULSE,
    ROOT,
    TIMEOUT_S,
    create_student,
    environment,
    gradepulse,
    server,
    sqlite_counts,
    student_count,
)

STUDENTS = 40
GRADES_PER_STUDENT = 4


async def seeded(path: Path) -> Path:
    database = create_database(f"sqlite:///{path}")
    try:
        await upgrade(database)
        await seed(
            database, students=STUDENTS, grades_per_student=GRADES_PER_STUDENT, seed=3
        )
    finally:
        await database.dispose()
    return path


def described(students: int, grades: int) -> str:
    return f"migration {head()}, {students} students, {grades} grades"


PYTHON_APP = [sys.executable, str(ROOT / "app.py")]


async def test_backup_while_the_server_writes_is_a_consistent_single_file(
    tmp_path: Path,
) -> None:
    db = await seeded(tmp_path / "live.db")
    port = free_port()
    with server(
        [str(GRADEPULSE), "serve"], tmp_path, port, DATABASE_URL=f"sqlite:///{db}"
    ):
        create_student(port, "B00001")  # in the WAL: no checkpoint yet
        assert (tmp_path / "live.db-wal").stat().st_size > 0

        done = gradepulse(
            "backup", "copy.db", cwd=tmp_path, DATABASE_URL=f"sqlite:///{db}"
        )

        assert (done.returncode, done.stderr) == (0, ""), done.stderr
        assert done.stdout == (
            f"backed up {db} to copy.db: {described(STUDENTS + 1, STUDENTS * GRADES_PER_STUDENT)}\n"
        )
        create_student(port, "B00002")  # the server goes on writing
        assert student_count(port) == STUDENTS + 2

    copy = tmp_path / "copy.db"
    assert sorted(p.name for p in tmp_path.glob("copy.db*")) == ["copy.db"]
    with closing(sqlite3.connect(copy)) as connection:
        assert connection.execute("PRAGMA quick_check").fetchone() == ("ok",)
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert connection.execute(
            "SELECT student_id FROM students WHERE student_id LIKE 'B%'"
        ).fetchall() == [("B00001",)]
    assert sqlite_counts(copy) == (STUDENTS + 1, STUDENTS * GRADES_PER_STUDENT)


async def test_restore_is_refused_while_python_app_py_serves_then_restores(
    tmp_path: Path,
) -> None:
    db = await seeded(tmp_path / "live.db")
    url = f"sqlite:///{db}"
    assert (
        gradepulse("backup", "before.db", cwd=tmp_path, DATABASE_URL=url).returncode
        == 0
    )
    port = free_port()
    with server(PYTHON_APP, tmp_path, port, DATABASE_URL=url):
        create_student(port, "R00001")

        refused = gradepulse("restore", "before.db", cwd=tmp_path, DATABASE_URL=url)

        assert (refused.returncode, refused.stdout) == (1, "")
        assert refused.stderr == (
            f"error: a server is running on {db} ({db}.serving is locked): stop it "
            "first\n"
        )
        assert student_count(port) == STUDENTS + 1  # nothing was overwritten

    restored = gradepulse("restore", "before.db", cwd=tmp_path, DATABASE_URL=url)

    assert (restored.returncode, restored.stderr) == (0, ""), restored.stderr
    assert restored.stdout == (
        f"restored {db} from before.db: {described(STUDENTS, STUDENTS * GRADES_PER_STUDENT)}\n"
    )
    assert sqlite_counts(db) == (STUDENTS, STUDENTS * GRADES_PER_STUDENT)
    port = free_port()
    with server(PYTHON_APP, tmp_path, port, DATABASE_URL=url):
        assert student_count(port) == STUDENTS  # the server reads the restored data


async def test_restore_is_refused_while_gradepulse_serve_runs_two_workers(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    db = await seeded(tmp_path / "live.db")
    url = f"sqlite:///{db}"
    assert (
        gradepulse("backup", "before.db", cwd=tmp_path, DATABASE_URL=url).returncode
        == 0
    )
    port = free_port()
    with server(
        [str(GRADEPULSE), "serve", "--workers", "2"],
        tmp_path,
        port,
        DATABASE_URL=url,
        REDIS_URL=redis_url,
        REDIS_PREFIX=redis_prefix,
        SAMPLE_INTERVAL_MS="200",
    ) as process:
        workers = _cluster_workers(port, expected=2)
        assert len({worker.split(":")[1] for worker in workers}) == 2  # two pids
        assert str(process.pid) not in {worker.split(":")[1] for worker in workers}

        refused = gradepulse("restore", "before.db", cwd=tmp_path, DATABASE_URL=url)

        assert (refused.returncode, refused.stdout) == (1, "")
        assert refused.stderr.startswith(f"error: a server is running on {db} ")

    restored = gradepulse("restore", "before.db", cwd=tmp_path, DATABASE_URL=url)
    assert (restored.returncode, restored.stderr) == (0, ""), restored.stderr


def _cluster_workers(port: int, expected: int) -> list[str]:
    """/health's cluster.workers once it lists `expected` workers (each worker's
    settings say WORKERS=2: the option reached them)."""
    deadline = time.monotonic() + 30
    workers: list[str] = []
    while time.monotonic() < deadline:
        body = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()
        workers = body["cluster"]["workers"]
        if len(workers) == expected:
            return list(workers)
        time.sleep(0.2)
    raise AssertionError(f"/health listed {workers}, not {expected} workers")


async def test_a_server_does_not_start_while_a_restore_holds_the_database(
    tmp_path: Path,
) -> None:
    db = await seeded(tmp_path / "live.db")
    lock = tmp_path / "live.db.serving"
    with lock.open("ab") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # as restore does
        for command in ([str(GRADEPULSE), "serve"], PYTHON_APP):
            done = subprocess.run(
                command,
                cwd=tmp_path,
                env=environment(DATABASE_URL=f"sqlite:///{db}", PORT=str(free_port())),
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
            )

            assert (done.returncode, done.stdout) == (1, "")
            assert done.stderr == (
                f"refusing to start: {db} is being restored ({lock} is locked)\n"
            )


async def test_backup_and_restore_refuse_bad_paths_in_one_line(tmp_path: Path) -> None:
    db = await seeded(tmp_path / "live.db")
    url = f"sqlite:///{db}"
    (tmp_path / "taken.db").write_bytes(b"keep me")
    (tmp_path / "junk.db").write_text("not a database")
    with closing(sqlite3.connect(tmp_path / "other.db")) as connection:
        connection.execute("CREATE TABLE t (x)")
    cases = [
        (("backup", "taken.db"), "error: taken.db exists: give the name of a new file"),
        (("backup", "no/such/dir/x.db"), "error: no/such/dir is not a directory"),
        (
            ("backup", "x.db", "--database-url", f"sqlite:///{tmp_path / 'none.db'}"),
            f"error: {tmp_path / 'none.db'} does not exist",
        ),
        (("restore", "missing.db"), "error: missing.db does not exist"),
        (("restore", "junk.db"), "error: junk.db: file is not a database"),
        (
            ("restore", "other.db"),
            "error: other.db is not a GradePulse database (no students and grades "
            "tables)",
        ),
    ]
    for argv, message in cases:
        done = gradepulse(*argv, cwd=tmp_path, DATABASE_URL=url)

        assert (done.returncode, done.stdout, done.stderr) == (1, "", message + "\n")
    assert (tmp_path / "taken.db").read_bytes() == b"keep me"
    assert not (tmp_path / "x.db").exists() and not (tmp_path / "none.db").exists()
    assert sqlite_counts(db) == (STUDENTS, STUDENTS * GRADES_PER_STUDENT)


def test_postgresql_backup_and_restore_print_the_commands(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://app:s3cret@db.example:5432/grades?ssl=require"

    backup = gradepulse("backup", "nightly.dump", cwd=tmp_path, DATABASE_URL=url)
    restore = gradepulse("restore", "my dump", cwd=tmp_path, DATABASE_URL=url)

    assert (backup.returncode, restore.returncode) == (0, 0)
    assert backup.stdout == (
        "pg_dump --format=custom --no-owner --file=nightly.dump "
        "'postgresql://app@db.example:5432/grades?sslmode=require'\n"
    )
    assert backup.stderr == (
        "GradePulse does not run pg_dump: run the command above (the password from "
        "PGPASSWORD or ~/.pgpass)\n"
    )
    assert restore.stdout == (
        "pg_restore --clean --if-exists --no-owner --single-transaction "
        "'--dbname=postgresql://app@db.example:5432/grades?sslmode=require' "
        "'my dump'\n"
    )
    assert restore.stderr == (
        "GradePulse does not run pg_restore: stop the servers, then run the command "
        "above (the password from PGPASSWORD or ~/.pgpass)\n"
    )
    assert list(tmp_path.iterdir()) == []  # nothing run, nothing written


async def test_postgresql_commands_work_as_printed(tmp_path: Path) -> None:
    skip_without_postgres()
    name = f"gradepulse_cli_backup_{os.getpid()}"
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await _ensure_pg_database(name)
    url = postgres_url(name)
    try:
        database = create_database(url)
        try:
            await upgrade(database)
            await seed(database, students=STUDENTS, grades_per_student=2, seed=5)
        finally:
            await database.dispose()

        dump = gradepulse("backup", "pg.dump", cwd=tmp_path, DATABASE_URL=url)
        _run(dump.stdout, tmp_path)
        await _admin_in(name, "DELETE FROM grades")
        assert await _admin_in(name, "SELECT count(*) FROM grades") == 0
        restore = gradepulse("restore", "pg.dump", cwd=tmp_path, DATABASE_URL=url)
        _run(restore.stdout, tmp_path)

        assert await _admin_in(name, "SELECT count(*) FROM grades") == STUDENTS * 2
        assert await _admin_in(name, "SELECT count(*) FROM students") == STUDENTS
        assert (
            await _admin_in(name, "SELECT version_num FROM alembic_version") == head()
        )
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _run(printed: str, cwd: Path) -> None:
    assert printed.count("\n") == 1, printed
    done = subprocess.run(
        shlex.split(printed), cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr


async def _admin_in(database: str, sql: str) -> object:
    import asyncpg

    dsn = postgres_url(database).replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()
