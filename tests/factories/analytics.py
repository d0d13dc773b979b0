"""Helpers of the test_analytics_* modules: documents and the reference."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from gql import gql

TOLERANCE = 1e-6

ANALYTICS_FIELDS = """
fragment AnalyticsFields on StudentAnalytics {
  gradeCount average letter gpa trendPerMonth percentile atRisk riskReasons
  subjects { subject count average min max latest }
}
"""

STUDENT_ANALYTICS = gql(
    """
    query One($id: String!) { studentAnalytics(studentId: $id) { ...AnalyticsFields } }
    """
    + ANALYTICS_FIELDS
)

CLASS_ANALYTICS = gql(
    """
    query Class($level: Int, $subject: String) {
      classAnalytics(gradeLevel: $level, subject: $subject) {
        studentCount gradeCount mean median stdDev min max
        letters { a b c d f }
        histogram { from to count }
        subjects { subject count average min max latest }
        top { studentId name average }
        bottom { studentId name average }
      }
    }
    """
)

AT_RISK = gql(
    """
    query AtRisk($level: Int, $first: Int!, $after: String) {
      atRiskStudents(gradeLevel: $level, first: $first, after: $after) {
        totalCount
        pageInfo { hasNextPage endCursor }
        edges { node { studentId analytics { atRisk } } }
      }
    }
    """
)


@dataclass(frozen=True)
class Row:
    id: int
    student_id: str
    subject: str
    percentage: float
    recorded_at: datetime


@dataclass(frozen=True)
class Data:
    names: dict[str, str]
    levels: dict[str, int]
    grades: list[Row]

    def of(self, student_id: str) -> list[Row]:
        return [g for g in self.grades if g.student_id == student_id]


def letter(value: float) -> str:
    for name, bound in (("A", 90), ("B", 80), ("C", 70), ("D", 60)):
        if value >= bound:
            return name
    return "F"


def average(rows: list[Row]) -> float | None:
    return statistics.mean(g.percentage for g in rows) if rows else None


def percentile(data: Data, student_id: str) -> float | None:
    mine = average(data.of(student_id))
    if mine is None:
        return None
    level = data.levels[student_id]
    others = [
        a
        for s in data.levels
        if data.levels[s] == level and (a := average(data.of(s))) is not None
    ]
    below = sum(1 for a in others if a < mine)
    ties = sum(1 for a in others if a == mine) - 1
    return 100.0 * (below + 0.5 * ties) / len(others)


def approx(expected: Any) -> Any:
    """`expected` with every float compared to TOLERANCE (pytest.approx is flat)."""
    if isinstance(expected, float):
        return pytest.approx(expected, abs=TOLERANCE)
    if isinstance(expected, dict):
        return {k: approx(v) for k, v in expected.items()}
    if isinstance(expected, list):
        return [approx(v) for v in expected]
    return expected
