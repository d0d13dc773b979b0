"""Helpers of the test_limits_* modules: abusive documents."""

from __future__ import annotations

DEEP_GRADES = "{ students { edges { node { grades { score } } } } }"  # depth 5
STUDENTS_WITH_GRADES = (
    "{ students(first: 100) { edges { node { grades { score } } } } }"  # 2201 points
)


def fragment_bomb(levels: int, leaf: str) -> str:
    """Fragment i spreads fragment i+1 twice: the leaf is selected 2**levels times."""
    fragments = [
        f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(levels)
    ]
    fragments.append(f"fragment F{levels} on Query {{ {leaf} }}")
    return "query Bomb { ...F0 } " + " ".join(fragments)
