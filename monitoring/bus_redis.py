"""The event bus shared by the workers of a cluster through Redis pub/sub.

Some topics (those with a codec) cross workers on `<prefix>events:<topic>`: a publish
reaches this worker's subscribers at once and goes to Redis for the others; each
worker ignores what it published itself (its origin id), so every subscriber gets
each event once. Publishing never waits for Redis: a sender task sends in order,
each batch bounded by `timeout_s`. Messages arrive through the worker's one
RedisSubscriber. Redis pub/sub is at-most-once: what is published while a worker is
cut off does not reach it."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from monitoring.bus import Codec, EventBus
from monitoring.subscriber import STOP_S, RedisSubscriber

log = logging.getLogger("gradepulse.bus")
Errors = (RedisError, OSError, TimeoutError)
# Items waiting for the sender; past it the oldest are dropped (Redis is down).
OUTBOX = 4096
BATCH = 256  # items sent in one round trip
# A message this large (a big import's grade events) is decoded in a thread, so that
# the event loop keeps serving meanwhile; batches are always encoded in one.
INLINE_BYTES = 64 * 1024


class RedisBus(EventBus):
    """An EventBus whose coded topics cross workers: it listens on `subscriber`
    (which the lifespan starts and stops) and sends through the worker's shared
    client from a sender task (`start()` and `stop()` in the lifespan)."""

    def __init__(
        self,
        client: Redis,
        subscriber: RedisSubscriber,
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
        self._sending: asyncio.Task[None] | None = None
        self._stopping = False
        # What fails now ("subscriber", "publisher"): one warning per outage.
        self._failing: set[str] = set()
        # Set while subscribed (Redis confirmed every channel) and answering.
        self.subscribed = asyncio.Event()
        self.received = 0  # other workers' events delivered here
        self.dropped = 0  # items never sent (Redis away, or the outbox full)
        subscriber.listen(
            self._topics,
            self._handle,
            on_subscribed=self._on_subscribed,
            on_lost=self._on_lost,
        )

    # --- publishing ----------------------------------------------------------------

    def crosses(self, topic: str) -> bool:
        return topic in self._codecs

    @property
    def degraded(self) -> bool:
        return not self.subscribed.is_set() or "publisher" in self._failing

    def publish(self, topic: str, item: Any) -> None:
        super().publish(topic, item)
        if topic in self._codecs and self._sending is not None and not self._stopping:
            if len(self._outbox) == self._outbox.maxlen:
                self.dropped += 1
            self._outbox.append((topic, item))
            self._wake.set()

    # --- lifespan ------------------------------------------------------------------

    def start(self) -> None:
        if self._sending is None:
            self._stopping = False
            self._sending = asyncio.get_running_loop().create_task(
                self._sender(), name="bus-sender"
            )

    async def stop(self) -> None:
        """The sender ends (waited for at most STOP_S; a batch in flight is bounded
        by `timeout_s` anyway) and what it had not sent is dropped."""
        self._stopping = True
        task, self._sending = self._sending, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=STOP_S)
        self._outbox.clear()

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

    async def _on_subscribed(self) -> None:
        self._recovered("subscriber")
        self.subscribed.set()

    def _on_lost(self, exc: BaseException | None) -> None:
        self.subscribed.clear()
        if exc is not None:
            self._failed("subscriber", exc)

    async def _handle(self, channel: str, data: bytes) -> None:
        topic = self._topics[channel]
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
        self._arrive(topic, decoded[0])  # to this worker's subscribers only

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
