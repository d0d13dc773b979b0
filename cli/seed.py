"""`python -m db.seed` (or `cli.seed`): fill an empty database with demo data."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence

from cli.database import add_database_url, database_url, migrated
from cli.parsing import Parser
from db.engine import create_database
from db.seed import is_empty, seed
from db.students import StudentFilter, count_students

PROG = "python -m db.seed"


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    parser = Parser(
        prog=prog,
        description="Fill an empty database with deterministic demo students and "
        "grades (migrating it to the latest schema first).",
    )
    parser.add_argument(
        "--students", type=_positive, default=1000, help="how many (default 1000)"
    )
    parser.add_argument(
        "--grades-per-student",
        type=_positive,
        default=20,
        help="grades of each student (default 20)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=42,
        help="the same seed gives the same data (default 42)",
    )
    parser.add_argument(
        "--if-empty",
        action="store_true",
        help="do nothing (and succeed) when the students table has rows",
    )
    add_database_url(parser)
    args = parser.parse_args(argv)
    url = database_url(args.database_url)
    if url is None:
        return 2
    return asyncio.run(
        _run(url, args.students, args.grades_per_student, args.seed, args.if_empty)
    )


async def _run(
    url: str, students: int, grades_per_student: int, seed_value: int, if_empty: bool
) -> int:
    started = time.perf_counter()
    database = create_database(url)
    try:
        if await migrated(database) is None:
            return 1
        if not await is_empty(database):
            existing = await count_students(database.reader, StudentFilter())
            if if_empty:
                print(f"the database already has {existing} students: nothing seeded")
                return 0
            print(
                f"error: the database already has {existing} students; seed an "
                "empty database, or pass --if-empty to skip",
                file=sys.stderr,
            )
            return 1
        inserted = await seed(
            database,
            students=students,
            grades_per_student=grades_per_student,
            seed=seed_value,
        )
        seconds = time.perf_counter() - started
    finally:
        await database.dispose()
    print(
        f"seeded {inserted[0]} students and {inserted[1]} grades (seed {seed_value}) "
        f"in {seconds:.2f} s"
    )
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


if __name__ == "__main__":
    raise SystemExit(main(prog="python -m cli.seed"))
