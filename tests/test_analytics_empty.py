"""student/class analytics and atRiskStudents: empty and boundary cases."""

from __future__ import annotations

import pytest

from tests.factories import add_grade, create_student
from tests.factories.analytics import (
    AT_RISK,
    CLASS_ANALYTICS,
    STUDENT_ANALYTICS,
    TOLERANCE,
    approx,
)

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
