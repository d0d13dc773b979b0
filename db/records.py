"""Plain read records: hot paths map SQL rows once into these, never ORM instances.

Not frozen: a frozen dataclass costs five times as much to build, and thousands are
built per request. Treat them as read-only; the shared cache hands out the same ones.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class StudentRecord:
    id: int
    student_id: str
    name: str
    email: str
    grade_level: int
    created_at: datetime


@dataclass(slots=True)
class GradeRecord:
    id: int
    student_id: str
    subject: str
    score: float
    max_score: float
    recorded_at: datetime

    @property
    def grade_id(self) -> int:
        """The grade's number, as the API names it (Grade.gradeId)."""
        return self.id

    @property
    def percentage(self) -> float:
        return percentage(self.score, self.max_score)


def percentage(score: float, max_score: float) -> float:
    """The one definition of a percentage: 100 * score / max_score."""
    return (100.0 * score) / max_score


def chunks(rows: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most `size` rows, for executemany in bounded pieces."""
    for start in range(0, len(rows), size):
        yield rows[start : start + size]
