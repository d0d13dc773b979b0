"""The schema's field usage in the database: counts per (type, field, UTC hour) that
every worker adds to with an upsert, and the sums that fieldUsage(since:) reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from db import models
from db.engine import Database, create_database

U = models.FieldUsage.__table__.c
# Rows of one statement (a worker adds at most one row per field and hour).
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One field's uses in one hour, as a worker adds them."""

    type_name: str
    field_name: str
    hour: datetime  # UTC, aware, on the hour
    count: int
    last_used_at: datetime  # UTC, aware


@dataclass(frozen=True, slots=True)
class UsageTotal:
    """One field's uses summed over hours, and the last of them."""

    type_name: str
    field_name: str
    count: int
    last_used_at: datetime  # UTC, aware


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


async def add_usage(
    session: AsyncSession, rows: Sequence[UsageRow], *, dialect: str
) -> None:
    """Add the counts to their (type, field, hour) rows, keeping the later
    last_used_at: increments in SQL, so that no worker overwrites another's."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(models.FieldUsage)
    later = func.greatest if dialect == "postgresql" else func.max
    statement = statement.on_conflict_do_update(
        index_elements=[U.type_name, U.field_name, U.hour],
        set_={
            "count": U.count + statement.excluded.count,
            "last_used_at": later(U.last_used_at, statement.excluded.last_used_at),
        },
    )
    values = [
        {
            "type_name": row.type_name,
            "field_name": row.field_name,
            "hour": _naive(row.hour),
            "count": row.count,
            "last_used_at": _naive(row.last_used_at),
        }
        for row in rows
    ]
    for at in range(0, len(values), _CHUNK):
        await session.execute(statement, values[at : at + _CHUNK])


async def usage_since(
    session: AsyncSession | AsyncConnection, since_hour: datetime | None
) -> list[UsageTotal]:
    """Each used field's count over the hours from `since_hour` (all of them when
    None) and its last use in them, by type and field."""
    query = select(
        U.type_name, U.field_name, func.sum(U.count), func.max(U.last_used_at)
    ).group_by(U.type_name, U.field_name)
    if since_hour is not None:
        query = query.where(U.hour >= _naive(since_hour))
    result = await session.execute(query.order_by(U.type_name, U.field_name))
    return [
        UsageTotal(type_name, field_name, int(count), last.replace(tzinfo=UTC))
        for type_name, field_name, count, last in result
    ]


class UsageLedger:
    """Where a worker adds its counts: an engine of its own, so that the flushes
    are never counted as the operations' DB queries, nor charged."""

    def __init__(self, database: Database, *, owns_database: bool = False) -> None:
        self.database = database
        self._owns_database = owns_database

    @classmethod
    def connect(cls, url: str, *, busy_timeout_ms: int = 5000) -> UsageLedger:
        database = create_database(
            url, pool_size=1, max_overflow=1, busy_timeout_ms=busy_timeout_ms
        )
        return cls(database, owns_database=True)

    async def add(self, rows: Sequence[UsageRow]) -> None:
        if not rows:
            return
        async with self.database.writing() as session:
            await add_usage(session, rows, dialect=self.database.dialect)

    async def dispose(self) -> None:
        if self._owns_database:
            await self.database.dispose()
