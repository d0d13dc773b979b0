"""This worker's identity and its heartbeat in Redis: which workers of the cluster
are alive, as /health shows it."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("gradepulse.cluster")
# A worker missing this many sampler ticks is no longer alive.
TICKS_ALIVE = 3
# A heartbeat (or the goodbye) that takes longer is abandoned: the sampler never
# waits on it, and shutdown waits at most this long.
BEAT_TIMEOUT_S = 0.5

# The heartbeats are a sorted set of worker ids scored by the Redis time (epoch
# milliseconds) until which each counts as alive: one clock for every machine. A beat
# also drops the members already past it, and keeps the set itself alive as long as
# its longest-lived member (a cluster that is gone leaves nothing behind).
BEAT = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + window, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
if redis.call('PTTL', KEYS[1]) < window then
  redis.call('PEXPIRE', KEYS[1], window)
end
return 1
"""
LIVE = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
"""


@dataclass(frozen=True, slots=True)
class Worker:
    """One worker process: `id` is unique to this start of it."""

    id: str
    host: str
    pid: int

    @classmethod
    def here(cls) -> Worker:
        host, pid = socket.gethostname(), os.getpid()
        return cls(id=f"{host}:{pid}:{secrets.token_hex(3)}", host=host, pid=pid)

    def as_json(self) -> dict[str, str | int]:
        return {"id": self.id, "host": self.host, "pid": self.pid}


class Cluster:
    """The workers this one knows to be alive. Without Redis (`client` None) that is
    itself alone. With it, `beat` (once per sampler tick) says this worker is alive
    for TICKS_ALIVE ticks, `leave` (at a clean stop) takes that back at once, and
    `workers` lists the ids whose time has not run out, under `<prefix>workers`.
    A Redis failure never raises: beats log one warning per outage, and `workers`
    falls back to this worker alone."""

    def __init__(
        self,
        worker: Worker,
        client: Redis | None = None,
        *,
        prefix: str = "gradepulse:",
        interval_s: float = 1.0,
    ) -> None:
        self.worker = worker
        self._client = client
        self._key = f"{prefix}workers"
        self._window_ms = max(1, round(TICKS_ALIVE * interval_s * 1000))
        self._beat = client.register_script(BEAT) if client is not None else None
        self._live = client.register_script(LIVE) if client is not None else None
        self._down = False

    async def beat(self) -> None:
        if self._beat is None:
            return
        try:
            await asyncio.wait_for(
                self._beat(keys=[self._key], args=[self.worker.id, self._window_ms]),
                BEAT_TIMEOUT_S,
            )
        except (RedisError, OSError, TimeoutError) as exc:
            if not self._down:
                self._down = True
                log.warning(
                    "heartbeat failed (%s: %s): other workers will not see this "
                    "one until Redis answers again",
                    type(exc).__name__,
                    exc,
                )
            return
        if self._down:
            self._down = False
            log.warning("Redis answers again: heartbeats resumed")

    async def leave(self) -> None:
        if self._client is None:
            return
        try:
            await asyncio.wait_for(
                self._client.zrem(self._key, self.worker.id), BEAT_TIMEOUT_S
            )
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning(
                "could not remove the heartbeat (%s): this worker stays listed "
                "for %d more ticks",
                type(exc).__name__,
                TICKS_ALIVE,
            )

    async def workers(self) -> list[str]:
        """The live workers' ids, sorted; this one is always among them (it answers)."""
        ids = {self.worker.id}
        if self._live is not None:
            try:
                live = await asyncio.wait_for(
                    self._live(keys=[self._key]), BEAT_TIMEOUT_S
                )
            except (RedisError, OSError, TimeoutError):
                pass  # /health says cluster.redis "down" already
            else:
                ids.update(m.decode() if isinstance(m, bytes) else str(m) for m in live)
        return sorted(ids)
