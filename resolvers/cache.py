"""The shared cross-request cache: named TTL caches with hit/miss counts and invalidation."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from cachetools import TTLCache

MISSING: Any = object()


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0

    @property
    def hit_rate(self) -> float | None:
        """Percentage from 0 to 100, or None before the first lookup."""
        total = self.hits + self.misses
        return 100.0 * self.hits / total if total else None


class SharedCache(Protocol):
    """What loaders need of the cross-request layer; Redis can implement it later."""

    def get(self, name: str, key: Hashable) -> Any: ...
    def generation(self) -> int: ...
    def put(self, name: str, key: Hashable, value: Any, generation: int) -> None: ...
    def invalidate(self, name: str, keys: Iterable[Hashable]) -> None: ...
    def invalidate_where(self, name: str, predicate: Callable[[Any], bool]) -> None: ...
    def stats(self) -> dict[str, CacheStats]: ...


class InvalidationBus(Protocol):
    """Carries an invalidation to the other workers: its kind and JSON-ready arguments,
    which they apply to their own caches (resolvers.loaders.apply_invalidation)."""

    async def publish(self, kind: str, args: dict[str, Any]) -> None: ...


class LocalOnly:
    """One worker: there is nobody to tell."""

    async def publish(self, kind: str, args: dict[str, Any]) -> None:
        return None


LOCAL_ONLY = LocalOnly()


class LocalCache:
    """In-process implementation over cachetools, one TTLCache per name."""

    def __init__(
        self,
        names: Iterable[str],
        *,
        maxsize: int,
        ttl: float,
        timer: Callable[[], float] | None = None,
    ) -> None:
        extra = {"timer": timer} if timer else {}
        self._caches: dict[str, TTLCache[Hashable, Any]] = {
            name: TTLCache(maxsize=max(maxsize, 0), ttl=ttl, **extra) for name in names
        }
        self._stats = {name: CacheStats() for name in self._caches}
        self._generation = 0
        self._lock = threading.Lock()

    def get(self, name: str, key: Hashable) -> Any:
        value = self._caches[name].get(key, MISSING)
        stats = self._stats[name]
        if value is MISSING:
            stats.misses += 1
        else:
            stats.hits += 1
        return value

    def generation(self) -> int:
        return self._generation

    def put(self, name: str, key: Hashable, value: Any, generation: int) -> None:
        # A value loaded before an invalidation may be stale: drop it rather than store.
        cache = self._caches[name]
        if generation != self._generation or cache.maxsize == 0:
            return
        cache[key] = value

    def invalidate(self, name: str, keys: Iterable[Hashable]) -> None:
        with self._lock:
            self._generation += 1
            cache = self._caches[name]
            for key in keys:
                cache.pop(key, None)

    def invalidate_where(self, name: str, predicate: Callable[[Any], bool]) -> None:
        with self._lock:
            self._generation += 1
            cache = self._caches[name]
            for key in [key for key in list(cache.keys()) if predicate(key)]:
                cache.pop(key, None)

    def clear(self) -> None:
        """Drop every entry (invalidations may have been missed)."""
        with self._lock:
            self._generation += 1
            for cache in self._caches.values():
                cache.clear()

    def keys(self, name: str) -> list[Hashable]:
        return list(self._caches[name].keys())

    def stats(self) -> dict[str, CacheStats]:
        return dict(self._stats)
