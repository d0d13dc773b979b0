"""SQLite backups through the online backup API (a consistent copy while servers
write), restores that refuse a database a server holds, the lock that says one does,
and the pg_dump / pg_restore commands for PostgreSQL (GradePulse does not run them).

The lock: every server (`python app.py`, `gradepulse serve`; with several workers,
the master) holds a shared `flock` on `<database file>.serving` for its whole life,
and a restore takes it exclusively without waiting. The kernel drops a lock with the
process that held it, however it ends, so a crashed server never leaves the database
locked; and a server does not start while a restore holds it. The file stays: removing
a lock file while another process opens it would let two of them lock two files."""

from __future__ import annotations

import fcntl
import os
import shlex
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import quote

from sqlalchemy.engine import URL, make_url

from db.engine import async_url, is_sqlite

SERVING_SUFFIX = ".serving"
# How long a backup or a restore waits for a lock held by one of the database's
# writers (a restore takes the write lock for the whole copy).
BUSY_TIMEOUT_S = 5.0


class BackupError(Exception):
    """The backup or restore cannot be done; the message is one line."""


class DatabaseLocked(BackupError):
    """A server holds the database (for a restore), or a restore does (for a server)."""


@dataclass(frozen=True, slots=True)
class Copy:
    """What a backup or restore copied: the migration it is at and its rows."""

    revision: str | None
    students: int
    grades: int

    def describe(self) -> str:
        return (
            f"migration {self.revision or 'none'}, {self.students} students, "
            f"{self.grades} grades"
        )


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (relative to the working directory, as the engine
    opens it); None for PostgreSQL and for an in-memory SQLite database."""
    url = async_url(url)
    if not is_sqlite(url):
        return None
    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database)


def lock_path(database: Path) -> Path:
    """`<database>.serving`, beside the real file (symbolic links resolved, so that
    every spelling of the path locks the same file)."""
    return Path(os.path.realpath(database) + SERVING_SUFFIX)


class ServingLock:
    """A server's shared lock on `<database>.serving`: held until released (or the
    process ends)."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file

    def release(self) -> None:
        self._file.close()


def hold_serving(url: str) -> ServingLock | None:
    """The lock a server holds while it serves a SQLite database file (None for
    PostgreSQL); DatabaseLocked when a restore is writing the database."""
    database = sqlite_file(url)
    if database is None:
        return None
    path = lock_path(database)
    file = _open_lock(path)
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        file.close()
        raise DatabaseLocked(
            f"{database} is being restored ({path} is locked)"
        ) from None
    return ServingLock(file)


def backup(source: Path, target: Path) -> Copy:
    """Copy the database at `source` into the new file `target` with SQLite's online
    backup API: one read transaction, so the copy is consistent while servers write
    (WAL readers do not block writers). `target` is written under a temporary name
    and renamed once checked, and is one self-contained file (rollback journal)."""
    if not source.is_file():
        raise BackupError(f"{source} does not exist")
    if target.exists():
        raise BackupError(f"{target} exists: give the name of a new file")
    if not target.parent.is_dir():
        raise BackupError(f"{target.parent} is not a directory")
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)  # a backup cut short before
    try:
        with (
            closing(_connect(source, "rw")) as src,
            closing(sqlite3.connect(partial)) as dst,
        ):
            _describe(src, source)  # a GradePulse database, before anything is copied
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
            _check(dst, source)
            copy = _describe(dst, source)
        os.replace(partial, target)
    except sqlite3.Error as exc:
        raise BackupError(f"{source}: {_reason(exc)}") from None
    finally:
        partial.unlink(missing_ok=True)
    return copy


def restore(source: Path, target: Path) -> Copy:
    """Replace the database at `target` with the backup at `source` (through the
    backup API, so that a WAL file beside `target` cannot be replayed over it).
    DatabaseLocked when a server holds `target`; the lock is kept while copying, so
    a server does not start on a half-restored database."""
    if not source.is_file():
        raise BackupError(f"{source} does not exist")
    if not target.parent.is_dir():
        raise BackupError(f"{target.parent} is not a directory")
    path = lock_path(target)
    try:
        with closing(_connect(source, "ro")) as src:
            _check(src, source)
            _describe(src, source)
            with _open_lock(path) as lock:
                try:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise DatabaseLocked(
                        f"a server is running on {target} ({path} is locked): "
                        "stop it first"
                    ) from None
                with closing(sqlite3.connect(target, timeout=BUSY_TIMEOUT_S)) as dst:
                    src.backup(dst)
                    return _describe(dst, target)
    except sqlite3.Error as exc:
        raise BackupError(f"{source}: {_reason(exc)}") from None


def pg_dump_command(url: str, path: str) -> str:
    """The command that writes PostgreSQL's database to `path` (custom format)."""
    return shlex.join(
        ["pg_dump", "--format=custom", "--no-owner", f"--file={path}", _libpq(url)]
    )


def pg_restore_command(url: str, path: str) -> str:
    """The command that replaces the database's objects with the dump at `path`, in
    one transaction."""
    return shlex.join(
        [
            "pg_restore",
            "--clean",
            "--if-exists",
            "--no-owner",
            "--single-transaction",
            f"--dbname={_libpq(url)}",
            path,
        ]
    )


def _libpq(url: str) -> str:
    """The URL as libpq takes it, without the password (which belongs in PGPASSWORD
    or ~/.pgpass, not on a command line that `ps` shows)."""
    given = make_url(async_url(url))
    libpq = URL.create(
        "postgresql",
        username=given.username,
        host=given.host,
        port=given.port,
        database=given.database,
        # asyncpg's `ssl=` is libpq's `sslmode=`.
        query={
            ("sslmode" if key == "ssl" else key): value
            for key, value in given.query.items()
        },
    )
    return libpq.render_as_string(hide_password=False)


def _open_lock(path: Path) -> IO[bytes]:
    try:
        return path.open("ab")
    except OSError as exc:
        raise BackupError(f"cannot open {path}: {exc.strerror}") from None


def _connect(path: Path, mode: str) -> sqlite3.Connection:
    # A URI with a mode never creates the file.
    uri = f"file:{quote(str(path.resolve()))}?mode={mode}"
    return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)


def _check(connection: sqlite3.Connection, path: Path) -> None:
    result = connection.execute("PRAGMA quick_check").fetchone()[0]
    if result != "ok":
        raise BackupError(f"{path} is damaged: {result}")


def _describe(connection: sqlite3.Connection, path: Path) -> Copy:
    tables = {
        row[0]
        for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type='table'"
        )
    }
    if not {"students", "grades"} <= tables:
        raise BackupError(
            f"{path} is not a GradePulse database (no students and grades tables)"
        )
    revision = (
        connection.execute("SELECT version_num FROM alembic_version").fetchone()
        if "alembic_version" in tables
        else None
    )
    return Copy(
        revision=revision[0] if revision else None,
        students=connection.execute("SELECT count(*) FROM students").fetchone()[0],
        grades=connection.execute("SELECT count(*) FROM grades").fetchone()[0],
    )


def _reason(exc: sqlite3.Error) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
