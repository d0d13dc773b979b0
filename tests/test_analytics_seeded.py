"""student/class analytics and atRiskStudents against a reference from seeded rows."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import SEEDED_GRADES_PER_STUDENT, SEEDED_STUDENTS
from tests.factories.analytics import (
    AT_RISK,
    CLASS_ANALYTICS,
    STUDENT_ANALYTICS,
    STUDENTS_WITH_ANALYTICS,
    approx,
    class_reference,
    student_reference,
)

SUBJECTS = ("Art", "English", "History", "Math", "Science")

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
