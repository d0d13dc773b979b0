"""The schema's Alembic history (env.py, versions/) and the calls that apply it: upgrade
to head under a database lock, recognise a pre-migration database, report the revision."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from db import models  # noqa: F401  (registers every table on SQLModel.metadata)
from db.engine import Database
from db.models import BASELINE_TABLES

HERE = Path(__file__).resolve().parent
# The first revision: a database holding exactly BASELINE_TABLES (those create_all
# made before migrations existed) and no history is that revision's schema.
BASELINE = "0001"
VERSION_TABLE = "alembic_version"
# One advisory lock key for every GradePulse cluster: PostgreSQL scopes it to the
# database, so clusters on other databases never wait on each other.
_PG_LOCK_KEY = 0x6772_6164_6570_756C  # "gradepul"


class MigrationError(RuntimeError):
    """The database cannot be migrated as it stands; the message says why."""


@dataclass(frozen=True, slots=True)
class Revision:
    """Where a database stands: `current` is None before any migration."""

    current: str | None
    head: str

    @property
    def at_head(self) -> bool:
        return self.current == self.head


@dataclass(frozen=True, slots=True)
class Upgrade:
    """What `upgrade` did: `before` is None for an empty database; `stamped` when a
    database made by create_all was recognised and marked as the first revision."""

    before: str | None
    after: str
    stamped: bool

    @property
    def changed(self) -> bool:
        return self.stamped or self.before != self.after


@cache
def script_directory() -> ScriptDirectory:
    return ScriptDirectory(str(HERE))


def head() -> str:
    heads = script_directory().get_heads()
    if len(heads) != 1:
        raise MigrationError(
            f"the migration history has {len(heads)} heads: merge them"
        )
    return heads[0]


async def revision(database: Database) -> Revision:
    """The database's revision and the history's head (no lock, nothing written)."""
    async with database.engine.connect() as conn:
        current = await conn.run_sync(_current)
    return Revision(current=current, head=head())


async def upgrade(database: Database, *, lock_timeout_s: float = 60.0) -> Upgrade:
    """Upgrade to head, once for the whole cluster: the check and the migrations run in
    one transaction under a database lock (PostgreSQL: an advisory lock; SQLite: BEGIN
    IMMEDIATE, waiting up to the busy timeout), so that a second caller waits, then
    finds the database at head. A database made by create_all is stamped, not rebuilt."""
    async with database.write_engine.connect() as conn:
        try:
            return await conn.run_sync(_upgrade, lock_timeout_s)
        except CommandError as exc:  # e.g. a revision this code does not know
            raise MigrationError(str(exc)) from None


async def create_at_head(database: Database) -> None:
    """Every table as the models define them, marked at the head revision: what
    upgrading an empty database makes (tests/test_migrations.py proves they match),
    in one quick step for tests and tools that need an empty schema."""
    async with database.write_engine.begin() as conn:
        await conn.run_sync(_create_at_head)


def _create_at_head(connection: Connection) -> None:
    SQLModel.metadata.create_all(connection)
    MigrationContext.configure(connection).stamp(script_directory(), head())


def _upgrade(connection: Connection, lock_timeout_s: float) -> Upgrade:
    with connection.begin():
        if connection.dialect.name == "postgresql":
            ms = max(1, int(lock_timeout_s * 1000))
            connection.execute(text(f"SET LOCAL lock_timeout = {ms}"))
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY}
            )
        before = _current(connection)
        stamped = False
        if before is None:
            tables = set(inspect(connection).get_table_names()) - {VERSION_TABLE}
            if tables == BASELINE_TABLES:
                command.stamp(_config(connection), BASELINE)
                stamped = True
            elif tables:
                raise MigrationError(
                    "the database has tables but no migration history, and they are "
                    "not those of the first revision (unexpected: "
                    f"{', '.join(sorted(tables - BASELINE_TABLES)) or 'none'}; "
                    f"missing: {', '.join(sorted(BASELINE_TABLES - tables)) or 'none'})"
                )
        target = head()
        if _current(connection) != target:
            command.upgrade(_config(connection), target)
        return Upgrade(before=before, after=target, stamped=stamped)


def _current(connection: Connection) -> str | None:
    heads = MigrationContext.configure(connection).get_current_heads()
    if len(heads) > 1:
        raise MigrationError(f"the database is at {len(heads)} revisions at once")
    return heads[0] if heads else None


def _config(connection: Connection) -> Config:
    """Alembic's configuration, built here (no alembic.ini): env.py runs on this
    connection, inside the caller's transaction."""
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["connection"] = connection
    return config
