"""student/class analytics and atRiskStudents against a reference from seeded rows."""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import datetime
from typing import Any

import pytest
from gql import gql

from tests.conftest import SEEDED_GRADES_PER_STUDENT, SEEDED_STUDENTS
from tests.factories.analytics import (
    ANALYTICS_FIELDS,
    AT_RISK,
    CLASS_ANALYTICS,
    STUDENT_ANALYTICS,
    Data,
    Row,
    approx,
    average,
    letter,
    percentile,
)

AT_RISK_AVERAGE = 65.0
AT_RISK_TREND = -2.0
SUBJECTS = ("Art", "English", "History", "Math", "Science")
EPOCH = datetime(2020, 1, 1)

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

# --- the reference --------------------------------------------------------------------


POINTS = {"A": 4.0, "B": 3.0, "C": 2.0, "D": 1.0, "F": 0.0}


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
    if avg is not None and avg < AT_RISK_AVERAGE:
        found.append(f"average {avg:.1f}% is below {AT_RISK_AVERAGE:g}%")
    if slope is not None and slope < AT_RISK_TREND:
        found.append(f"trend {slope:+.2f} points per month is below {AT_RISK_TREND:g}")
    return found


def student_reference(data: Data, student_id: str) -> dict[str, Any]:
    rows = data.of(student_id)
    avg, slope = average(rows), trend(rows)
    subjects = subject_stats(rows)
    why = reasons(avg, slope)
    return {
        "gradeCount": len(rows),
        "average": avg,
        "letter": letter(avg) if avg is not None else None,
        "gpa": statistics.mean(POINTS[letter(s["average"])] for s in subjects)
        if subjects
        else None,
        "trendPerMonth": slope,
        "percentile": percentile(data, student_id),
        "atRisk": bool(why),
        "riskReasons": why,
        "subjects": subjects,
    }


def class_reference(
    data: Data, level: int | None, subject: str | None
) -> dict[str, Any]:
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
        "top": sorted(averages, key=lambda a: (-a["average"], a["studentId"]))[:5],
        "bottom": sorted(averages, key=lambda a: (a["average"], a["studentId"]))[:5],
    }


# --- seeded data ----------------------------------------------------------------------


def test_reference_covers_the_seeded_data(data):
    assert len(data.levels) == SEEDED_STUDENTS
    assert len(data.grades) == SEEDED_STUDENTS * SEEDED_GRADES_PER_STUDENT
    assert len(set(data.levels.values())) == 12
    # The seed yields students of both kinds, so the at-risk checks check something.
    flags = [student_reference(data, s)["atRisk"] for s in data.levels]
    assert 0 < sum(flags) < len(flags)


@pytest.mark.parametrize(
    "student_id", ["S00001", "S00002", "S00017", "S00060", "S00120"]
)
async def test_student_analytics_matches_reference(seeded_api, data, student_id):
    result = await seeded_api.execute(STUDENT_ANALYTICS, id=student_id)

    assert result["studentAnalytics"] == approx(student_reference(data, student_id))


async def test_every_students_analytics_matches_reference(seeded_api, data):
    seen: dict[str, Any] = {}
    after = None
    while True:
        page = (await seeded_api.execute(STUDENTS_WITH_ANALYTICS, after=after))[
            "students"
        ]
        for edge in page["edges"]:
            seen[edge["node"]["studentId"]] = edge["node"]["analytics"]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]

    assert sorted(seen) == sorted(data.levels)
    for student_id, actual in seen.items():
        assert actual == approx(student_reference(data, student_id)), student_id


async def test_student_analytics_of_unknown_student_is_null(seeded_api):
    result = await seeded_api.execute(STUDENT_ANALYTICS, id="S99999")

    assert result == {"studentAnalytics": None}


async def test_class_analytics_without_filter_matches_reference(seeded_api, data):
    result = await seeded_api.execute(CLASS_ANALYTICS)

    expected = class_reference(data, None, None)
    assert expected["studentCount"] == SEEDED_STUDENTS
    assert result["classAnalytics"] == approx(expected)


async def test_class_analytics_per_grade_level_matches_reference(seeded_api, data):
    for level in range(1, 13):
        result = await seeded_api.execute(CLASS_ANALYTICS, level=level)

        assert result["classAnalytics"] == approx(class_reference(data, level, None)), (
            level
        )


async def test_class_analytics_per_subject_matches_reference(seeded_api, data):
    for subject in SUBJECTS:
        result = await seeded_api.execute(CLASS_ANALYTICS, subject=subject)

        assert result["classAnalytics"] == approx(class_reference(data, None, subject))


async def test_class_analytics_per_level_and_subject_matches_reference(
    seeded_api, data
):
    for level in (1, 4, 7, 12):
        for subject in SUBJECTS:
            result = await seeded_api.execute(
                CLASS_ANALYTICS, level=level, subject=subject
            )

            expected = class_reference(data, level, subject)
            assert result["classAnalytics"] == approx(expected), (level, subject)


async def read_at_risk(
    api: Any, level: int | None, first: int
) -> tuple[list[str], int, int]:
    """Every page of atRiskStudents: the ids, the totalCount and the page count."""
    ids: list[str] = []
    totals: set[int] = set()
    pages = 0
    after = None
    while True:
        page = (await api.execute(AT_RISK, level=level, first=first, after=after))[
            "atRiskStudents"
        ]
        pages += 1
        totals.add(page["totalCount"])
        ids += [edge["node"]["studentId"] for edge in page["edges"]]
        assert all(edge["node"]["analytics"]["atRisk"] for edge in page["edges"])
        if not page["pageInfo"]["hasNextPage"]:
            break
        assert len(page["edges"]) == first
        after = page["pageInfo"]["endCursor"]
    assert len(totals) == 1
    return ids, totals.pop(), pages


async def test_at_risk_students_are_exactly_the_reference_set(seeded_api, data):
    expected = sorted(s for s in data.levels if student_reference(data, s)["atRisk"])

    ids, total, pages = await read_at_risk(seeded_api, None, 4)

    assert ids == expected
    assert total == len(expected)
    assert pages == max(1, -(-len(expected) // 4))


async def test_at_risk_students_of_a_grade_level(seeded_api, data):
    for level in range(1, 13):
        expected = sorted(
            s
            for s, lvl in data.levels.items()
            if lvl == level and student_reference(data, s)["atRisk"]
        )

        ids, total, _ = await read_at_risk(seeded_api, level, 2)

        assert (ids, total) == (expected, len(expected)), level
