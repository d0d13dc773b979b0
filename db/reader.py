"""Reads straight on the driver, for the hot read paths (a page of students, their
count, their grades, students by id).

Through SQLAlchemy's async engine, one SELECT of a few rows costs about 870 us of
CPU on SQLite (a Core statement built and its cache key computed, the pool checkout,
the greenlet, four round trips to the connection's aiosqlite thread: cursor,
execute, fetch, close) and 690 us on PostgreSQL; the same statement on the driver
costs 95 us (one round trip: `execute_fetchall`) and 145 us (`asyncpg` pool
`fetch`). The Reader keeps SQLAlchemy Core for writing the statement: each
statement is built once per shape (`key`), compiled for the dialect, and its bind
and result processors are SQLAlchemy's own, so a row read here equals the row a
session reads (tests/test_reader.py checks each statement both ways).

- SQLite: a few aiosqlite connections of its own, `query_only`, no transaction
  opened (each SELECT is its own snapshot, like `Database.reads()`); several
  statements may wait on one connection's thread, so none is checked out: each
  statement goes to the connection with the fewest in flight.
- PostgreSQL: an asyncpg pool of its own; a statement that finds its pooled
  connection closed by the server (a restart) expires every pooled connection and
  is tried once more (reads are idempotent).

Driver errors are raised as SQLAlchemy's (OperationalError for a database that
cannot be reached), so that server/errors.py maps them as before. Observers see
each statement with its duration (app.py: the monitor's tally and histogram)."""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import ColumnElement, any_, bindparam, func, literal_column, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Select
from sqlalchemy.types import String, TypeDecorator, TypeEngine

READER_NAME = "gradepulse-reader"
# Called after each statement with its SQL, its parameters and its duration (s).
Observer = Callable[[str, Sequence[Any], float], None]
# PostgreSQL error classes of a server that cannot serve (connection exception,
# operator intervention such as a shutdown, insufficient resources).
_UNAVAILABLE_SQLSTATES = ("08", "57", "53")


class _JsonList(TypeDecorator[Any]):
    """A list bound as one JSON text (SQLite reads it with json_each)."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else orjson.dumps(list(value)).decode()


def in_values(
    column: ColumnElement[Any], name: str, dialect: str
) -> ColumnElement[bool]:
    """`column` is one of the list bound as `name`: one parameter whatever the
    list's length, so that one statement text serves every list (PostgreSQL
    `= ANY($n)`, SQLite `IN (SELECT value FROM json_each(?))`; both seek the
    column's index)."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    values = select(literal_column("value")).select_from(
        func.json_each(bindparam(name, type_=_JsonList()))
    )
    return column.in_(values.scalar_subquery())


@dataclass(frozen=True, slots=True)
class Prepared:
    """A statement compiled for the dialect: its text, its parameters in order with
    their bind processors (and the values the compiler bound itself, such as
    SQLite's OFFSET), and a result processor per column (None: as the driver gives)."""

    sql: str
    names: tuple[str, ...]
    binds: tuple[Callable[[Any], Any] | None, ...]
    constants: dict[str, Any]
    types: tuple[TypeEngine[Any], ...]


def prepare(statement: Select[Any], dialect: Dialect) -> Prepared:
    compiled = statement.compile(dialect=dialect)
    names = tuple(compiled.positiontup or ())
    binds = tuple(
        compiled.binds[name].type._cached_bind_processor(dialect) for name in names
    )
    constants = {
        name: compiled.binds[name].effective_value
        for name in names
        if compiled.binds[name].value is not None
    }
    return Prepared(
        sql=compiled.string,
        names=names,
        binds=binds,
        constants=constants,
        types=tuple(column.type for column in compiled._result_columns),
    )


Processors = tuple[Callable[[Any], Any] | None, ...] | None


def result_processors(
    types: Sequence[TypeEngine[Any]], dialect: Dialect, oids: Sequence[Any]
) -> Processors:
    """SQLAlchemy's result processor of each column (`oids`: the driver's type of
    each, which asyncpg's processors need); None when every value is kept as is."""
    processors = tuple(
        type_._cached_result_processor(dialect, oid)
        for type_, oid in zip(types, oids, strict=True)
    )
    return processors if any(processors) else None


async def _fetch_on(pool: Any, sql: str, values: list[Any]) -> list[Any]:
    connection = await pool.acquire()
    try:
        return list(await connection.fetch(sql, *values))
    except asyncio.CancelledError:
        # Cancelled (the operation's deadline): asyncpg would send the server a
        # cancel request, on a connection of its own, and wait for the answer; a
        # server that answers nothing holds that for a minute. Dropped instead.
        connection.terminate()
        raise
    finally:
        await pool.release(connection)


def _postgresql_error(sql: str, error: Exception) -> Exception:
    """An asyncpg error as SQLAlchemy raises it (the parameters never shown)."""
    import asyncpg

    if isinstance(error, asyncpg.exceptions.PostgresError):
        state = str(getattr(error, "sqlstate", "") or "")
        if state.startswith(_UNAVAILABLE_SQLSTATES):
            return OperationalError(sql, None, error, hide_parameters=True)
        return DBAPIError(sql, None, error, hide_parameters=True)
    if isinstance(
        error,
        (
            asyncpg.exceptions.InterfaceError,
            asyncpg.exceptions.InternalClientError,
            OSError,
        ),
    ):
        return OperationalError(sql, None, error, hide_parameters=True)
    return DBAPIError(sql, None, error, hide_parameters=True)


class Reader:
    """Runs prepared SELECTs on connections of its own (see the module's doc)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        connections: int,
        busy_timeout_ms: int = 5000,
    ) -> None:
        self.dialect: Dialect = engine.dialect
        self.dialect_name = engine.dialect.name
        self._connect_args = engine.dialect.create_connect_args(engine.url)
        self._size = connections
        self._busy_timeout_ms = busy_timeout_ms
        self._prepared: dict[Hashable, Prepared] = {}
        self._processors: dict[str, Processors] = {}  # by SQL text
        self.observers: list[Observer] = []
        self._lock = asyncio.Lock()
        self._sqlite: list[Any] = []  # aiosqlite connections
        self._in_flight: list[int] = []
        self._pool: Any = None  # asyncpg.Pool
        self._closed = False

    async def fetch(
        self,
        key: Hashable,
        build: Callable[[str], Select[Any]],
        params: dict[str, Any],
    ) -> list[Sequence[Any]]:
        """The rows of the statement `build(dialect name)` with `params` bound.

        `key` names the statement's shape: `build` is called once per key, and must
        use nothing but what the key holds (values go in `params`, as bindparams)."""
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = self._prepared[key] = prepare(
                build(self.dialect_name), self.dialect
            )
        values = []
        for name, process in zip(prepared.names, prepared.binds, strict=True):
            value = params[name] if name in params else prepared.constants[name]
            values.append(value if process is None else process(value))
        sql = prepared.sql
        if sql not in self._processors:
            self._processors[sql] = await self._result_processors(prepared)
        started = time.perf_counter()
        if self.dialect_name == "sqlite":
            rows = await self._fetch_sqlite(sql, values)
        else:
            rows = await self._fetch_postgresql(sql, values)
        duration = time.perf_counter() - started
        for observer in self.observers:
            observer(sql, values, duration)
        results = self._processors[sql]
        if results is None:
            return rows
        return [
            tuple(
                value if process is None else process(value)
                for value, process in zip(row, results, strict=True)
            )
            for row in rows
        ]

    async def _result_processors(self, prepared: Prepared) -> Processors:
        if self.dialect_name == "sqlite":
            oids: list[Any] = [None] * len(prepared.types)
        else:  # asyncpg's processors depend on the column's type as sent
            pool = self._pool or await self._open_postgresql()
            try:
                async with pool.acquire() as connection:
                    statement = await connection.prepare(prepared.sql)
                    attributes = statement.get_attributes()
            except Exception as exc:
                raise _postgresql_error(prepared.sql, exc) from exc
            oids = [attribute.type.oid for attribute in attributes]
        return result_processors(prepared.types, self.dialect, oids)

    async def _fetch_sqlite(self, sql: str, values: list[Any]) -> list[Any]:
        if not self._sqlite:
            await self._open_sqlite()
        in_flight = self._in_flight
        index = in_flight.index(min(in_flight))
        in_flight[index] += 1
        try:
            return list(await self._sqlite[index].execute_fetchall(sql, values))
        except sqlite3.Error as exc:
            raise DBAPIError.instance(
                sql, values, exc, sqlite3.Error, hide_parameters=True
            ) from exc
        finally:
            in_flight[index] -= 1

    async def _open_sqlite(self) -> None:
        import aiosqlite

        async with self._lock:
            self._refuse_if_closed()
            if self._sqlite:
                return
            args, kwargs = self._connect_args
            opened = []
            try:
                for _ in range(self._size):
                    connection = await aiosqlite.connect(
                        *args, **{**kwargs, "isolation_level": None}
                    )
                    opened.append(connection)
                    await connection.execute(
                        f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}"
                    )
                    await connection.execute("PRAGMA query_only=ON")
            except sqlite3.Error as exc:
                for connection in opened:
                    await connection.close()
                raise DBAPIError.instance(
                    None, None, exc, sqlite3.Error, hide_parameters=True
                ) from exc
            self._in_flight = [0] * len(opened)
            self._sqlite = opened

    async def _fetch_postgresql(self, sql: str, values: list[Any]) -> list[Any]:
        import asyncpg

        pool = self._pool or await self._open_postgresql()
        try:
            try:
                return await _fetch_on(pool, sql, values)
            except (
                asyncpg.exceptions.ConnectionDoesNotExistError,
                asyncpg.exceptions.ConnectionFailureError,
                asyncpg.exceptions.AdminShutdownError,
                # What a connection the server ended while it sat idle may say.
                asyncpg.exceptions.InternalClientError,
                ConnectionResetError,
            ):
                # A connection the server dropped (a restart): so were the other
                # idle ones. Each is replaced when next taken, and a read can be
                # tried once more.
                await pool.expire_connections()
                return await _fetch_on(pool, sql, values)
        except Exception as exc:
            raise _postgresql_error(sql, exc) from exc

    async def _open_postgresql(self) -> Any:
        import asyncpg

        async with self._lock:
            self._refuse_if_closed()
            if self._pool is None:
                args, kwargs = self._connect_args
                accepted = inspect.signature(asyncpg.connect).parameters
                self._pool = asyncpg.create_pool(
                    *args,
                    **{k: v for k, v in kwargs.items() if k in accepted},
                    min_size=0,
                    max_size=self._size,
                    # Told apart in pg_stat_activity.
                    server_settings={"application_name": READER_NAME},
                )
                await self._pool
            return self._pool

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise InterfaceError("reader closed", None, Exception("closed"))

    async def close(self) -> None:
        self._closed = True
        connections, self._sqlite = self._sqlite, []
        for connection in connections:
            await connection.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
