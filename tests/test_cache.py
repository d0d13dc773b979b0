"""The shared cache: hits and misses per cache, and writes that invalidate exactly what
they change (never a stale read, nothing of other grade levels)."""

from __future__ import annotations

from typing import Any

import pytest
from gql import gql

from resolvers.cache import MISSING, LocalCache
from tests.factories import add_grade, create_student

NAMES = ("students", "analytics", "rankings", "class_analytics")

STUDENT_ANALYTICS = gql(
    """
    query One($id: String!) {
      studentAnalytics(studentId: $id) { gradeCount average percentile }
    }
    """
)

STUDENT = gql(
    """
    query Student($id: String!) {
      student(studentId: $id) { studentId gradeLevel analytics { average percentile } }
    }
    """
)

STUDENTS = gql(
    """
    query { students(first: 10) { edges { node { studentId analytics { average } } } } }
    """
)

CLASS_ANALYTICS = gql(
    """
    query Class($level: Int, $subject: String) {
      classAnalytics(gradeLevel: $level, subject: $subject) {
        studentCount gradeCount mean top { studentId name }
      }
    }
    """
)

STUDENT_UPDATE = gql(
    """
    mutation Update($id: String!, $input: StudentUpdateInput!) {
      studentUpdate(studentId: $id, input: $input) {
        __typename
        ... on StudentUpdateSuccess { student { studentId name gradeLevel } }
      }
    }
    """
)

STUDENT_DELETE = gql(
    """
    mutation Delete($id: String!) {
      studentDelete(studentId: $id, cascade: true) {
        __typename
        ... on StudentDeleteSuccess { student { studentId } }
      }
    }
    """
)

GRADE_UPDATE = gql(
    """
    mutation Update($id: ID!, $input: GradeUpdateInput!) {
      gradeUpdate(id: $id, input: $input) { __typename }
    }
    """
)

GRADE_DELETE = gql("mutation Delete($id: ID!) { gradeDelete(id: $id) { __typename } }")

GRADES_ADD = gql(
    """
    mutation Add($input: [GradeAddInput!]!) {
      gradesAdd(input: $input) { __typename ... on GradesAddSuccess { inserted } }
    }
    """
)


def counts(api: Any) -> dict[str, tuple[int, int]]:
    return {name: (s.hits, s.misses) for name, s in api.services.cache.stats().items()}


def keys(api: Any) -> dict[str, set[Any]]:
    return {name: set(api.services.cache.keys(name)) for name in NAMES}


# --- hits and misses ------------------------------------------------------------------


async def test_hits_and_misses_are_counted_per_cache(api):
    a = (await create_student(api, gradeLevel=3))["studentId"]
    b = (await create_student(api, gradeLevel=5))["studentId"]
    c = (await create_student(api, gradeLevel=3))["studentId"]  # no grades
    await add_grade(api, a, score=80.0)
    await add_grade(api, b, score=60.0)
    assert counts(api) == {name: (0, 0) for name in NAMES}  # writes read no cache

    await api.execute(STUDENT_ANALYTICS, id=a)
    assert counts(api) == {
        "students": (0, 1),
        "analytics": (0, 1),
        "rankings": (0, 1),
        "class_analytics": (0, 0),
    }
    await api.execute(STUDENT_ANALYTICS, id=a)
    assert counts(api) == {
        "students": (1, 1),
        "analytics": (1, 1),
        "rankings": (1, 1),
        "class_analytics": (0, 0),
    }
    await api.execute(CLASS_ANALYTICS, level=3)
    await api.execute(CLASS_ANALYTICS, level=3)
    await api.execute(CLASS_ANALYTICS, level=3, subject="Math")
    # b's level 5 ranking is a new miss; its record and analytics too
    await api.execute(STUDENT, id=b)
    # the page primes its own records (no lookup); a and b hit, c misses
    await api.execute(STUDENTS)
    # an absent student is not cached: every lookup misses
    await api.execute(STUDENT_ANALYTICS, id="NOBODY")
    await api.execute(STUDENT_ANALYTICS, id="NOBODY")

    assert counts(api) == {
        "students": (1, 4),
        "analytics": (3, 3),
        "rankings": (1, 2),
        "class_analytics": (1, 2),
    }
    assert keys(api) == {
        "students": {a, b},
        "analytics": {a, b, c},
        "rankings": {3, 5},
        "class_analytics": {(3, None), (3, "Math")},
    }
    assert api.services.cache.stats()["class_analytics"].hit_rate == pytest.approx(
        100 / 3
    )


def test_hit_rate_is_none_before_the_first_lookup():
    cache = LocalCache(NAMES, maxsize=10, ttl=60)

    assert cache.stats()["students"].hit_rate is None


def test_a_value_loaded_before_an_invalidation_is_not_stored():
    cache = LocalCache(NAMES, maxsize=10, ttl=60)
    generation = cache.generation()  # a loader starts reading...
    cache.invalidate("analytics", ["S1"])  # ...a write lands meanwhile

    cache.put("analytics", "S1", "stale", generation)

    assert cache.keys("analytics") == []


def test_entries_expire_after_the_ttl():
    now = [0.0]
    cache = LocalCache(NAMES, maxsize=10, ttl=60, timer=lambda: now[0])
    cache.put("rankings", 3, "ranking", cache.generation())

    now[0] = 59.0
    assert cache.get("rankings", 3) == "ranking"
    now[0] = 61.0
    assert cache.get("rankings", 3) is MISSING
    assert (cache.stats()["rankings"].hits, cache.stats()["rankings"].misses) == (1, 1)


async def test_cache_size_zero_stores_nothing(make_api, scratch_url):
    api = await make_api(scratch_url, cache_size=0)
    student = await create_student(api)
    await add_grade(api, student["studentId"], score=70.0)

    for _ in range(2):
        result = await api.execute(STUDENT_ANALYTICS, id=student["studentId"])
        assert result["studentAnalytics"]["average"] == 70.0

    assert keys(api) == {name: set() for name in NAMES}
    assert counts(api)["analytics"] == (0, 2)


# --- invalidation ---------------------------------------------------------------------


async def fill(api: Any) -> dict[str, Any]:
    """Level 3: a (Math 80, Art 90) and a2 (Math 60); level 5: b (Math 90).
    Then every view of both levels is read once, so that it is cached."""
    a = (await create_student(api, gradeLevel=3))["studentId"]
    a2 = (await create_student(api, gradeLevel=3))["studentId"]
    b = (await create_student(api, gradeLevel=5))["studentId"]
    grade = await add_grade(api, a, subject="Math", score=80.0)
    await add_grade(api, a, subject="Art", score=90.0)
    await add_grade(api, a2, subject="Math", score=60.0)
    await add_grade(api, b, subject="Math", score=90.0)
    for level, subject in (
        (3, None),
        (5, None),
        (None, None),
        (3, "Math"),
        (5, "Math"),
        (None, "Art"),
    ):
        await api.execute(CLASS_ANALYTICS, level=level, subject=subject)
    for student_id in (a, a2, b):
        await api.execute(STUDENT, id=student_id)
    assert keys(api) == {
        "students": {a, a2, b},
        "analytics": {a, a2, b},
        "rankings": {3, 5},
        "class_analytics": {
            (3, None),
            (5, None),
            (None, None),
            (3, "Math"),
            (5, "Math"),
            (None, "Art"),
        },
    }
    return {"a": a, "a2": a2, "b": b, "grade_id": grade["id"]}


async def analytics_of(api: Any, student_id: str) -> dict[str, Any]:
    result: dict[str, Any] = (await api.execute(STUDENT_ANALYTICS, id=student_id))[
        "studentAnalytics"
    ]
    return result


async def test_grade_add_evicts_exactly_the_students_level(api):
    s = await fill(api)
    before = await analytics_of(api, s["a"])
    assert (before["average"], before["percentile"]) == (85.0, 50.0)

    await add_grade(api, s["a"], subject="Math", score=20.0)

    assert keys(api) == {
        "students": {s["a"], s["a2"], s["b"]},
        "analytics": {s["a2"], s["b"]},
        "rankings": {5},
        "class_analytics": {(5, None), (5, "Math")},
    }


async def test_reads_after_grade_add_return_the_new_values(api):
    s = await fill(api)

    await add_grade(api, s["a"], subject="Math", score=0.0)
    api.counter.reset()
    level5 = await api.execute(CLASS_ANALYTICS, level=5)
    b = await analytics_of(api, s["b"])
    cached_reads = len(api.counter.reads)
    a = await analytics_of(api, s["a"])
    level3 = (await api.execute(CLASS_ANALYTICS, level=3))["classAnalytics"]
    everyone = (await api.execute(CLASS_ANALYTICS))["classAnalytics"]

    assert cached_reads == 0  # level 5 stayed cached
    assert level5["classAnalytics"]["gradeCount"] == 1
    assert b == {"gradeCount": 1, "average": 90.0, "percentile": 0.0}
    # (80 + 90 + 0) / 3: now below a2's 60
    assert a["gradeCount"] == 3
    assert a["average"] == round(170 / 3, 4)  # figures print to 4 places
    assert a["percentile"] == 0.0
    assert (level3["gradeCount"], level3["mean"]) == (4, 57.5)
    assert (everyone["gradeCount"], everyone["mean"]) == (5, 64.0)


async def test_grade_update_and_delete_invalidate_the_students_level(api):
    s = await fill(api)

    result = await api.execute(GRADE_UPDATE, id=s["grade_id"], input={"score": 40.0})
    assert result["gradeUpdate"]["__typename"] == "GradeUpdateSuccess"
    assert keys(api)["class_analytics"] == {(5, None), (5, "Math")}
    assert (await analytics_of(api, s["a"]))["average"] == 65.0  # (40 + 90) / 2

    await api.execute(STUDENT, id=s["a"])
    result = await api.execute(GRADE_DELETE, id=s["grade_id"])
    assert result["gradeDelete"]["__typename"] == "GradeDeleteSuccess"
    assert keys(api)["analytics"] == {s["a2"], s["b"]}
    assert keys(api)["rankings"] == {5}
    assert (await analytics_of(api, s["a"]))["average"] == 90.0


async def test_grades_add_invalidates_every_level_it_touches(api):
    s = await fill(api)
    rows = [
        {"studentId": s["a2"], "subject": "Math", "score": 100.0},
        {"studentId": s["b"], "subject": "Art", "score": 50.0},
    ]

    result = await api.execute(GRADES_ADD, input=rows)

    assert result["gradesAdd"] == {"__typename": "GradesAddSuccess", "inserted": 2}
    assert keys(api) == {
        "students": {s["a"], s["a2"], s["b"]},
        "analytics": {s["a"]},
        "rankings": set(),
        "class_analytics": set(),
    }
    assert (await analytics_of(api, s["a2"]))["average"] == 80.0
    assert (await analytics_of(api, s["b"]))["average"] == 70.0


async def test_student_update_of_grade_level_moves_the_student_between_rankings(api):
    s = await fill(api)
    assert (await analytics_of(api, s["b"]))["percentile"] == 0.0  # alone in level 5

    result = await api.execute(STUDENT_UPDATE, id=s["a"], input={"gradeLevel": 5})

    assert result["studentUpdate"]["student"]["gradeLevel"] == 5
    assert keys(api) == {
        "students": {s["a2"], s["b"]},
        "analytics": {s["a2"], s["b"]},
        "rankings": set(),
        "class_analytics": set(),
    }
    moved = (await api.execute(STUDENT, id=s["a"]))["student"]
    assert moved["gradeLevel"] == 5
    assert moved["analytics"] == {"average": 85.0, "percentile": 0.0}  # below b's 90
    assert (await analytics_of(api, s["b"]))["percentile"] == 50.0
    assert (await analytics_of(api, s["a2"]))["percentile"] == 0.0  # alone in level 3
    level3 = (await api.execute(CLASS_ANALYTICS, level=3))["classAnalytics"]
    level5 = (await api.execute(CLASS_ANALYTICS, level=5))["classAnalytics"]
    assert (level3["studentCount"], level5["studentCount"]) == (1, 2)


async def test_student_update_of_name_shows_in_class_analytics(api):
    s = await fill(api)

    await api.execute(STUDENT_UPDATE, id=s["b"], input={"name": "Renamed Student"})

    assert keys(api) == {
        "students": {s["a"], s["a2"]},
        "analytics": {s["a"], s["a2"]},
        "rankings": {3},
        "class_analytics": {(3, None), (3, "Math")},
    }
    level5 = (await api.execute(CLASS_ANALYTICS, level=5))["classAnalytics"]
    everyone = (await api.execute(CLASS_ANALYTICS))["classAnalytics"]
    assert level5["top"] == [{"studentId": s["b"], "name": "Renamed Student"}]
    assert {"studentId": s["b"], "name": "Renamed Student"} in everyone["top"]


async def test_student_delete_invalidates_the_student_and_their_level(api):
    s = await fill(api)

    result = await api.execute(STUDENT_DELETE, id=s["a"])

    assert result["studentDelete"]["__typename"] == "StudentDeleteSuccess"
    assert keys(api) == {
        "students": {s["a2"], s["b"]},
        "analytics": {s["a2"], s["b"]},
        "rankings": {5},
        "class_analytics": {(5, None), (5, "Math")},
    }
    assert (await api.execute(STUDENT, id=s["a"]))["student"] is None
    assert await api.execute(STUDENT_ANALYTICS, id=s["a"]) == {"studentAnalytics": None}
    assert (await analytics_of(api, s["a2"]))["percentile"] == 0.0
    level3 = (await api.execute(CLASS_ANALYTICS, level=3))["classAnalytics"]
    assert (level3["studentCount"], level3["gradeCount"], level3["mean"]) == (
        1,
        1,
        60.0,
    )


async def test_student_create_is_visible_after_a_null_read(api):
    assert (await api.execute(STUDENT, id="NEW01"))["student"] is None

    await create_student(api, studentId="NEW01", gradeLevel=3)

    student = (await api.execute(STUDENT, id="NEW01"))["student"]
    assert student == {
        "studentId": "NEW01",
        "gradeLevel": 3,
        "analytics": {"average": None, "percentile": None},
    }
