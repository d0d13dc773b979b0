"""Helpers of the deep-page tests: the statements a request sends, with their
parameters, and SQLite's query plan for one of them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

Statement = tuple[str, Any]


@contextmanager
def sent_statements(api: Any) -> Iterator[list[Statement]]:
    """(statement, parameters) of every statement `api`'s engine sends meanwhile."""
    sent: list[Statement] = []

    def record(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any
    ) -> None:
        sent.append((statement, parameters))

    def observe(statement: str, parameters: Any, _duration_s: float) -> None:
        sent.append((statement, parameters))

    database = api.services.database
    engine = database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    database.observe(observe)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)
        database.reader.observers.remove(observe)


def page_statement(sent: list[Statement], table: str) -> Statement:
    """The one SELECT of a page of `table` (not its count) among `sent`."""
    pages = [
        (statement, parameters)
        for statement, parameters in sent
        if statement.lstrip().upper().startswith("SELECT")
        and f"FROM {table}" in statement
        and "count(" not in statement
    ]
    assert len(pages) == 1, sent
    return pages[0]


def assert_no_offset(
    backend: str, statement: str, parameters: Any, *, limit: int
) -> None:
    """The page is `LIMIT limit` and skips no rows: SQLAlchemy writes `OFFSET 0`
    beside every LIMIT on SQLite, and no OFFSET on PostgreSQL."""
    tail = statement.rstrip()
    if backend == "sqlite":
        assert tail.endswith("LIMIT ? OFFSET ?"), statement
        assert tuple(parameters)[-2:] == (limit, 0)
    else:
        assert "OFFSET" not in statement.upper()
        assert tail.endswith(f"LIMIT ${len(parameters)}::INTEGER"), statement
        assert tuple(parameters)[-1] == limit


async def sqlite_plan(api: Any, statement: Statement) -> list[str]:
    """The details of SQLite's EXPLAIN QUERY PLAN for a sent statement."""
    sql, parameters = statement
    async with api.services.database.sessions() as session:
        connection = await session.connection()
        result = await connection.exec_driver_sql(
            "EXPLAIN QUERY PLAN " + sql, tuple(parameters)
        )
        return [row[-1] for row in result]
