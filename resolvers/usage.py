"""Field usage for fieldUsage: every field of the schema with how many operations
selected it and when last, over the whole cluster (the database's hourly counts)
plus what this worker has not flushed yet; admins only."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from db.usage import UsageTotal, usage_since
from monitoring.usage import Usage, hour_start
from resolvers.context import Context


async def list_field_usage(
    ctx: Context, *, since: datetime | None = None
) -> list[Usage]:
    """From the start of the UTC hour that holds `since` (all time without it):
    counts are kept by the hour. Another worker's counts show once it has flushed
    them (monitoring/monitor.py's USAGE_FLUSH_S, and at its stop)."""
    ctx.viewer.require("admin")
    monitor = ctx.services.monitor
    if monitor is None:
        raise RuntimeError("field usage needs the monitor")
    database = ctx.services.database
    first_hour = hour_start(since) if since is not None else None

    async def stored() -> Sequence[UsageTotal]:
        async with database.reads() as connection:
            return await usage_since(connection, first_hour)

    return await monitor.usage.usage(stored, since)
