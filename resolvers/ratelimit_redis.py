"""Rate budgets shared by the cluster: one token bucket per identity in Redis, taken by
one atomic script, with this worker's own buckets (its share of the budget) while
Redis is unreachable."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from resolvers.ratelimit import (
    EPSILON,
    MAX_DEBT_WINDOWS,
    WINDOW_S,
    RateState,
    RateStore,
    rate_state,
)

log = logging.getLogger("gradepulse.ratelimit")
# While Redis is down, at most one operation a second tries it again (the others are
# charged here without waiting): it is used again within a second of returning.
RETRY_INTERVAL_S = 1.0

# MemoryRateStore.take in Lua, on Redis's clock (TIME), so that workers whose clocks
# disagree still share one bucket. Numbers travel as "%.17g" strings: they round-trip
# exactly, and Redis would truncate a Lua number in a reply to an integer. A bucket
# lives WINDOW_S after its last charge, as in MemoryRateStore: by then it is full,
# and a missing bucket is a full one. A refused call or a cost of 0 writes nothing;
# ARGV[5] = '1' takes the cost however little remains (RateStore's `force`), down
# to a debt of ARGV[6] minutes of budget.
TAKE = """
local capacity = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local window_s = tonumber(ARGV[3])
local epsilon = tonumber(ARGV[4])
local force = ARGV[5] == '1'
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local tokens = capacity
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
if bucket[1] then
  local rate = capacity / window_s
  local elapsed = math.max(0, now - tonumber(bucket[2]))
  tokens = math.min(capacity, tonumber(bucket[1]) + elapsed * rate)
end
local allowed = force or cost <= tokens + epsilon
if allowed and cost > 0 then
  local floor = 0
  if force then floor = -tonumber(ARGV[6]) * capacity end
  tokens = math.max(floor, tokens - cost)
  redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
             'at', string.format('%.17g', now))
  -- Kept until it is full again (a minute, or longer after a forced charge).
  redis.call('PEXPIRE', KEYS[1],
             math.max(1, math.ceil((capacity - tokens) * window_s * 1000 / capacity)))
end
return {string.format('%.17g', tokens), time[1], time[2], allowed and 1 or 0}
"""


class RedisRateStore:
    """A RateStore with the semantics of MemoryRateStore, its buckets under
    `<prefix>rate:<identity>` in Redis. When Redis fails, the operation is charged to
    `fallback` (one warning per outage) with 1/`workers` of the capacity, so that the
    `workers` workers together allow about the budget; Redis is tried again at most
    once per RETRY_INTERVAL_S until it answers. `clock` is monotonic seconds (tests)."""

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str,
        fallback: RateStore,
        workers: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._script = client.register_script(TAKE)
        self._prefix = f"{prefix}rate:"
        self._fallback = fallback
        self._workers = max(1, workers)
        self._clock = clock
        # Set while Redis is down: when to try it again.
        self._retry_at: float | None = None

    @property
    def shared(self) -> bool:
        """False while operations are charged to this worker's own buckets."""
        return self._retry_at is None

    async def take(
        self, identity: str, capacity: int, cost: int, *, force: bool = False
    ) -> RateState:
        if self._retry_at is not None:
            now = self._clock()
            if now < self._retry_at:
                return await self._take_locally(identity, capacity, cost, force)
            self._retry_at = now + RETRY_INTERVAL_S  # this operation probes; no other
        try:
            state, _ = await self.take_shared(identity, capacity, cost, force=force)
        except (RedisError, OSError) as exc:
            if self._retry_at is None:
                log.warning(
                    "Redis unreachable (%s: %s): rate budgets are per worker until "
                    "it answers again",
                    type(exc).__name__,
                    exc,
                )
            self._retry_at = self._clock() + RETRY_INTERVAL_S
            return await self._take_locally(identity, capacity, cost, force)
        if self._retry_at is not None:
            self._retry_at = None
            log.warning("Redis answers again: rate budgets are shared by the cluster")
        return state

    async def take_shared(
        self, identity: str, capacity: int, cost: int, *, force: bool = False
    ) -> tuple[RateState, float]:
        """One charge of the cluster's bucket, and the Redis time (epoch seconds) it
        was taken at. Raises what the client raises when Redis fails."""
        reply: list[Any] = await self._script(
            keys=[self._prefix + identity],
            args=[
                capacity,
                cost,
                repr(WINDOW_S),
                repr(EPSILON),
                int(force),
                MAX_DEBT_WINDOWS,
            ],
        )
        tokens, seconds, micros, allowed = reply
        now = int(seconds) + int(micros) / 1_000_000  # as the script computes it
        state = rate_state(capacity, cost, float(tokens), now, allowed=bool(allowed))
        return state, now

    def local_capacity(self, capacity: int) -> int:
        """This worker's share of a budget while Redis is down (at least 1 point)."""
        return max(1, capacity // self._workers)

    async def _take_locally(
        self, identity: str, capacity: int, cost: int, force: bool
    ) -> RateState:
        # The answer reports the share as the limit: it is what this worker allows.
        return await self._fallback.take(
            identity, self.local_capacity(capacity), cost, force=force
        )
