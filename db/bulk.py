"""Bulk inserts through PostgreSQL's COPY (asyncpg), in the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
from sqlalchemy import Table
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection


def copies(conn: AsyncConnection) -> bool:
    """Whether `copy_records` works on this connection (PostgreSQL over asyncpg)."""
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "asyncpg"


async def copy_records(
    conn: AsyncConnection,
    table: Table,
    columns: Sequence[str],
    records: Iterable[Sequence[Any]],
) -> int:
    """COPY `records` (tuples in the order of `columns`) into `table` inside the
    transaction `conn` has open, so that they commit or roll back with it; returns
    the number of rows. A row the database refuses fails the whole COPY, raised as
    SQLAlchemy's IntegrityError (a refused row) or DBAPIError, as an INSERT's."""
    raw = await conn.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    if not driver.is_in_transaction():
        # SQLAlchemy's asyncpg adapter sends BEGIN with the first statement: COPY
        # first would run (and commit) on its own.
        await conn.exec_driver_sql("SELECT 1")
    if not driver.is_in_transaction():  # pragma: no cover - an autocommit engine
        raise RuntimeError("COPY needs an open transaction")
    try:
        status = await driver.copy_records_to_table(
            table.name, columns=list(columns), records=records, schema_name=table.schema
        )
    except asyncpg.PostgresError as exc:
        statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
        error = (
            IntegrityError
            if isinstance(exc, asyncpg.IntegrityConstraintViolationError)
            else DBAPIError
        )
        raise error(statement, None, exc) from exc
    # asyncpg answers with the command tag: "COPY <rows>"
    return int(status.rsplit(" ", 1)[-1])
