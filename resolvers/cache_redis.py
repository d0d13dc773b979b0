"""Cache invalidations broadcast through Redis. Each worker keeps its own caches; a
write publishes what it invalidated on `<prefix>cache` (awaited before the write
answers) and the other workers apply it to theirs, hearing it through the worker's
one RedisSubscriber. Pub/sub is at-most-once, so a worker that (re)subscribes clears
its caches: it may have missed invalidations; and a worker whose own publish failed
has every worker clear theirs once Redis is back."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from monitoring.subscriber import RedisSubscriber

log = logging.getLogger("gradepulse.cache")
# A write waits at most this long for its publish; past it the write answers anyway.
PUBLISH_TIMEOUT_S = 0.5
# While publishing fails, at most one write this often tries Redis again (the others
# answer without waiting): what they invalidated goes out as a MISSED once it is back.
RETRY_INTERVAL_S = 1.0

# What a worker publishes in place of an invalidation once one of its own could not
# be published: every worker drops everything, since what was lost is unknown.
MISSED = "missed"


class RedisInvalidations:
    """An InvalidationBus over Redis pub/sub, listening on `subscriber` (started and
    stopped by the lifespan). `apply(kind, args)` applies another worker's
    invalidation here; `clear()` drops every cached entry. A worker knows its own
    messages by `origin` (the worker's id) and ignores them."""

    def __init__(
        self,
        client: Redis,
        subscriber: RedisSubscriber,
        *,
        prefix: str,
        origin: str,
        apply: Callable[[str, dict[str, Any]], None],
        clear: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.channel = f"{prefix}cache"
        self.origin = origin
        self.subscriber = subscriber
        self._client = client
        self._apply = apply
        self._clear = clear
        self._clock = clock
        # Set while publishing fails: when a write may try Redis again.
        self._retry_at: float | None = None
        # Set while some invalidation of this worker never left (until a MISSED
        # that started after the last failure got through); `_failures` counts them.
        self._lost = False
        self._failures = 0
        self._down = False  # the subscription is lost (one warning per outage)
        # Set while subscribed; `resets` counts the clears on (re)subscribing and
        # `received` the invalidations of other workers applied here.
        self.subscribed = asyncio.Event()
        self.resets = 0
        self.received = 0
        subscriber.listen(
            [self.channel],
            self._on_message,
            on_subscribed=self._on_subscribed,
            on_lost=self._on_lost,
        )

    async def publish(self, kind: str, args: dict[str, Any]) -> None:
        """Never raises: a write whose broadcast fails still succeeds (one warning
        per outage). While publishing fails, only one write per RETRY_INTERVAL_S
        tries (the others are lost at once). The next publish that gets through, a
        write's or the subscriber's once it is back, is a MISSED instead."""
        if self._retry_at is not None:
            now = self._clock()
            if now < self._retry_at:
                self._lost = True
                self._failures += 1
                return
            self._retry_at = now + RETRY_INTERVAL_S  # this write tries; no other
        await self._send(kind, args)

    async def _send(self, kind: str, args: dict[str, Any]) -> None:
        if self._lost:
            kind, args = MISSED, {}
        failures = self._failures
        payload = json.dumps(
            {"origin": self.origin, "kind": kind, "args": args}, separators=(",", ":")
        )
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await self._client.publish(self.channel, payload)
        except Exception as exc:  # whatever went wrong, the write has succeeded
            self._lost = True
            self._failures += 1
            if self._retry_at is None:
                log.warning(
                    "Redis unreachable (%s: %s): cache invalidations do not reach the "
                    "other workers until it answers again",
                    type(exc).__name__,
                    exc,
                )
            self._retry_at = self._clock() + RETRY_INTERVAL_S
            return
        if kind == MISSED and self._failures == failures:
            self._lost = False
        if self._retry_at is not None:
            self._retry_at = None
            log.warning("Redis answers again: cache invalidations reach the workers")

    async def _on_subscribed(self) -> None:
        """Subscribed (Redis confirmed it), then every cache cleared: what was
        published before may have been missed, what comes after is received."""
        self._clear()
        self.resets += 1
        self.subscribed.set()
        if self._down:
            self._down = False
            log.warning("Redis answers again: cache invalidations are received")
        if self._lost:  # Redis is back: tell the others what they missed of ours
            await self._send(MISSED, {})

    def _on_lost(self, exc: BaseException | None) -> None:
        self.subscribed.clear()
        if exc is not None and not self._down:
            self._down = True
            log.warning(
                "cache invalidations not received (%s: %s): caches are "
                "cleared once Redis answers again",
                type(exc).__name__,
                exc,
            )

    async def _on_message(self, channel: str, data: bytes) -> None:
        try:
            message = json.loads(data)
            if message["origin"] == self.origin:
                return
            if message["kind"] == MISSED:
                self._clear()
            else:
                self._apply(message["kind"], message["args"])
            self.received += 1
        except (ValueError, KeyError, TypeError) as exc:
            log.warning(
                "unreadable cache invalidation (%s: %s): every cache cleared",
                type(exc).__name__,
                exc,
            )
            self._clear()
