"""Cache invalidations broadcast through Redis. Each worker keeps its own caches; a
write publishes what it invalidated on `<prefix>cache` (awaited before the write
answers) and the other workers apply it to theirs. Pub/sub is at-most-once, so a
worker that (re)subscribes clears its caches: it may have missed invalidations; and a
worker whose own publish failed has every worker clear theirs once Redis is back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

log = logging.getLogger("gradepulse.cache")
# A write waits at most this long for its publish; past it the write answers anyway.
PUBLISH_TIMEOUT_S = 0.5
# The subscriber's connection is checked this often (redis-py's health_check_interval
# and a PING of our own, whose answer we see); silent for SILENT_S, it is dead.
HEALTH_CHECK_S = 1
SILENT_S = 3 * HEALTH_CHECK_S
# A turn of the listening loop that took this long means the event loop itself
# stalled (a long collection, a blocking call): that silence says nothing of Redis.
STALLED_S = 2 * HEALTH_CHECK_S
# Between attempts to subscribe again while Redis is unreachable.
RESUBSCRIBE_S = 0.5
# stop() waits this long for the subscriber to end before it closes its connections.
STOP_S = 2.0

Errors = (RedisError, OSError, TimeoutError)
# What a worker publishes in place of an invalidation once one of its own could not
# be published: every worker drops everything, since what was lost is unknown.
MISSED = "missed"


class RedisInvalidations:
    """An InvalidationBus over Redis pub/sub, and the worker's one subscriber task
    (`start()` / `stop()` in the lifespan). `apply(kind, args)` applies another
    worker's invalidation here; `clear()` drops every cached entry. A worker knows its
    own messages by `origin`, an id of its own, and ignores them."""

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str,
        apply: Callable[[str, dict[str, Any]], None],
        clear: Callable[[], None],
    ) -> None:
        self.channel = f"{prefix}cache"
        self.origin = uuid.uuid4().hex
        self._client = client
        # The subscriber holds a connection of its own: the shared client's settings
        # plus a health check, since it mostly waits.
        pool = client.connection_pool
        self._listener = Redis.from_pool(
            ConnectionPool(
                connection_class=pool.connection_class,
                **{**pool.connection_kwargs, "health_check_interval": HEALTH_CHECK_S},
            )
        )
        self._apply = apply
        self._clear = clear
        self._publish_failing = False
        # Set while some invalidation of this worker never left (until a MISSED
        # that started after the last failure got through); `_failures` counts them.
        self._lost = False
        self._failures = 0
        self._task: asyncio.Task[None] | None = None
        # Set while subscribed; `resets` counts the clears on (re)subscribing and
        # `received` the invalidations of other workers applied here.
        self.subscribed = asyncio.Event()
        self.resets = 0
        self.received = 0

    async def publish(self, kind: str, args: dict[str, Any]) -> None:
        """Never raises: a write whose broadcast fails still succeeds (one warning
        per outage). The next publish that gets through, a write's or the
        subscriber's once it is back, is a MISSED instead."""
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
            if not self._publish_failing:
                self._publish_failing = True
                log.warning(
                    "Redis unreachable (%s: %s): cache invalidations do not reach the "
                    "other workers until it answers again",
                    type(exc).__name__,
                    exc,
                )
            return
        if kind == MISSED and self._failures == failures:
            self._lost = False
        if self._publish_failing:
            self._publish_failing = False
            log.warning("Redis answers again: cache invalidations reach the workers")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cache-invalidations")

    async def stop(self) -> None:
        """The subscriber ends (waited for at most STOP_S) and every connection it
        opened is closed: they all come from its own pool, which closes them
        whether they are in use or not."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=STOP_S)
        await self._listener.aclose()

    async def _run(self) -> None:
        down = False
        while True:
            pubsub = self._listener.pubsub()
            try:
                await self._subscribe(pubsub)
                if down:
                    down = False
                    log.warning("Redis answers again: cache invalidations are received")
                await self._listen(pubsub)
            except Errors as exc:
                if not down:
                    down = True
                    log.warning(
                        "cache invalidations not received (%s: %s): caches are "
                        "cleared once Redis answers again",
                        type(exc).__name__,
                        exc,
                    )
            except Exception:  # a bug: keep receiving rather than go deaf
                log.exception("cache invalidation subscriber failed; subscribing again")
            finally:
                self.subscribed.clear()
                with contextlib.suppress(*Errors):
                    await pubsub.aclose()
            await asyncio.sleep(RESUBSCRIBE_S)

    async def _subscribe(self, pubsub: PubSub) -> None:
        """Subscribed (Redis confirmed it), then every cache cleared: what was
        published before may have been missed, what comes after is received."""
        async with asyncio.timeout(SILENT_S):
            await pubsub.subscribe(self.channel)
            while True:
                message = await pubsub.get_message(timeout=HEALTH_CHECK_S)
                if message is not None and message["type"] == "subscribe":
                    break
        self._clear()
        self.resets += 1
        self.subscribed.set()
        if self._lost:  # Redis is back: tell the others what they missed of ours
            await self.publish(MISSED, {})

    async def _listen(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        heard = turn = loop.time()
        ping_at = heard + HEALTH_CHECK_S
        while True:
            message = await pubsub.get_message(timeout=HEALTH_CHECK_S)
            now = loop.time()
            if message is not None or now - turn > STALLED_S:
                heard = now
            turn = now
            if message is not None and message["type"] == "message":
                self._receive(message["data"])
            if now >= ping_at:
                await pubsub.ping()  # its pong counts as heard
                ping_at = now + HEALTH_CHECK_S
            if now - heard > SILENT_S:
                raise TimeoutError(f"no answer from Redis in {SILENT_S} s")

    def _receive(self, data: bytes | str) -> None:
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
