"""A worker's one Redis pub/sub subscription: every channel of every part that listens
(the event bus's topics, the cache invalidations) on one connection of its own,
checked, renewed after a loss, and stopped within a bound."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

log = logging.getLogger("gradepulse.subscriber")
Errors = (RedisError, OSError, TimeoutError)
# The connection is checked this often (redis-py's health_check_interval and a PING
# of our own, whose answer we see); silent for SILENT_S, it counts as dead.
HEALTH_CHECK_S = 1.0
SILENT_S = 3 * HEALTH_CHECK_S
# A turn of the listening loop that took this long means the event loop itself
# stalled (a long collection, a blocking call): that silence says nothing of Redis.
STALLED_S = 2 * HEALTH_CHECK_S
# Between two attempts to subscribe while Redis does not answer.
RESUBSCRIBE_S = 0.25
# stop() waits this long for the subscriber to end before it closes its connection.
STOP_S = 2.0

# What a listener receives: the channel and the message's data.
Handler = Callable[[str, bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Listener:
    """One part's channels. `on_subscribed` runs once Redis has confirmed every
    channel (at start and after each loss; before `subscribed` is set); `on_lost`
    when the subscription ends, with the Redis failure (None: a stop or a bug)."""

    channels: tuple[str, ...]
    handler: Handler
    on_subscribed: Callable[[], Awaitable[None]] | None = None
    on_lost: Callable[[BaseException | None], None] | None = None


class RedisSubscriber:
    """One PubSub on a connection pool of its own (the shared client's settings plus
    a health check, since it mostly waits). `listen(...)` before `start()`; `start()`
    and `stop()` run in the lifespan. A failure never raises: the subscription is
    renewed every RESUBSCRIBE_S until Redis answers, and each listener hears of the
    loss and of the return (and logs it its own way)."""

    def __init__(self, client: Redis, *, name: str | None = None) -> None:
        pool = client.connection_pool
        kwargs: dict[str, Any] = {
            **pool.connection_kwargs,
            "health_check_interval": HEALTH_CHECK_S,
        }
        if name is not None:
            kwargs["client_name"] = name  # CLIENT LIST shows whose connection it is
        # Connects on first use (start), not here.
        self.client = Redis.from_pool(
            ConnectionPool(connection_class=pool.connection_class, **kwargs)
        )
        self._listeners: list[Listener] = []
        self._handlers: dict[str, Handler] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # Set while subscribed (Redis confirmed every channel) and answering.
        self.subscribed = asyncio.Event()
        self.subscriptions = 0  # times it subscribed (1 unless Redis was lost)

    def listen(
        self,
        channels: Iterable[str],
        handler: Handler,
        *,
        on_subscribed: Callable[[], Awaitable[None]] | None = None,
        on_lost: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        listener = Listener(tuple(channels), handler, on_subscribed, on_lost)
        for channel in listener.channels:
            if channel in self._handlers:
                raise ValueError(f"{channel!r} has a listener already")
            self._handlers[channel] = handler
        self._listeners.append(listener)

    @property
    def channels(self) -> list[str]:
        return list(self._handlers)

    def start(self) -> None:
        if self._task is None and self._handlers:
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="redis-subscriber"
            )

    async def stop(self) -> None:
        """The subscriber ends (waited for at most STOP_S) and every connection it
        opened is closed: they all come from its own pool, which closes them
        whether they are in use or not. No reconnection starts after this."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=STOP_S)
        self.subscribed.clear()
        await self.client.aclose()  # and its pool, in-use connections too

    async def _run(self) -> None:
        while not self._stopping:
            pubsub = self.client.pubsub()
            lost: BaseException | None = None
            try:
                await self._subscribe(pubsub)
                await self._listen(pubsub)
            except Errors as exc:
                lost = exc
            except Exception:  # a bug: keep receiving rather than go deaf
                log.exception("Redis subscriber failed; subscribing again")
            finally:
                self.subscribed.clear()
                for listener in self._listeners:
                    if listener.on_lost is not None:
                        listener.on_lost(lost)
                with contextlib.suppress(*Errors):
                    await pubsub.aclose()
            await asyncio.sleep(RESUBSCRIBE_S)

    async def _subscribe(self, pubsub: PubSub) -> None:
        """Returns once Redis has confirmed every channel and each listener has
        been told (a listener that may have missed messages acts on it first)."""
        waiting = set(self._handlers)
        async with asyncio.timeout(SILENT_S):
            await pubsub.subscribe(*waiting)
            while waiting:
                message = await pubsub.get_message(timeout=HEALTH_CHECK_S)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    waiting.discard(_text(message["channel"]))
                else:
                    await self._dispatch(message)
        self.subscriptions += 1
        for listener in self._listeners:
            if listener.on_subscribed is not None:
                await listener.on_subscribed()
        self.subscribed.set()

    async def _listen(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        heard = turn = loop.time()
        ping_at = heard + HEALTH_CHECK_S
        while True:
            message = await pubsub.get_message(timeout=HEALTH_CHECK_S)
            now = loop.time()
            # After a stalled turn the socket has not been read for a while: what
            # Redis sent meanwhile is still to come, so start counting afresh.
            if message is not None or now - turn > STALLED_S:
                heard = now
            turn = now
            if message is not None:
                await self._dispatch(message)
            if now >= ping_at:
                await pubsub.ping()  # its pong counts as heard
                ping_at = now + HEALTH_CHECK_S
            if now - heard > SILENT_S:
                raise TimeoutError(f"no answer from Redis in {SILENT_S:g} s")

    async def _dispatch(self, message: dict[str, Any]) -> None:
        if message["type"] != "message":
            return
        channel = _text(message["channel"])
        handler = self._handlers.get(channel)
        if handler is not None:
            await handler(channel, message["data"])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
