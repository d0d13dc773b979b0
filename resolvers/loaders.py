"""Per-request DataLoaders, backed by the shared cache where values outlive a request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Sequence
from functools import partial
from typing import Any, TypeVar

from strawberry.dataloader import DataLoader

from db import analytics, grades, students
from db.analytics import LevelRanking, StudentStats
from db.engine import Database
from db.records import GradeRecord, StudentRecord
from resolvers.cache import MISSING, InvalidationBus, SharedCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

STUDENTS = "students"
ANALYTICS = "analytics"
RANKINGS = "rankings"
CLASS_ANALYTICS = "class_analytics"
CACHE_NAMES = (STUDENTS, ANALYTICS, RANKINGS, CLASS_ANALYTICS)
# What the other workers are told (InvalidationBus kinds).
GRADES_CHANGED = "grades"
STUDENT_CHANGED = "student"


def cached_batch(
    cache: SharedCache,
    name: str,
    load: Callable[[list[K]], Awaitable[Sequence[V]]],
    *,
    store_none: bool = False,
) -> Callable[[list[K]], Awaitable[list[V]]]:
    """Wrap a batch function so that hits come from `cache` and misses load in one go."""

    async def batch(keys: list[K]) -> list[V]:
        found: dict[K, Any] = {}
        missing: list[K] = []
        for key in keys:
            value = cache.get(name, key)
            if value is MISSING:
                missing.append(key)
            else:
                found[key] = value
        if missing:
            generation = cache.generation()
            for key, value in zip(missing, await load(missing), strict=True):
                found[key] = value
                if value is not None or store_none:
                    cache.put(name, key, value, generation)
        return [found[key] for key in keys]

    return batch


async def _load_students(
    database: Database, keys: list[str]
) -> list[StudentRecord | None]:
    return await students.read_students_by_ids(database.reader, keys)


async def _load_grades(
    database: Database, keys: list[tuple[str, str | None]]
) -> list[list[GradeRecord]]:
    return await grades.grades_by_student_ids(database.reader, keys)


async def _load_stats(database: Database, keys: list[str]) -> list[StudentStats]:
    async with database.reads() as session:
        return await analytics.student_stats_by_student_ids(session, keys)


async def _load_rankings(database: Database, keys: list[int]) -> list[LevelRanking]:
    async with database.reads() as session:
        return await analytics.rankings_by_grade_levels(session, keys)


class Loaders:
    """The DataLoaders of one request (or one subscription event), each built on first
    use: most operations need one or two, and building all of them costs more than
    answering `{ __typename }`."""

    __slots__ = ("_cache", "_database", "_grades", "_rankings", "_stats", "_students")

    def __init__(self, database: Database, cache: SharedCache) -> None:
        self._database = database
        self._cache = cache
        self._students: DataLoader[str, StudentRecord | None] | None = None
        self._grades: DataLoader[tuple[str, str | None], list[GradeRecord]] | None = (
            None
        )
        self._stats: DataLoader[str, StudentStats] | None = None
        self._rankings: DataLoader[int, LevelRanking] | None = None

    @property
    def student_by_id(self) -> DataLoader[str, StudentRecord | None]:
        if self._students is None:
            load = partial(_load_students, self._database)
            self._students = DataLoader(cached_batch(self._cache, STUDENTS, load))
        return self._students

    @property
    def grades_by_student_id(
        self,
    ) -> DataLoader[tuple[str, str | None], list[GradeRecord]]:
        if self._grades is None:
            self._grades = DataLoader(partial(_load_grades, self._database))
        return self._grades

    @property
    def stats_by_student_id(self) -> DataLoader[str, StudentStats]:
        if self._stats is None:
            load = partial(_load_stats, self._database)
            self._stats = DataLoader(cached_batch(self._cache, ANALYTICS, load))
        return self._stats

    @property
    def ranking_by_grade_level(self) -> DataLoader[int, LevelRanking]:
        if self._rankings is None:
            load = partial(_load_rankings, self._database)
            self._rankings = DataLoader(cached_batch(self._cache, RANKINGS, load))
        return self._rankings


def make_loaders(database: Database, cache: SharedCache) -> Loaders:
    return Loaders(database, cache)


async def invalidate_grades(
    cache: SharedCache, bus: InvalidationBus, levels: dict[str, int]
) -> None:
    """Grades of these students (student_id -> grade level) changed: exactly what
    depends on them goes, here and (through `bus`, awaited) on the other workers."""
    _drop_grades(cache, levels)
    await bus.publish(GRADES_CHANGED, {"levels": levels})


async def invalidate_student(
    cache: SharedCache,
    bus: InvalidationBus,
    student_ids: Sequence[str],
    grade_levels: Sequence[int],
) -> None:
    """A student row changed (or went): its record, analytics and its levels' views,
    here and on the other workers."""
    _drop_student(cache, student_ids, grade_levels)
    await bus.publish(
        STUDENT_CHANGED,
        {"student_ids": list(student_ids), "grade_levels": list(grade_levels)},
    )


def apply_invalidation(cache: SharedCache, kind: str, args: dict[str, Any]) -> None:
    """An invalidation another worker published. Raises ValueError (or KeyError) for
    one this worker does not understand (a newer version mid-rollout): the caller
    then clears everything."""
    if kind == GRADES_CHANGED:
        _drop_grades(cache, {str(k): int(v) for k, v in args["levels"].items()})
    elif kind == STUDENT_CHANGED:
        _drop_student(
            cache,
            [str(s) for s in args["student_ids"]],
            [int(level) for level in args["grade_levels"]],
        )
    else:
        raise ValueError(f"unknown invalidation {kind!r}")


def _drop_grades(cache: SharedCache, levels: dict[str, int]) -> None:
    # Other grade levels stay cached.
    cache.invalidate(ANALYTICS, list(levels))
    cache.invalidate(RANKINGS, sorted(set(levels.values())))
    touched = {*levels.values(), None}
    cache.invalidate_where(CLASS_ANALYTICS, lambda key: key[0] in touched)


def _drop_student(
    cache: SharedCache, student_ids: Sequence[str], grade_levels: Sequence[int]
) -> None:
    cache.invalidate(STUDENTS, student_ids)
    cache.invalidate(ANALYTICS, student_ids)
    cache.invalidate(RANKINGS, grade_levels)
    levels = set(grade_levels)
    cache.invalidate_where(
        CLASS_ANALYTICS, lambda key: key[0] in levels or key[0] is None
    )
