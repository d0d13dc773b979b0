"""`gradepulse backup PATH` and `gradepulse restore PATH`: SQLite through its online
backup API; for PostgreSQL, the pg_dump / pg_restore command to run."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cli.database import add_database_url, database_url
from cli.parsing import Parser
from db.backup import (
    BackupError,
    backup,
    pg_dump_command,
    pg_restore_command,
    restore,
    sqlite_file,
)
from db.engine import is_sqlite

PASSWORD_NOTE = "(the password from PGPASSWORD or ~/.pgpass)"


def _parser(prog: str, description: str, path_help: str) -> argparse.ArgumentParser:
    parser = Parser(prog=prog, description=description)
    parser.add_argument("path", type=Path, metavar="PATH", help=path_help)
    add_database_url(parser)
    return parser


def backup_main(
    argv: Sequence[str] | None = None, *, prog: str = "gradepulse backup"
) -> int:
    args = _parser(
        prog,
        "Copy the database into PATH, a new file. SQLite: a consistent copy "
        "through SQLite's online backup API, safe while servers run and write. "
        "PostgreSQL: prints the pg_dump command to run, and runs nothing.",
        "the backup file to create (an existing file is not overwritten)",
    ).parse_args(argv)
    url = database_url(args.database_url)
    if url is None:
        return 2
    source = sqlite_file(url)
    if source is None and not is_sqlite(url):
        print(pg_dump_command(url, str(args.path)))
        print(
            f"GradePulse does not run pg_dump: run the command above {PASSWORD_NOTE}",
            file=sys.stderr,
        )
        return 0
    if source is None:
        print("error: an in-memory database has no file to back up", file=sys.stderr)
        return 1
    try:
        copy = backup(source, args.path)
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"backed up {source} to {args.path}: {copy.describe()}")
    return 0


def restore_main(
    argv: Sequence[str] | None = None, *, prog: str = "gradepulse restore"
) -> int:
    args = _parser(
        prog,
        "Replace the database with the backup at PATH. SQLite: refused while a "
        "server (gradepulse serve, python app.py) runs on the database; stop it "
        "first. PostgreSQL: prints the pg_restore command to run, and runs nothing.",
        "a backup made by gradepulse backup",
    ).parse_args(argv)
    url = database_url(args.database_url)
    if url is None:
        return 2
    target = sqlite_file(url)
    if target is None and not is_sqlite(url):
        print(pg_restore_command(url, str(args.path)))
        print(
            "GradePulse does not run pg_restore: stop the servers, then run the "
            f"command above {PASSWORD_NOTE}",
            file=sys.stderr,
        )
        return 0
    if target is None:
        print("error: an in-memory database cannot be restored", file=sys.stderr)
        return 1
    try:
        copy = restore(args.path, target)
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"restored {target} from {args.path}: {copy.describe()}")
    return 0
