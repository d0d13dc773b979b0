"""Rate budgets: a token bucket of cost points per minute per identity, per role."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple, Protocol

from resolvers.viewer import Role, Viewer

WINDOW_S = 60.0
# Identities whose bucket is not full; past this many the least recently charged
# one is forgotten (it starts again with a full bucket).
MAX_IDENTITIES = 100_000
# Float refills can land a hair below a whole point (9.999999999 for 10).
EPSILON = 1e-9
# A forced charge (work already done) may leave the bucket this many minutes of
# budget in debt: the caller then waits for it to refill past 0.
MAX_DEBT_WINDOWS = 10


class RateState(NamedTuple):
    """One operation's charge and the budget after it. `reset_at` is when the bucket
    is full again (UTC, rounded up to the second); `retry_after_s` is 0 when the
    operation was allowed, else the whole seconds until its cost is available.
    (A tuple: one is made per operation.)"""

    cost: int
    limit: int
    remaining: int
    reset_at: datetime
    allowed: bool
    retry_after_s: int
    # Whole seconds until the bucket is full again (the RateLimit header's `t`).
    full_in_s: int = 0


class RateStore(Protocol):
    """Where buckets live: in process (MemoryRateStore) or shared by the cluster
    through Redis (resolvers/ratelimit_redis.py).
    `take` never raises for an over-budget call: it answers with allowed=False and
    charges nothing. A cost of 0 is always allowed and charges nothing. `force`
    takes the cost however little remains (down to 0): for work already done that
    turned out to cost more than it was charged."""

    async def take(
        self, identity: str, capacity: int, cost: int, *, force: bool = False
    ) -> RateState: ...


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    full_at: float  # when it is full again (then it is dropped)


class MemoryRateStore:
    """Token buckets in this process, refilling continuously at capacity per
    WINDOW_S. A bucket is kept only while it may not be full: it is full again at
    most WINDOW_S after its last charge, and is then dropped (a missing bucket is a
    full one). `clock` gives epoch seconds (injected by tests)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        max_identities: int = MAX_IDENTITIES,
    ) -> None:
        self._clock = clock
        self._max = max_identities
        # By last charge, oldest first: the full ones and the overflow leave first.
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        """Buckets held, once the full ones are dropped."""
        self._prune(self._clock())
        return len(self._buckets)

    def _prune(self, now: float) -> None:
        buckets = self._buckets
        while buckets:
            oldest = next(iter(buckets.values()))
            if oldest.full_at > now and len(buckets) <= self._max:
                break
            buckets.popitem(last=False)

    async def take(
        self, identity: str, capacity: int, cost: int, *, force: bool = False
    ) -> RateState:
        now = self._clock()
        bucket = self._buckets.get(identity)
        tokens = float(capacity)
        if bucket is not None:
            tokens = refilled(bucket.tokens, bucket.at, now, capacity)
        allowed = force or cost <= tokens + EPSILON
        if allowed and cost > 0:
            tokens = charged(tokens, cost, capacity, force=force)
            full_at = now + (capacity - tokens) * WINDOW_S / capacity
            self._buckets[identity] = _Bucket(tokens, now, full_at)
            self._buckets.move_to_end(identity)
            self._prune(now)
        return rate_state(capacity, cost, tokens, now, allowed=allowed)


# The bucket's arithmetic, shared by every store (resolvers/ratelimit_redis.py runs
# the same steps in Lua, then answers through rate_state).


def charged(tokens: float, cost: int, capacity: int, *, force: bool) -> float:
    """The points left after a charge: never below 0, except for a forced one,
    which may leave a debt of up to MAX_DEBT_WINDOWS minutes of budget."""
    floor = -MAX_DEBT_WINDOWS * capacity if force else 0.0
    return max(floor, tokens - cost)


def refilled(tokens: float, at: float, now: float, capacity: int) -> float:
    """A bucket's points at `now`, charged down to `tokens` at `at` (epoch seconds)."""
    rate = capacity / WINDOW_S  # points per second
    return min(float(capacity), tokens + max(0.0, now - at) * rate)


def rate_state(
    capacity: int, cost: int, tokens: float, now: float, *, allowed: bool
) -> RateState:
    """The answer for one charge: `tokens` are the points left after it (all of them
    when it was refused, since a refused call is charged nothing)."""
    rate = capacity / WINDOW_S
    retry_after_s = (
        0 if allowed else max(1, math.ceil((cost - tokens) / rate - EPSILON))
    )
    to_full = max(0.0, (capacity - tokens) / rate - EPSILON)
    return RateState(
        cost=cost,
        limit=capacity,
        remaining=max(0, math.floor(tokens + EPSILON)),  # a debt shows as 0
        reset_at=datetime.fromtimestamp(math.ceil(now + to_full), UTC),
        allowed=allowed,
        retry_after_s=retry_after_s,
        full_in_s=math.ceil(to_full),
    )


class RateLimiter:
    """The budgets per role (RATE_LIMIT_* points per minute) over a store. Callers
    are keyed by `viewer.identity`; anonymous ones by their address."""

    def __init__(
        self,
        store: RateStore,
        *,
        student: int,
        teacher: int,
        admin: int,
    ) -> None:
        self.store = store
        self.capacities: dict[Role, int] = {
            "student": student,
            "teacher": teacher,
            "admin": admin,
        }

    def capacity(self, viewer: Viewer) -> int:
        return self.capacities[viewer.role]

    @staticmethod
    def identity(viewer: Viewer, client_host: str | None) -> str:
        if viewer.anonymous:
            return f"ip:{client_host or 'unknown'}"
        return viewer.identity

    async def charge(
        self, viewer: Viewer, client_host: str | None, cost: int
    ) -> RateState:
        """Take `cost` points from the caller's bucket, or refuse without charging."""
        return await self.store.take(
            self.identity(viewer, client_host), self.capacity(viewer), cost
        )

    async def charge_after(
        self, viewer: Viewer, client_host: str | None, cost: int
    ) -> RateState:
        """Take `cost` points for work already done, however few remain: the
        bucket empties at worst, and the caller's next operations wait."""
        return await self.store.take(
            self.identity(viewer, client_host), self.capacity(viewer), cost, force=True
        )
