"""Per-request DataLoaders, backed by the shared cache where values outlive a request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from strawberry.dataloader import DataLoader

from db import analytics, grades, students
from db.analytics import LevelRanking, StudentStats
from db.engine import Database
from db.records import GradeRecord, StudentRecord
from resolvers.cache import MISSING, SharedCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

STUDENTS = "students"
ANALYTICS = "analytics"
RANKINGS = "rankings"
CLASS_ANALYTICS = "class_analytics"
CACHE_NAMES = (STUDENTS, ANALYTICS, RANKINGS, CLASS_ANALYTICS)


@dataclass(frozen=True, slots=True)
class Loaders:
    student_by_id: DataLoader[str, StudentRecord | None]
    grades_by_student_id: DataLoader[tuple[str, str | None], list[GradeRecord]]
    stats_by_student_id: DataLoader[str, StudentStats]
    ranking_by_grade_level: DataLoader[int, LevelRanking]


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


def make_loaders(database: Database, cache: SharedCache) -> Loaders:
    sessions = database.sessions

    async def load_students(keys: list[str]) -> list[StudentRecord | None]:
        async with sessions() as session:  # one short session per batch
            return await students.students_by_student_ids(session, keys)

    async def load_grades(keys: list[tuple[str, str | None]]) -> list[list[GradeRecord]]:
        async with sessions() as session:
            return await grades.grades_by_student_ids(session, keys)

    async def load_stats(keys: list[str]) -> list[StudentStats]:
        async with sessions() as session:
            return await analytics.student_stats_by_student_ids(session, keys)

    async def load_rankings(keys: list[int]) -> list[LevelRanking]:
        async with sessions() as session:
            return await analytics.rankings_by_grade_levels(session, keys)

    return Loaders(
        student_by_id=DataLoader(cached_batch(cache, STUDENTS, load_students)),
        grades_by_student_id=DataLoader(load_grades),
        stats_by_student_id=DataLoader(cached_batch(cache, ANALYTICS, load_stats)),
        ranking_by_grade_level=DataLoader(cached_batch(cache, RANKINGS, load_rankings)),
    )


def invalidate_grades(cache: SharedCache, levels: dict[str, int]) -> None:
    """Grades of these students (student_id -> grade level) changed: exactly what
    depends on them goes; other grade levels stay cached."""
    cache.invalidate(ANALYTICS, list(levels))
    cache.invalidate(RANKINGS, sorted(set(levels.values())))
    touched = {*levels.values(), None}
    cache.invalidate_where(CLASS_ANALYTICS, lambda key: key[0] in touched)


def invalidate_student(
    cache: SharedCache, student_ids: Sequence[str], grade_levels: Sequence[int]
) -> None:
    """A student row changed (or went): its record, analytics and its levels' views."""
    cache.invalidate(STUDENTS, student_ids)
    cache.invalidate(ANALYTICS, student_ids)
    cache.invalidate(RANKINGS, grade_levels)
    levels = set(grade_levels)
    cache.invalidate_where(CLASS_ANALYTICS, lambda key: key[0] in levels or key[0] is None)
