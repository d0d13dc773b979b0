"""The event bus: the monitor publishes, each subscriber reads its own bounded queue.

A slow subscriber loses its oldest events (for streams where only the latest matters)
and never slows the publisher or the other subscribers. This one stays in the
process; monitoring/bus_redis.py carries some topics between workers."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Codec:
    """How a topic's items cross workers: to a JSON-ready value and back."""

    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


class Sequencer(Protocol):
    """Puts a topic's items in order before this worker's subscribers get them, from
    whichever worker they come: `deliver` each item (or a part of it) when its turn
    has come. It must be quick and must not raise."""

    def arrive(self, item: Any, deliver: Callable[[Any], None]) -> None: ...


class Subscription:
    def __init__(self, bus: EventBus, topic: str, maxsize: int) -> None:
        self._bus = bus
        self.topic = topic
        # Each item with when it arrived (time.perf_counter()).
        self._items: deque[tuple[Any, float]] = deque(maxlen=maxsize)
        self._ready = asyncio.Event()
        self.dropped = 0
        self.closed = False
        # Called once, when the first item is dropped: for a reader that must not
        # wait until it reads again to learn it fell behind.
        self.on_overflow: Callable[[], None] | None = None
        # Called at every item dropped (the subscription signals count them).
        self.on_drop: Callable[[], None] | None = None

    def put(self, item: Any, at: float | None = None) -> None:
        """`at`: when it was published (time.perf_counter()), now when not given."""
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop()
            if self.dropped == 1 and self.on_overflow is not None:
                self.on_overflow()
        self._items.append((item, time.perf_counter() if at is None else at))
        self._ready.set()

    def __len__(self) -> int:
        """Items waiting."""
        return len(self._items)

    def drain(self) -> list[Any]:
        """Everything waiting, oldest first, without waiting for more."""
        items = [item for item, _ in self._items]
        self._items.clear()
        return items

    async def get(self) -> Any:
        return (await self.get_timed())[0]

    async def get_timed(self) -> tuple[Any, float]:
        """The next item and when it arrived (time.perf_counter())."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._bus._remove(self)

    async def __aiter__(self) -> AsyncIterator[Any]:
        try:
            while True:
                yield await self.get()
        finally:
            self.close()


class Listener(Subscription):
    """Hands each item to `receive` as it is published, instead of queueing it:
    for a consumer inside the process that must see every item when it arrives."""

    def __init__(
        self, bus: EventBus, topic: str, receive: Callable[[Any], None]
    ) -> None:
        super().__init__(bus, topic, 1)
        self._receive = receive

    def put(self, item: Any, at: float | None = None) -> None:
        self._receive(item)


class EventBus:
    """In-process publish/subscribe: this worker is the whole cluster."""

    def __init__(self) -> None:
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._sequencers: dict[str, Sequencer] = {}

    def subscribe(self, topic: str, maxsize: int = 16) -> Subscription:
        subscription = Subscription(self, topic, maxsize)
        self._subscriptions.setdefault(topic, set()).add(subscription)
        return subscription

    def listen(self, topic: str, receive: Callable[[Any], None]) -> Listener:
        """`receive(item)` for each item published on `topic`, in the publisher's
        call (it must be quick and must not raise)."""
        listener = Listener(self, topic, receive)
        self._subscriptions.setdefault(topic, set()).add(listener)
        return listener

    def _remove(self, subscription: Subscription) -> None:
        self._subscriptions.get(subscription.topic, set()).discard(subscription)

    def sequence(self, topic: str, sequencer: Sequencer) -> None:
        """Every item of `topic`, published here or arriving from another worker,
        passes through `sequencer` on its way to this worker's subscribers."""
        self._sequencers[topic] = sequencer

    def sequencer(self, topic: str) -> Sequencer | None:
        return self._sequencers.get(topic)

    def publish(self, topic: str, item: Any) -> None:
        self._arrive(topic, item)

    def _arrive(self, topic: str, item: Any) -> None:
        sequencer = self._sequencers.get(topic)
        if sequencer is None:
            self._deliver(topic, item)
        else:
            sequencer.arrive(item, partial(self._deliver, topic))

    def _deliver(self, topic: str, item: Any) -> None:
        # One clock read per publication, not one per subscriber.
        at = time.perf_counter()
        for subscription in list(self._subscriptions.get(topic, ())):
            subscription.put(item, at)

    def subscribers(self, topic: str) -> int:
        return len(self._subscriptions.get(topic, ()))

    def crosses(self, topic: str) -> bool:
        """Whether `topic` reaches the other workers' subscribers too."""
        return False

    @property
    def degraded(self) -> bool:
        """True while a bus shared by workers cannot reach the others."""
        return False

    def start(self) -> None:
        """Nothing to run in process (the lifespan starts and stops every bus)."""

    async def stop(self) -> None:
        return None
