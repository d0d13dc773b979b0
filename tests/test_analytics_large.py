"""The analytics on a district's data (issue 11): LARGE_STUDENTS x
LARGE_GRADES_PER_STUDENT seeded once per backend, against the plain-Python reference
over the same rows, indexed once."""

from __future__ import annotations

import random
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Any

import pytest

from resolvers.pagination import encode_cursor
from tests.conftest import LARGE_GRADES_PER_STUDENT, LARGE_STUDENTS, Api
from tests.factories.analytics import (
    AT_RISK,
    CLASS_ANALYTICS,
    STUDENT_ANALYTICS,
    STUDENTS_WITH_ANALYTICS,
    Data,
    Reference,
    approx,
    class_reference,
    read_data,
    student_reference,
)

pytestmark = pytest.mark.slow

PICKED_STUDENTS = 40
AT_RISK_PAGES = 3
PAGE = 100
DEEP_AFTER = "S30000"
# Averages that end in 5 at the second decimal (63.95, 49.35 and 62.95), whose sums
# the server holds an ulp low on both backends, so that its risk reason prints
# 63.9, 49.3 and 62.9: rounded neither half up nor half to even.
MIDPOINT_STUDENTS = ("S05689", "S34793", "S42313")


@pytest.fixture(scope="session")
async def reference(large_url: str) -> Reference:
    """Every row of the large database, read once per backend, indexed once."""
    return Reference(await read_data(large_url))


@pytest.fixture
async def large_api(make_api: Any, large_url: str) -> Api:
    api: Api = await make_api(large_url)
    return api


def picked_students(reference: Reference) -> list[str]:
    """PICKED_STUDENTS ids drawn with a fixed seed, round the grade levels in turn."""
    rng = random.Random(7)
    by_level: dict[int, list[str]] = {}
    for student_id, level in sorted(reference.data.levels.items()):
        by_level.setdefault(level, []).append(student_id)
    levels = sorted(by_level)
    share, extra = divmod(PICKED_STUDENTS, len(levels))
    picked: list[str] = []
    for i, level in enumerate(levels):
        picked += rng.sample(by_level[level], share + (1 if i < extra else 0))
    return picked


def test_reference_covers_the_large_data(reference):
    data = reference.data
    assert len(data.levels) == LARGE_STUDENTS
    assert len(data.grades) == LARGE_STUDENTS * LARGE_GRADES_PER_STUDENT
    assert len(reference.ranked) == 12
    assert sum(len(r) for r in reference.ranked.values()) == LARGE_STUDENTS
    # Students of both kinds, so that the at-risk checks check something.
    assert PAGE * AT_RISK_PAGES < len(reference.at_risk) < LARGE_STUDENTS


def test_indexed_reference_equals_the_plain_one(data: Data):
    """On the seeded data, where the plain reference is quick enough: the indexed
    form gives the same figures, to the bit."""
    indexed = Reference(data)

    for student_id in data.levels:
        assert indexed.student(student_id) == student_reference(data, student_id)
    assert indexed.at_risk == sorted(
        s for s in data.levels if student_reference(data, s)["atRisk"]
    )
    assert indexed.classes(7, "Art") == class_reference(data, 7, "Art")


@pytest.mark.parametrize(
    ("level", "subject"), [(None, None), (9, None), (None, "Math"), (9, "Math")]
)
async def test_class_analytics_matches_reference(large_api, reference, level, subject):
    result = await large_api.execute(CLASS_ANALYTICS, level=level, subject=subject)

    expected = reference.classes(level, subject)
    assert expected["gradeCount"] > 0
    assert result["classAnalytics"] == approx(expected)


async def test_at_risk_students_first_pages_match_reference(large_api, reference):
    ids: list[str] = []
    totals: set[int] = set()
    after = None
    for _ in range(AT_RISK_PAGES):
        page = (await large_api.execute(AT_RISK, first=PAGE, after=after))[
            "atRiskStudents"
        ]
        totals.add(page["totalCount"])
        ids += [edge["node"]["studentId"] for edge in page["edges"]]
        assert all(edge["node"]["analytics"]["atRisk"] for edge in page["edges"])
        assert page["pageInfo"]["hasNextPage"] is True
        after = page["pageInfo"]["endCursor"]

    assert totals == {len(reference.at_risk)}
    assert ids == reference.at_risk[: PAGE * AT_RISK_PAGES]


async def test_student_analytics_across_levels_match_reference(large_api, reference):
    picked = picked_students(reference)
    assert len(set(picked)) == PICKED_STUDENTS
    assert {reference.data.levels[s] for s in picked} == set(reference.ranked)

    for student_id in picked:
        result = await large_api.execute(STUDENT_ANALYTICS, id=student_id)

        expected = reference.student(student_id)
        assert result["studentAnalytics"] == approx(expected), student_id


async def test_a_deep_students_page_with_analytics_matches_reference(
    large_api, reference
):
    # The students list's own cursor for DEEP_AFTER in id order (walking there
    # would take 300 pages).
    after = encode_cursor("s:student_id:a", DEEP_AFTER, DEEP_AFTER)

    page = (await large_api.execute(STUDENTS_WITH_ANALYTICS, after=after))["students"]

    first = int(DEEP_AFTER[1:]) + 1
    expected_ids = [f"S{n:05d}" for n in range(first, first + PAGE)]
    assert [edge["node"]["studentId"] for edge in page["edges"]] == expected_ids
    assert page["pageInfo"]["hasNextPage"] is True
    for edge in page["edges"]:
        student_id = edge["node"]["studentId"]
        expected = reference.student(student_id)
        assert edge["node"]["analytics"] == approx(expected), student_id


@pytest.mark.parametrize("student_id", MIDPOINT_STUDENTS)
def test_reference_prints_a_midpoint_average_rounded(reference, student_id):
    rows = reference.rows[student_id]
    exact = sum(Decimal(repr(g.percentage)) for g in rows) / len(rows)
    assert exact.as_tuple().exponent == -2
    assert exact.as_tuple().digits[-1] == 5
    tenths = {
        exact.quantize(Decimal("0.1"), rounding)
        for rounding in (ROUND_HALF_UP, ROUND_HALF_EVEN)
    }

    assert reference.student(student_id)["riskReasons"][0] == (
        f"average {tenths.pop()}% is below 65%"
    )
    assert tenths == set()


@pytest.mark.parametrize("student_id", MIDPOINT_STUDENTS)
async def test_risk_reasons_print_a_midpoint_average_rounded(
    large_api, reference, student_id
):
    result = await large_api.execute(STUDENT_ANALYTICS, id=student_id)

    expected = reference.student(student_id)["riskReasons"]
    assert result["studentAnalytics"]["riskReasons"] == expected
