"""studentAnalytics, classAnalytics and atRiskStudents against a plain Python reference
computed from every row of the seeded database, plus the empty and boundary cases."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from gql import gql
from sqlalchemy import select

from db import models
from db.engine import create_database
from tests.conftest import SEEDED_GRADES_PER_STUDENT, SEEDED_STUDENTS
from tests.factories import add_grade, create_student

TOLERANCE = 1e-6
AT_RISK_AVERAGE = 65.0
AT_RISK_TREND = -2.0
SUBJECTS = ("Art", "English", "History", "Math", "Science")
EPOCH = datetime(2020, 1, 1)

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


# --- the reference --------------------------------------------------------------------


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


def approx(expected: Any) -> Any:
    """`expected` with every float compared to TOLERANCE (pytest.approx is flat)."""
    if isinstance(expected, float):
        return pytest.approx(expected, abs=TOLERANCE)
    if isinstance(expected, dict):
        return {k: approx(v) for k, v in expected.items()}
    if isinstance(expected, list):
        return [approx(v) for v in expected]
    return expected


@pytest.fixture(scope="session")
async def data(seeded_url: str) -> Data:
    """Every student and grade of the seeded database, read straight through SQL."""
    s, g = models.Student.__table__.c, models.Grade.__table__.c
    database = create_database(seeded_url)
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


# --- empty and boundary cases (a fresh database) --------------------------------------

EMPTY_CLASS = {
    "studentCount": 0,
    "gradeCount": 0,
    "mean": None,
    "median": None,
    "stdDev": None,
    "min": None,
    "max": None,
    "letters": {"a": 0, "b": 0, "c": 0, "d": 0, "f": 0},
    "histogram": [{"from": 10 * i, "to": 10 * (i + 1), "count": 0} for i in range(10)],
    "subjects": [],
    "top": [],
    "bottom": [],
}


async def test_student_without_grades_has_null_analytics(api):
    student = await create_student(api)

    result = await api.execute(STUDENT_ANALYTICS, id=student["studentId"])

    assert result["studentAnalytics"] == {
        "gradeCount": 0,
        "average": None,
        "letter": None,
        "gpa": None,
        "trendPerMonth": None,
        "percentile": None,
        "atRisk": False,
        "riskReasons": [],
        "subjects": [],
    }


async def test_fewer_than_three_grades_have_no_trend(api):
    student = await create_student(api)
    sid = student["studentId"]
    await add_grade(api, sid, score=50.0, recordedAt="2025-10-01T09:00:00Z")
    await add_grade(api, sid, score=90.0, recordedAt="2025-11-01T09:00:00Z")

    result = (await api.execute(STUDENT_ANALYTICS, id=sid))["studentAnalytics"]

    assert result["gradeCount"] == 2
    assert result["trendPerMonth"] is None
    assert result["average"] == pytest.approx(70.0, abs=TOLERANCE)
    assert result["percentile"] == 0.0
    assert result["riskReasons"] == []


async def test_three_grades_have_a_trend_in_points_per_30_days(api):
    student = await create_student(api)
    sid = student["studentId"]
    # 10 points lower every 15 days: -20 points per 30 days.
    for day, score in (("01", 90.0), ("16", 80.0), ("31", 70.0)):
        await add_grade(api, sid, score=score, recordedAt=f"2025-10-{day}T09:00:00Z")

    result = (await api.execute(STUDENT_ANALYTICS, id=sid))["studentAnalytics"]

    assert result["trendPerMonth"] == pytest.approx(-20.0, abs=TOLERANCE)
    assert result["atRisk"] is True
    assert result["riskReasons"] == ["trend -20.00 points per month is below -2"]


async def test_grades_at_one_instant_have_no_trend(api):
    student = await create_student(api)
    for score in (50.0, 70.0, 90.0):
        await add_grade(api, student["studentId"], score=score)

    result = (await api.execute(STUDENT_ANALYTICS, id=student["studentId"]))[
        "studentAnalytics"
    ]

    assert (result["gradeCount"], result["trendPerMonth"]) == (3, None)
    assert (result["atRisk"], result["riskReasons"]) == (False, [])


async def test_class_analytics_over_an_empty_database(api):
    result = await api.execute(CLASS_ANALYTICS)

    assert result["classAnalytics"] == EMPTY_CLASS


async def test_class_analytics_over_an_empty_selection(api):
    student = await create_student(api, gradeLevel=7)
    await add_grade(api, student["studentId"], subject="Math")

    for level, subject in ((3, None), (None, "Art"), (7, "Art"), (3, "Math")):
        result = await api.execute(CLASS_ANALYTICS, level=level, subject=subject)

        assert result["classAnalytics"] == EMPTY_CLASS, (level, subject)


async def test_histogram_and_letters_at_their_bounds(api):
    student = await create_student(api)
    scores = (0.0, 9.9, 10.0, 59.9, 60.0, 69.9, 70.0, 79.9, 80.0, 89.9, 90.0, 100.0)
    for score in scores:
        await add_grade(api, student["studentId"], score=score)
    # 45 of 50 is 90%: percentages, not raw scores, are counted.
    await add_grade(api, student["studentId"], score=45.0, maxScore=50.0)

    result = (await api.execute(CLASS_ANALYTICS))["classAnalytics"]

    assert result["letters"] == {"a": 3, "b": 2, "c": 2, "d": 2, "f": 4}
    assert [b["count"] for b in result["histogram"]] == [2, 1, 0, 0, 0, 1, 2, 2, 2, 3]
    assert result["max"] == 100.0


async def test_std_dev_of_identical_grades_is_zero(api):
    student = await create_student(api)
    for _ in range(7):
        await add_grade(api, student["studentId"], score=87.3)

    result = (await api.execute(CLASS_ANALYTICS))["classAnalytics"]

    assert result["stdDev"] == pytest.approx(0.0, abs=TOLERANCE)
    assert result["median"] == pytest.approx(87.3, abs=TOLERANCE)


async def test_average_on_a_letter_bound_gets_that_letter(api):
    # The exact mean is 90; summed newest first (as the aggregate reads them) the
    # floating-point sum lands an ulp below 360.
    student = await create_student(api)
    for day, score in (("04", 93.2), ("03", 98.0), ("02", 76.1), ("01", 92.7)):
        await add_grade(
            api,
            student["studentId"],
            score=score,
            recordedAt=f"2025-10-{day}T09:00:00Z",
        )

    result = (await api.execute(STUDENT_ANALYTICS, id=student["studentId"]))[
        "studentAnalytics"
    ]

    assert result["average"] == pytest.approx(90.0, abs=TOLERANCE)
    assert (result["letter"], result["gpa"]) == ("A", 4.0)


async def test_percentile_is_mid_rank_within_the_grade_level(api):
    a = await create_student(api, gradeLevel=5)
    b = await create_student(api, gradeLevel=5)
    c = await create_student(api, gradeLevel=5)
    await create_student(api, gradeLevel=5)  # no grades: not ranked
    other = await create_student(api, gradeLevel=6)
    for student, score in ((a, 80.0), (b, 80.0), (c, 90.0), (other, 10.0)):
        await add_grade(api, student["studentId"], score=score)

    percentiles = [
        (await api.execute(STUDENT_ANALYTICS, id=s["studentId"]))["studentAnalytics"][
            "percentile"
        ]
        for s in (a, b, c, other)
    ]

    assert percentiles == approx([100 * 0.5 / 3, 100 * 0.5 / 3, 100 * 2 / 3, 0.0])


async def test_subject_stats_take_the_most_recent_grade_as_latest(api):
    student = await create_student(api)
    sid = student["studentId"]
    await add_grade(
        api, sid, subject="Math", score=70.0, recordedAt="2025-10-05T09:00:00Z"
    )
    await add_grade(
        api, sid, subject="Math", score=90.0, recordedAt="2025-10-01T09:00:00Z"
    )
    await add_grade(
        api, sid, subject="Art", score=60.0, recordedAt="2025-09-01T09:00:00Z"
    )

    result = (await api.execute(STUDENT_ANALYTICS, id=sid))["studentAnalytics"]

    assert result["subjects"] == [
        {
            "subject": "Art",
            "count": 1,
            "average": 60.0,
            "min": 60.0,
            "max": 60.0,
            "latest": 60.0,
        },
        {
            "subject": "Math",
            "count": 2,
            "average": 80.0,
            "min": 70.0,
            "max": 90.0,
            "latest": 70.0,
        },
    ]
    # GPA: Art 60 is D (1.0), Math 80 is B (3.0).
    assert result["gpa"] == 2.0


async def test_equal_averages_tie_in_the_percentile(api):
    # Both means are exactly 90; summed in these orders, one lands an ulp below.
    a = await create_student(api, gradeLevel=4)
    b = await create_student(api, gradeLevel=4)
    for student, scores in (
        (a, (93.2, 98.0, 76.1, 92.7)),
        (b, (93.2, 98.0, 92.7, 76.1)),
    ):
        for score in scores:
            await add_grade(api, student["studentId"], score=score)

    percentiles = [
        (await api.execute(STUDENT_ANALYTICS, id=s["studentId"]))["studentAnalytics"][
            "percentile"
        ]
        for s in (a, b)
    ]

    assert percentiles == [25.0, 25.0]


async def test_average_exactly_on_the_at_risk_bound_is_not_at_risk(api):
    # The exact mean is 65 (not below 65); summed newest first it lands an ulp below.
    student = await create_student(api, gradeLevel=2)
    sid = student["studentId"]
    for day, score in (("04", 82.6), ("03", 80.3), ("02", 89.2), ("01", 7.9)):
        await add_grade(api, sid, score=score, recordedAt=f"2025-10-{day}T09:00:00Z")

    analytics = (await api.execute(STUDENT_ANALYTICS, id=sid))["studentAnalytics"]
    at_risk = (await api.execute(AT_RISK, level=None, first=10, after=None))[
        "atRiskStudents"
    ]

    assert analytics["average"] == pytest.approx(65.0, abs=TOLERANCE)
    assert (analytics["atRisk"], analytics["riskReasons"]) == (False, [])
    assert (at_risk["totalCount"], at_risk["edges"]) == (0, [])
