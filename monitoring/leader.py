"""The cluster's leader: one worker at a time holds a lease in Redis, decides the alerts
(and writes alert.log) and closes the cost periods; the alert rules' state goes with
the lease from one leader to the next."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from enum import Enum
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("gradepulse.leader")

# The lease lasts this many sampler ticks (and at least MIN_LEASE_S); the leader
# renews it at every tick, so it survives a couple of late or failed renewals.
LEASE_TICKS = 3
MIN_LEASE_S = 1.0
# A Redis call that takes longer is abandoned: the sampler never waits on it.
TIMEOUT_S = 0.5

# Take the lease when it is free, extend it while it is ours (1: this worker holds
# it). One script for both: a worker whose take landed but whose answer was lost
# (a timeout) finds its own id at its next tick and holds the lease again, and a
# worker whose lease ran out and was taken by another never extends the new holder's.
TAKE_OR_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif not holder then
  if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return 1
  end
end
return 0
"""
# The rules' state is written only by the lease's holder: a worker whose lease ran out
# while its write was on its way never overwrites the new leader's state.
SAVE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('SET', KEYS[2], ARGV[2])
end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Role(Enum):
    """What this worker does with the alert rules at a tick."""

    LEAD = "lead"  # evaluates, writes alert.log, publishes: for the whole cluster
    FOLLOW = "follow"  # another worker leads: nothing
    ALONE = "alone"  # Redis unreachable and no valid lease: evaluates for itself only


class StatefulRules(Protocol):
    """The part of the alert engine whose state moves with the lease."""

    def export_state(self) -> dict[str, Any]: ...
    def import_state(self, state: dict[str, Any]) -> None: ...


class Leadership:
    """This worker's view of the leader lock `<prefix>leader`.

    Without Redis (`client` None) the worker is alone in its cluster and always leads.
    With it, `renew` (once per sampler tick, beside the sampler) takes the lease when it
    is free and extends it while it is ours, in one script (TAKE_OR_RENEW). The worker
    leads while its last successful renewal is younger than the lease by its own
    monotonic clock, measured from before the call was sent: Redis starts the lease
    later, so a worker stops leading before Redis lets another take over, and two
    never lead at once.
    `release` (at a clean stop) frees the lease at once for another worker.

    On taking the lease, the alert rules' state (firing, since, cooldown) is read
    from `<prefix>alerts:state` before this worker leads; `rules_changed` (after a
    tick that produced events) writes it back, beside the sampler."""

    def __init__(
        self,
        worker_id: str,
        client: Redis | None = None,
        *,
        prefix: str = "gradepulse:",
        interval_s: float = 1.0,
        rules: StatefulRules | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.worker_id = worker_id
        self._client = client
        self._key = f"{prefix}leader"
        self._state_key = f"{prefix}alerts:state"
        self.lease_s = max(MIN_LEASE_S, LEASE_TICKS * interval_s)
        self._rules = rules
        self._clock = clock
        self._renew = (
            client.register_script(TAKE_OR_RENEW) if client is not None else None
        )
        self._release = client.register_script(RELEASE) if client is not None else None
        self._save = client.register_script(SAVE) if client is not None else None
        self._valid_until = float("-inf")
        self._held = False  # the last answer of Redis: the lease is ours
        self._loaded = False  # the rules' state was taken over with it
        self._reachable = True  # the last call to Redis was answered
        self._saving: asyncio.Task[None] | None = None
        self._save_again = False

    @property
    def clustered(self) -> bool:
        return self._client is not None

    @property
    def is_leader(self) -> bool:
        if self._client is None:
            return True
        return self._held and self._loaded and self._clock() < self._valid_until

    @property
    def role(self) -> Role:
        if self.is_leader:
            return Role.LEAD
        return Role.FOLLOW if self._reachable else Role.ALONE

    async def renew(self) -> None:
        """Take or extend the lease; never raises (a failure is logged once)."""
        client = self._client
        if client is None or self._renew is None:
            return
        started = self._clock()
        lease_ms = max(1, round(self.lease_s * 1000))
        try:
            kept = bool(
                await asyncio.wait_for(
                    self._renew(keys=[self._key], args=[self.worker_id, lease_ms]),
                    TIMEOUT_S,
                )
            )
            if kept and not self._held:
                self._held, self._loaded = True, False
            if kept and not self._loaded:
                # Lead only with the state the previous leader left.
                await self._take_over_rules(client)
                self._loaded = True
                log.info("this worker leads the cluster now (%s)", self.worker_id)
        except (RedisError, OSError, TimeoutError) as exc:
            self._unreachable(exc)
            return  # _valid_until stands: the lease runs out by this worker's clock
        if not self._reachable:
            self._reachable = True
            log.warning("Redis answers again: the leader lock works again")
        if kept:
            self._valid_until = started + self.lease_s
        else:
            if self._held:
                log.warning("the lease ran out and another worker took it")
            self._held = False
            self._valid_until = float("-inf")

    async def release(self) -> None:
        """At a clean stop: lead no more, and free the lease if it is still ours."""
        if self._saving is not None:
            with contextlib.suppress(Exception):
                await self._saving  # the last rule state first, while still leading
        held, self._held = self._held, False
        self._valid_until = float("-inf")
        if not held or self._release is None:
            return
        try:
            await asyncio.wait_for(
                self._release(keys=[self._key], args=[self.worker_id]), TIMEOUT_S
            )
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning(
                "could not free the leader lock (%s): another worker takes over "
                "when it runs out, within %.1f s",
                type(exc).__name__,
                self.lease_s,
            )

    # --- the alert rules' state ----------------------------------------------------

    def rules_changed(self) -> None:
        """Write the rules' state to Redis beside the sampler (the latest one wins)."""
        if self._client is None or self._rules is None:
            return
        if self._saving is not None and not self._saving.done():
            self._save_again = True
            return
        self._saving = asyncio.get_running_loop().create_task(
            self._save_rules(), name="alert-state"
        )

    async def _save_rules(self) -> None:
        assert self._save is not None and self._rules is not None
        while True:
            self._save_again = False
            if not self.is_leader:
                return  # a worker that no longer leads must not overwrite the state
            state = json.dumps(self._rules.export_state(), separators=(",", ":"))
            try:
                await asyncio.wait_for(
                    self._save(
                        keys=[self._key, self._state_key],
                        args=[self.worker_id, state],
                    ),
                    TIMEOUT_S,
                )
            except (RedisError, OSError, TimeoutError) as exc:
                self._unreachable(exc)
                return
            if not self._save_again:
                return

    async def _take_over_rules(self, client: Redis) -> None:
        if self._rules is None:
            return
        raw = await asyncio.wait_for(client.get(self._state_key), TIMEOUT_S)
        if raw is None:
            return  # the first leader of this cluster: its own state stands
        try:
            state = json.loads(raw)
            if not isinstance(state, dict):
                raise ValueError("not an object")
            self._rules.import_state(state)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring an unreadable alert state in Redis: %s", exc)

    def _unreachable(self, exc: BaseException) -> None:
        if self._reachable:
            self._reachable = False
            log.warning(
                "the leader lock cannot reach Redis (%s: %s): a leader keeps "
                "leading until its lease runs out; then each worker judges the "
                "alert rules for itself and nobody writes alert.log",
                type(exc).__name__,
                exc,
            )
