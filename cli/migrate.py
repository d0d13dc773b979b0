"""`python -m cli.migrate` (`make migrate`): upgrade the database to the latest migration."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from cli.database import add_database_url, database_url, migrated
from cli.parsing import Parser
from db.engine import create_database

PROG = "python -m cli.migrate"


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    parser = Parser(
        prog=prog,
        description="Upgrade the database to the latest migration (creating the "
        "schema in an empty one; a database made before migrations existed is "
        "stamped, its data kept). Safe to run again, and from several machines.",
    )
    add_database_url(parser)
    args = parser.parse_args(argv)
    url = database_url(args.database_url)
    if url is None:
        return 2
    return asyncio.run(_run(url))


async def _run(url: str) -> int:
    database = create_database(url)
    try:
        done = await migrated(database)
    finally:
        await database.dispose()
    if done is None:
        return 1
    if done.stamped:
        print(f"a database made before migrations: stamped at {done.after}")
    elif done.changed:
        print(f"migrated from {done.before or 'an empty database'} to {done.after}")
    else:
        print(f"already at the latest migration ({done.after}): nothing to do")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
