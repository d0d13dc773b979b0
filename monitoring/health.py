"""/health, /health/live, /health/ready and /health/db: what the instance and its
dependencies look like to a load balancer and to an operator."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from monitoring.cluster import Cluster
from monitoring.sinks import FileSink

log = logging.getLogger("gradepulse")
DB_CHECK_TIMEOUT_S = 1.0
REDIS_CHECK_TIMEOUT_S = 0.5


class Health:
    """The health endpoints. `ping` makes one round trip to the database; slower
    than DB_CHECK_TIMEOUT_S, or failing, is "unavailable". `redis_ping` (None without
    REDIS_URL) does the same for Redis within REDIS_CHECK_TIMEOUT_S: a Redis that is
    down degrades /health, but only the database decides readiness. `cluster` names
    this worker and the live ones."""

    def __init__(
        self,
        *,
        ping: Callable[[], Awaitable[None]],
        dialect: str,
        sinks: Sequence[FileSink],
        redis_ping: Callable[[], Awaitable[object]] | None = None,
        version: str,
        environment: str,
        uptime_seconds: Callable[[], float],
        cluster: Cluster,
    ) -> None:
        self.ping = ping
        self.dialect = dialect
        self.sinks = sinks
        self.redis_ping = redis_ping
        self.version = version
        self.environment = environment
        self.uptime_seconds = uptime_seconds
        self.cluster = cluster

    def routes(self) -> list[Route]:
        return [
            Route("/health", self.health),
            Route("/health/live", self.live),
            Route("/health/ready", self.ready),
            Route("/health/db", self.database),
        ]

    async def check_database(self) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            await within(self.ping(), DB_CHECK_TIMEOUT_S)
        except Exception as exc:
            log.warning("database check failed: %s", type(exc).__name__)
            return {"status": "unavailable", "dialect": self.dialect}
        latency = (time.perf_counter() - started) * 1000
        return {"status": "ok", "dialect": self.dialect, "latencyMs": round(latency, 3)}

    async def check_redis(self) -> str:
        if self.redis_ping is None:
            return "unconfigured"
        try:
            await within(self.redis_ping(), REDIS_CHECK_TIMEOUT_S)
        except Exception:
            return "down"
        return "ok"

    async def health(self, request: Request) -> JSONResponse:
        database, redis, workers = await asyncio.gather(
            self.check_database(), self.check_redis(), self.cluster.workers()
        )
        checks: dict[str, Any] = {"database": database}
        for sink in self.sinks:
            status = sink.status()
            checks[status.name] = {
                "status": "ok" if status.ok else "failing",
                "path": status.path,
                "failures": status.failures,
                "lastError": status.last_error,
            }
        ok = redis != "down" and all(
            check["status"] == "ok" for check in checks.values()
        )
        return JSONResponse(
            {
                "status": "ok" if ok else "degraded",
                "version": self.version,
                "environment": self.environment,
                "uptimeSeconds": round(self.uptime_seconds(), 3),
                "checks": checks,
                "worker": self.cluster.worker.as_json(),
                "cluster": {"workers": workers, "redis": redis},
            }
        )

    async def live(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> JSONResponse:
        # Only the database takes the instance out of rotation; a failing sink
        # degrades /health but requests are still served.
        database = await self.check_database()
        ok = database["status"] == "ok"
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "database": database},
            status_code=200 if ok else 503,
        )

    async def database(self, request: Request) -> JSONResponse:
        database = await self.check_database()
        ok = database["status"] == "ok"
        return JSONResponse(database, status_code=200 if ok else 503)


_abandoned: set[asyncio.Task[Any]] = set()


async def within(check: Awaitable[Any], timeout_s: float) -> Any:
    """`check`'s result, or TimeoutError after `timeout_s` at the latest. Unlike
    asyncio.wait_for, the answer does not wait for the cancelled check to unwind: a
    driver cancelling a query on a server that answers nothing can take seconds
    more (asyncpg's cancel request is itself a connection to that server)."""
    task = asyncio.ensure_future(check)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if task in done:
        return task.result()
    task.cancel()
    _abandoned.add(task)
    task.add_done_callback(_forget)
    raise TimeoutError


def _forget(task: asyncio.Task[Any]) -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: it was reported as the timeout already
