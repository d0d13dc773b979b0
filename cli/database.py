"""The database every command works on: its URL (the option, else the settings), and
its schema brought to the latest migration."""

from __future__ import annotations

import argparse
import sys

from db.engine import Database
from db.migrations import MigrationError, Upgrade, upgrade


def add_database_url(parser: argparse.ArgumentParser) -> None:
    """The `--database-url` option every command takes."""
    parser.add_argument(
        "--database-url", help="overrides DATABASE_URL from the environment"
    )


def database_url(option: str | None) -> str | None:
    """`--database-url` when given, else DATABASE_URL from the settings; None (after
    printing the one-line reason) when the settings are invalid."""
    if option is not None:
        return option
    # Imported here: pydantic-settings costs start-up time a given URL can skip.
    from settings import SettingsError, load_settings

    try:
        return load_settings().database_url
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


async def migrated(database: Database) -> Upgrade | None:
    """Upgrade the database to the latest migration (creating the schema in an empty
    one) and say what was done; None, after printing the one-line reason, when it
    cannot be."""
    try:
        return await upgrade(database)
    except MigrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
