"""Helpers of the test_analytics_* modules: documents and the plain-Python reference
(plain over `Data`; `Reference` computes the same over data indexed once)."""

from __future__ import annotations

import statistics
from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from gql import gql
from sqlalchemy import select

from db import models
from db.engine import create_database

TOLERANCE = 1e-6
# The API rounds analytics figures to this many decimals (schema/figures.py).
SHOWN_DIGITS = 4
# The app's defaults (AT_RISK_AVERAGE, AT_RISK_TREND).
AT_RISK_AVERAGE = 65.0
AT_RISK_TREND = -2.0
POINTS = {"A": 4.0, "B": 3.0, "C": 2.0, "D": 1.0, "F": 0.0}
# x of the trend: days since this instant (a month is 30 days).
EPOCH = datetime(2020, 1, 1)
# Averages are compared, ordered and shown as their value at this many decimals. The
# percentages are decimals held as binary floats, so two equal decimal averages can
# have exact means that round to neighbouring floats: on the 50,000-student seed,
# S00247 and S17869 both average 80.1 (1602.0 over 20 grades), yet statistics.mean
# gives 80.10000000000001 and 80.1 (872 such neighbours in its level rankings), and
# S23548's 59.95 comes out as 59.949999999999996, which prints as 59.9.
DIGITS = 9

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

STUDENTS_WITH_ANALYTICS = gql(
    """
    query Page($after: String) {
      students(first: 100, after: $after) {
        pageInfo { hasNextPage endCursor }
        edges { node { studentId analytics { ...AnalyticsFields } } }
      }
    }
    """
    + ANALYTICS_FIELDS
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


@dataclass(frozen=True, slots=True)
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


def decimal(value: float) -> float:
    """An average as the decimal it stands for (see DIGITS)."""
    return round(value, DIGITS)


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
    mine = decimal(mine)
    below = sum(1 for a in others if decimal(a) < mine)
    ties = sum(1 for a in others if decimal(a) == mine) - 1
    return 100.0 * (below + 0.5 * ties) / len(others)


def subject_stats(rows: list[Row]) -> list[dict[str, Any]]:
    by_subject: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_subject[row.subject].append(row)
    return [
        {
            "subject": subject,
            "count": len(group),
            "average": statistics.mean(g.percentage for g in group),
            "min": min(g.percentage for g in group),
            "max": max(g.percentage for g in group),
            "latest": max(group, key=lambda g: (g.recorded_at, g.id)).percentage,
        }
        for subject, group in sorted(by_subject.items())
    ]


def trend(rows: list[Row]) -> float | None:
    if len(rows) < 3:
        return None
    days = [(g.recorded_at - EPOCH).total_seconds() / 86400.0 for g in rows]
    slope = statistics.linear_regression(days, [g.percentage for g in rows]).slope
    return slope * 30.0


def reasons(avg: float | None, slope: float | None) -> list[str]:
    found = []
    if avg is not None and decimal(avg) < AT_RISK_AVERAGE:
        found.append(f"average {decimal(avg):.1f}% is below {AT_RISK_AVERAGE:g}%")
    if slope is not None and slope < AT_RISK_TREND:
        found.append(f"trend {slope:+.2f} points per month is below {AT_RISK_TREND:g}")
    return found


def student_figures(rows: list[Row], rank: float | None) -> dict[str, Any]:
    """A student's analytics from their grades and their percentile."""
    avg, slope = average(rows), trend(rows)
    subjects = subject_stats(rows)
    why = reasons(avg, slope)
    return {
        "gradeCount": len(rows),
        "average": avg,
        "letter": letter(decimal(avg)) if avg is not None else None,
        "gpa": statistics.mean(POINTS[letter(decimal(s["average"]))] for s in subjects)
        if subjects
        else None,
        "trendPerMonth": slope,
        "percentile": rank,
        "atRisk": bool(why),
        "riskReasons": why,
        "subjects": subjects,
    }


def student_reference(data: Data, student_id: str) -> dict[str, Any]:
    return student_figures(data.of(student_id), percentile(data, student_id))


def class_reference(
    data: Data, level: int | None, subject: str | None
) -> dict[str, Any]:
    """One pass over the grades, then exact statistics (statistics.mean, median and
    pstdev take about a second on a million percentages)."""
    rows = [
        g
        for g in data.grades
        if (level is None or data.levels[g.student_id] == level)
        and (subject is None or g.subject == subject)
    ]
    values = [g.percentage for g in rows]
    letters = {k: 0 for k in "abcdf"}
    buckets = [0] * 10
    for value in values:
        letters[letter(value).lower()] += 1
        buckets[min(int(value // 10), 9)] += 1
    by_student: dict[str, list[float]] = defaultdict(list)
    for g in rows:
        by_student[g.student_id].append(g.percentage)
    averages = [
        {"studentId": s, "name": data.names[s], "average": statistics.mean(v)}
        for s, v in by_student.items()
    ]
    return {
        "studentCount": len(by_student),
        "gradeCount": len(values),
        "mean": statistics.mean(values) if values else None,
        "median": statistics.median(values) if values else None,
        "stdDev": statistics.pstdev(values) if values else None,
        "min": min(values, default=None),
        "max": max(values, default=None),
        "letters": letters,
        "histogram": [
            {"from": 10 * i, "to": 10 * (i + 1), "count": buckets[i]} for i in range(10)
        ],
        "subjects": subject_stats(rows),
        "top": sorted(averages, key=lambda a: (-decimal(a["average"]), a["studentId"]))[
            :5
        ],
        "bottom": sorted(
            averages, key=lambda a: (decimal(a["average"]), a["studentId"])
        )[:5],
    }


class Reference:
    """`student_reference` and the at-risk set over data indexed once, for the large
    data set: the grades grouped by student, every average computed once and each
    level's averages sorted once (`Data.of` and `percentile` scan every grade, which
    is quadratic). The same definitions and the same exact arithmetic."""

    def __init__(self, data: Data) -> None:
        self.data = data
        self.rows: dict[str, list[Row]] = {s: [] for s in data.levels}
        for g in data.grades:
            self.rows[g.student_id].append(g)
        self.averages = {
            s: a for s, rows in self.rows.items() if (a := average(rows)) is not None
        }
        by_level: dict[int, list[float]] = defaultdict(list)
        for s, a in self.averages.items():
            by_level[data.levels[s]].append(a)
        self.ranked = {
            level: sorted(decimal(a) for a in values)
            for level, values in by_level.items()
        }

    def percentile(self, student_id: str) -> float | None:
        """`percentile`: the same counts, by bisection of the level's sorted
        averages."""
        mine = self.averages.get(student_id)
        if mine is None:
            return None
        ordered = self.ranked[self.data.levels[student_id]]
        below = bisect_left(ordered, decimal(mine))
        ties = bisect_right(ordered, decimal(mine)) - below - 1
        return 100.0 * (below + 0.5 * ties) / len(ordered)

    def student(self, student_id: str) -> dict[str, Any]:
        return student_figures(self.rows[student_id], self.percentile(student_id))

    @cached_property
    def at_risk(self) -> list[str]:
        """The ids of the students at risk, in id order."""
        return sorted(
            s
            for s, rows in self.rows.items()
            if reasons(self.averages.get(s), trend(rows))
        )

    def classes(self, level: int | None, subject: str | None) -> dict[str, Any]:
        return class_reference(self.data, level, subject)


async def read_data(url: str) -> Data:
    """Every student and grade of a database, read straight through SQL."""
    s, g = models.Student.__table__.c, models.Grade.__table__.c
    database = create_database(url)
    try:
        async with database.sessions() as session:
            students = (
                await session.execute(select(s.student_id, s.name, s.grade_level))
            ).all()
            grades = (
                await session.execute(
                    select(
                        g.id,
                        g.student_id,
                        g.subject,
                        g.score,
                        g.max_score,
                        g.recorded_at,
                    )
                )
            ).all()
    finally:
        await database.dispose()
    return Data(
        names={row.student_id: row.name for row in students},
        levels={row.student_id: row.grade_level for row in students},
        grades=[
            Row(
                row.id,
                row.student_id,
                row.subject,
                100.0 * row.score / row.max_score,
                row.recorded_at,
            )
            for row in grades
        ],
    )


class Shown:
    """A reference figure as the API prints it: rounded to SHOWN_DIGITS decimals.
    The server sums in its own order, up to TOLERANCE away from the reference, so
    a reference that close to a rounding midpoint may print as either neighbour."""

    def __init__(self, expected: float) -> None:
        self.expected = expected
        self.allowed = {
            round(expected + slack, SHOWN_DIGITS) for slack in (-TOLERANCE, TOLERANCE)
        }

    def __eq__(self, actual: object) -> bool:
        return isinstance(actual, float) and actual in self.allowed

    def __repr__(self) -> str:
        return f"{round(self.expected, SHOWN_DIGITS)!r} (shown of {self.expected!r})"


def approx(expected: Any) -> Any:
    """`expected` with every float as the API shows it (`Shown`); nested."""
    if isinstance(expected, float):
        return Shown(expected)
    if isinstance(expected, dict):
        return {k: approx(v) for k, v in expected.items()}
    if isinstance(expected, list):
        return [approx(v) for v in expected]
    return expected
