"""Async engine and session factories: SQLite pragmas, BEGIN IMMEDIATE writes, PG pool."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from db.reader import Observer, Reader

_IMMEDIATE = "gradepulse_begin_immediate"
_SINGLE = "gradepulse_single_statement"

# How long a connection opening a new file waits before it looks at the journal
# mode again (see _use_wal).
WAL_RETRY_S = 0.02


def async_url(url: str) -> str:
    """Map the accepted URL spellings onto the async drivers."""
    for prefix, replacement in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
    ):
        if url.startswith(prefix):
            return replacement + url[len(prefix) :]
    return url


def is_sqlite(url: str) -> bool:
    return async_url(url).startswith("sqlite+aiosqlite://")


@dataclass(frozen=True, slots=True)
class Database:
    """The engine with session factories for reads, single-statement reads and
    writes.

    `reads` is for sessions that run one statement (a statement sees one snapshot
    on its own): no transaction is opened around it. On SQLite that saves a BEGIN
    and its rollback, each a round trip to the connection's aiosqlite thread; on
    PostgreSQL the BEGIN and ROLLBACK round trips. Reads of several statements that
    must agree with each other use `sessions`."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    write_sessions: async_sessionmaker[AsyncSession]
    single: AsyncEngine
    # The hot reads, on the driver (db/reader.py).
    reader: Reader

    def reads(self) -> AsyncConnection:
        """A connection for one statement (used as `async with database.reads()`):
        Core, no ORM session around it, no transaction opened."""
        return self.single.connect()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncSession]:
        """One write transaction (BEGIN IMMEDIATE on SQLite), committed on success."""
        async with self.write_sessions() as session, session.begin():
            yield session

    @property
    def write_engine(self) -> AsyncEngine:
        """The engine whose transactions BEGIN IMMEDIATE on SQLite (migrations)."""
        return self.engine.execution_options(**{_IMMEDIATE: True})

    def observe(self, observer: Observer) -> None:
        """Call `observer(statement, parameters, duration_s)` after each statement the
        reader runs (the engine's own are seen with SQLAlchemy's events)."""
        self.reader.observers.append(observer)

    async def dispose(self) -> None:
        await self.reader.close()
        await self.engine.dispose()


SQLITE_POOL = 12  # connections of a SQLite engine, all kept open
SQLITE_READERS = 4  # the reader's own SQLite connections (db/reader.py)


def create_database(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 10,
    busy_timeout_ms: int = 5000,
    echo: bool = False,
) -> Database:
    url = async_url(url)
    # Bound values (scores, emails, key hashes) never appear in error messages,
    # which end up in logs (FERPA).
    kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
    if is_sqlite(url):
        # aiosqlite runs one thread per connection, and those threads compete for
        # the GIL. A fixed pool: overflow connections (each a new thread and file
        # handle, its PRAGMAs run again) would be opened and closed under load. 12
        # against 6 at 16 connections, alternating: the README query 190 against 171
        # requests/s, the 100-student page 62 against 50 (single-statement reads
        # hold a connection only for their statement, so more of them overlap).
        # Sessions end their transactions before they give a connection back: the
        # pool's own rollback on return would be a second round trip each time.
        kwargs.update(pool_size=SQLITE_POOL, max_overflow=0, pool_reset_on_return=None)
    else:
        kwargs.update(
            pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True
        )
    engine = create_async_engine(url, **kwargs)
    if is_sqlite(url):
        _configure_sqlite(engine, busy_timeout_ms)
    write_engine = engine.execution_options(**{_IMMEDIATE: True})
    single = (
        engine.execution_options(**{_SINGLE: True})
        if is_sqlite(url)
        else engine.execution_options(isolation_level="AUTOCOMMIT")
    )
    reader = Reader(
        engine,
        connections=SQLITE_READERS if is_sqlite(url) else pool_size,
        busy_timeout_ms=busy_timeout_ms,
    )
    return Database(
        engine=engine,
        sessions=async_sessionmaker(engine, expire_on_commit=False),
        write_sessions=async_sessionmaker(write_engine, expire_on_commit=False),
        single=single,
        reader=reader,
    )


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so that writes can BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        _use_wal(cursor, busy_timeout_ms / 1000)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A deferred transaction that later writes can fail with SQLITE_BUSY whatever
        # the busy timeout: writers take the lock up front.
        options = conn.get_execution_options()
        if options.get(_SINGLE, False):
            return  # one statement: SQLite's own implicit transaction is enough
        immediate = options.get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _use_wal(cursor: Any, timeout_s: float) -> None:
    """Switch the file to WAL. The switch needs a moment of exclusive access, for
    which SQLite does not call the busy handler: when another connection is opening
    the same new file (two workers starting), read the mode it left, retrying for up
    to the busy timeout. Only a brand-new file ever waits here."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except Exception:
            try:
                cursor.execute("PRAGMA journal_mode")
                if str(cursor.fetchone()[0]).lower() == "wal":
                    return
            except Exception:
                pass  # still locked: try again
            if time.monotonic() >= deadline:
                raise
            time.sleep(WAL_RETRY_S)


async def ping(database: Database) -> None:
    """One round trip to the database (SELECT 1); raises when it cannot answer."""
    async with database.sessions() as session:
        await session.execute(text("SELECT 1"))
