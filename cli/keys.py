"""`python -m resolvers.keys` (or `cli.keys`): create, list and revoke API keys."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NoReturn

from sqlalchemy.exc import SQLAlchemyError

from cli.database import add_database_url, database_url, migrated
from db.engine import Database, create_database
from db.keys import KEY_PREFIX, ApiKeyRecord
from db.models import NAME_MAX
from db.validation import utcnow
from resolvers.errors import BadUserInput
from resolvers.keys import create_api_key, list_api_keys, revoke_api_key
from resolvers.viewer import ROLES

PROG = "python -m resolvers.keys"


class UsageError(Exception):
    """A bad argument found after parsing: one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, as for the errors found after parsing; --help shows the usage.
        self.exit(2, f"error: {message}\n")


def _grade_levels(text: str) -> list[int]:
    levels = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or not 1 <= int(part) <= 12:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not a grade level (whole numbers 1-12, e.g. 9,10)"
            )
        levels.append(int(part))
    return levels


def _positive_days(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of days")
    return int(text)


def _instant(text: str) -> datetime:
    """ISO 8601; without an offset the time is UTC. Stored as naive UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-06-30T00:00:00Z)"
        ) from None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description="Create, list and revoke API keys. A key is printed once, when "
        "it is created; the database keeps only its SHA-256 and a short prefix.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    create = commands.add_parser(
        "create", help="create a key and print it (the only time it is shown)"
    )
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--name", required=True, help="who or what holds the key")
    create.add_argument(
        "--grade-levels",
        type=_grade_levels,
        help="teacher only: comma-separated levels 1-12 (default: every level)",
    )
    create.add_argument(
        "--student-id", help="student role (required): the student's studentId"
    )
    expiry = create.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in-days", type=_positive_days)
    expiry.add_argument(
        "--expires-at", type=_instant, help="ISO 8601; UTC unless an offset is given"
    )

    commands.add_parser("list", help="list keys (never the keys themselves)")

    revoke = commands.add_parser("revoke", help="revoke a key by id or prefix")
    revoke.add_argument(
        "key",
        help=f"the key's id, or its prefix as listed ({KEY_PREFIX} and 8 characters)",
    )

    for command in (create, commands.choices["list"], revoke):
        add_database_url(command)
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    try:
        args = build_parser(prog).parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), as a return value
        return exc.code if isinstance(exc.code, int) else 2
    try:
        _check(args)
        url = database_url(args.database_url)
        if url is None:
            return 2
        return asyncio.run(_run(url, args))
    except (UsageError, BadUserInput) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (SQLAlchemyError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"error: database failure: {type(exc).__name__}: {reason}", file=sys.stderr
        )
        return 1


def _check(args: argparse.Namespace) -> None:
    """Argument rules argparse cannot express."""
    if args.command != "create":
        return
    args.name = args.name.strip()
    if not args.name:
        raise UsageError("--name must not be blank")
    if len(args.name) > NAME_MAX:
        raise UsageError(f"--name is longer than {NAME_MAX} characters")
    if args.role == "student" and not args.student_id:
        raise UsageError("the student role needs --student-id")
    if args.role != "student" and args.student_id is not None:
        raise UsageError("--student-id applies to the student role only")
    if args.role != "teacher" and args.grade_levels is not None:
        raise UsageError("--grade-levels applies to the teacher role only")
    if args.expires_at is not None and args.expires_at <= utcnow():
        raise UsageError("--expires-at is in the past")


async def _run(url: str, args: argparse.Namespace) -> int:
    database = create_database(url)
    try:
        if await migrated(database) is None:
            return 1
        if args.command == "create":
            return await _create(database, args)
        if args.command == "list":
            return await _list(database)
        return await _revoke(database, args.key)
    finally:
        await database.dispose()


async def _create(database: Database, args: argparse.Namespace) -> int:
    key, record = await create_api_key(
        database,
        name=args.name,
        role=args.role,
        grade_levels=args.grade_levels,
        student_id=args.student_id,
        expires_at=args.expires_at,
        expires_in_days=args.expires_in_days,
    )
    # The key alone on stdout (KEY=$(python -m resolvers.keys create ...)); what it
    # is on stderr.
    print(
        f"created API key {record.id} ({KEY_PREFIX}{record.prefix}) for "
        f"{_describe(record)}. This is the only time the key is shown: store it now.",
        file=sys.stderr,
    )
    print(key)
    return 0


def _describe(record: ApiKeyRecord) -> str:
    text = f"{record.role} {record.name!r}"
    if record.role == "teacher":
        text += f", grade levels {_levels(record)}"
    if record.student_id is not None:
        text += f", student {record.student_id}"
    if record.expires_at is not None:
        text += f", expires {_time(record.expires_at)}"
    return text


COLUMNS = (
    "id",
    "prefix",
    "name",
    "role",
    "levels",
    "student",
    "created",
    "expires",
    "revoked",
)


async def _list(database: Database) -> int:
    records = await list_api_keys(database)
    if not records:
        print("no API keys")
        return 0
    rows = [COLUMNS] + [
        (
            str(record.id),
            KEY_PREFIX + record.prefix,
            record.name,
            record.role,
            _levels(record),
            record.student_id or "-",
            _time(record.created_at),
            _time(record.expires_at),
            _time(record.revoked_at),
        )
        for record in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    for row in rows:
        line = "  ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        )
        print(line.rstrip())
    return 0


def _levels(record: ApiKeyRecord) -> str:
    if record.role != "teacher":
        return "-"
    if record.grade_levels is None:
        return "all"
    return ",".join(str(level) for level in sorted(record.grade_levels))


def _time(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


async def _revoke(database: Database, given: str) -> int:
    record, revoked = await revoke_api_key(database, given)
    if not revoked:
        print(
            f"API key {record.id} ({KEY_PREFIX}{record.prefix}) was already "
            f"revoked at {_time(record.revoked_at)}"
        )
        return 0
    print(
        f"revoked API key {record.id} ({KEY_PREFIX}{record.prefix}, "
        f"{record.name!r}) at {_time(record.revoked_at)}; running servers refuse "
        "it within API_KEY_CACHE_TTL_S seconds"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m cli.keys"))
