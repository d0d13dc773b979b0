"""The event bus shared by the workers of a cluster through Redis pub/sub.

Some topics (those with a codec) cross workers on `<prefix>events:<topic>`: a publish
reaches this worker's subscribers at once and goes to Redis for the others; each
worker ignores what it published itself (its origin id), so every subscriber gets
each event once. Publishing never waits for Redis: a sender task sends in order,
each batch bounded by `timeout_s`. Redis pub/sub is at-most-once: what is published
while a worker is cut off does not reach it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Mapping
from typing import Any

import orjson
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from monitoring.bus import Codec, EventBus

log = logging.getLogger("gradepulse.bus")
Errors = (RedisError, OSError, TimeoutError)
# The subscriber's connection is checked this often (redis-py's health check and a
# PING of our own, whose answer we see); silent for SILENT_S, it counts as dead.
HEALTH_CHECK_S = 1.0
SILENT_S = 3 * HEALTH_CHECK_S
# Between two attempts to subscribe while Redis does not answer.
RESUBSCRIBE_S = 0.25
# Items waiting for the sender; past it the oldest are dropped (Redis is down).
OUTBOX = 4096
BATCH = 256  # items sent in one round trip
# A message this large (a big import's grade events) is decoded in a thread, so that
# the event loop keeps serving meanwhile; batches are always encoded in one.
INLINE_BYTES = 64 * 1024


class RedisBus(EventBus):
    """An EventBus whose coded topics cross workers. `start()` and `stop()` run in
    the lifespan: the subscriber task (one PubSub on a connection of its own) and
    the sender task (through the worker's shared client)."""

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str,
        origin: str,
        codecs: Mapping[str, Codec],
        timeout_s: float,
    ) -> None:
        super().__init__()
        self.origin = origin
        self._client = client
        self._codecs = dict(codecs)
        self._channels = {topic: f"{prefix}events:{topic}" for topic in self._codecs}
        self._topics = {channel: topic for topic, channel in self._channels.items()}
        self._timeout_s = timeout_s
        self._outbox: deque[tuple[str, Any]] = deque(maxlen=OUTBOX)
        self._wake = asyncio.Event()
        self._listener: Redis | None = None
        self._pubsub: PubSub | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        # What fails now ("subscriber", "publisher"): one warning per outage.
        self._failing: set[str] = set()
        # Set while subscribed (Redis confirmed every channel) and answering.
        self.subscribed = asyncio.Event()
        self.received = 0  # other workers' events delivered here
        self.dropped = 0  # items never sent (Redis away, or the outbox full)

    # --- publishing ----------------------------------------------------------------

    def crosses(self, topic: str) -> bool:
        return topic in self._codecs

    @property
    def degraded(self) -> bool:
        return not self.subscribed.is_set() or "publisher" in self._failing

    def publish(self, topic: str, item: Any) -> None:
        super().publish(topic, item)
        if topic in self._codecs and self._tasks and not self._stopping:
            if len(self._outbox) == self._outbox.maxlen:
                self.dropped += 1
            self._outbox.append((topic, item))
            self._wake.set()

    # --- lifespan ------------------------------------------------------------------

    def start(self) -> None:
        if self._tasks:
            return
        self._stopping = False
        # The subscriber's connection: the shared client's settings (timeouts, no
        # retries) plus a health check, since it mostly waits. Made here, not in
        # __init__, so that an app that never starts opens nothing.
        pool = self._client.connection_pool
        self._listener = Redis.from_pool(
            ConnectionPool(
                connection_class=pool.connection_class,
                max_connections=2,
                **{**pool.connection_kwargs, "health_check_interval": HEALTH_CHECK_S},
            )
        )
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._subscriber(), name="bus-subscriber"),
            loop.create_task(self._sender(), name="bus-sender"),
        ]

    async def stop(self) -> None:
        """Cancel both tasks, wait for them, then close what they opened: no
        reconnection can start after this returns."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self.subscribed.clear()
        self._outbox.clear()
        if self._pubsub is not None:
            # The task closed it on its way out; again in case that was cut short.
            with contextlib.suppress(*Errors):
                await self._pubsub.aclose()
            self._pubsub = None
        if self._listener is not None:
            await self._listener.aclose()  # and its pool, in-use connections too
            self._listener = None

    # --- the sender ------------------------------------------------------------------

    async def _sender(self) -> None:
        while True:
            while not self._outbox:
                self._wake.clear()
                await self._wake.wait()
            batch = [
                self._outbox.popleft() for _ in range(min(BATCH, len(self._outbox)))
            ]
            messages = await asyncio.to_thread(self._encode_all, batch)
            try:
                async with asyncio.timeout(self._timeout_s):
                    if len(messages) == 1:
                        await self._client.publish(*messages[0])
                    elif messages:
                        async with self._client.pipeline(transaction=False) as pipe:
                            for channel, data in messages:
                                pipe.publish(channel, data)
                            await pipe.execute()
            except Errors as exc:
                self.dropped += len(messages)
                self._failed("publisher", exc)
            else:
                self._recovered("publisher")

    def _encode_all(self, batch: list[tuple[str, Any]]) -> list[tuple[str, bytes]]:
        messages = []
        for topic, item in batch:
            try:
                data = self._codecs[topic].encode(item)
                payload = orjson.dumps({"o": self.origin, "d": data})
            except Exception:  # a bug in a codec: that item is lost, not the bus
                log.exception("cannot encode an item of topic %r", topic)
                continue
            messages.append((self._channels[topic], payload))
        return messages

    # --- the subscriber --------------------------------------------------------------

    async def _subscriber(self) -> None:
        assert self._listener is not None
        while not self._stopping:
            pubsub = self._pubsub = self._listener.pubsub()
            try:
                await self._subscribe(pubsub)
                self._recovered("subscriber")
                await self._listen(pubsub)
            except Errors as exc:
                self._failed("subscriber", exc)
            except Exception:  # a bug: keep receiving rather than go deaf
                log.exception("event bus subscriber failed; subscribing again")
            finally:
                self.subscribed.clear()
                with contextlib.suppress(*Errors):
                    await pubsub.aclose()
                self._pubsub = None
            await asyncio.sleep(RESUBSCRIBE_S)

    async def _subscribe(self, pubsub: PubSub) -> None:
        """Returns once Redis has confirmed every channel."""
        waiting = set(self._topics)
        async with asyncio.timeout(SILENT_S):
            await pubsub.subscribe(*waiting)
            while waiting:
                message = await pubsub.get_message(timeout=HEALTH_CHECK_S)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    waiting.discard(_text(message["channel"]))
                else:
                    await self._handle(message)
        self.subscribed.set()

    async def _listen(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        heard = loop.time()
        ping_at = heard + HEALTH_CHECK_S
        while True:
            message = await pubsub.get_message(timeout=HEALTH_CHECK_S)
            now = loop.time()
            if message is not None:
                heard = now
                await self._handle(message)
            if now >= ping_at:
                await pubsub.ping()  # its pong counts as heard
                ping_at = now + HEALTH_CHECK_S
            if now - heard > SILENT_S:
                raise TimeoutError(f"no answer from Redis in {SILENT_S:g} s")

    async def _handle(self, message: dict[str, Any]) -> None:
        if message["type"] != "message":
            return
        topic = self._topics.get(_text(message["channel"]))
        if topic is None:
            return
        data = message["data"]
        try:
            if len(data) > INLINE_BYTES:
                decoded = await asyncio.to_thread(self._decode, topic, data)
            else:
                decoded = self._decode(topic, data)
        except Exception as exc:  # another version's message, or a bug
            log.warning(
                "unreadable event on %s dropped (%s: %s)",
                topic,
                type(exc).__name__,
                exc,
            )
            return
        if decoded is None:
            return  # delivered here when it was published
        self.received += 1
        EventBus.publish(self, topic, decoded[0])  # to this worker's subscribers only

    def _decode(self, topic: str, data: bytes | str) -> tuple[Any] | None:
        """(item,), or None for this worker's own message."""
        envelope = orjson.loads(data)
        if envelope["o"] == self.origin:
            return None
        return (self._codecs[topic].decode(envelope["d"]),)

    # --- one warning per outage --------------------------------------------------

    def _failed(self, side: str, exc: BaseException) -> None:
        if not self._failing:
            log.warning(
                "Redis unreachable (%s: %s): events do not cross workers and the "
                "feeds show this worker alone until it answers again",
                type(exc).__name__,
                exc or "no answer in time",
            )
        self._failing.add(side)

    def _recovered(self, side: str) -> None:
        if side in self._failing:
            self._failing.discard(side)
            if not self._failing:
                log.warning("Redis answers again: events cross workers")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
