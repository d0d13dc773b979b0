"""DataLoaders: a query's SQL statement count depends on its shape, not on its rows,
and the shared cache answers a repeated request."""

from __future__ import annotations

from typing import Any

from gql import gql

STUDENTS_GRADES_ANALYTICS = """
query {
  students(first: %d) { edges { node { grades { score } analytics { average } } } }
}
"""

STUDENTS_PERCENTILE = """
query {
  students(first: %d) {
    edges { node { gradeLevel grades { score } analytics { average percentile } } }
  }
}
"""

STUDENTS_ANALYTICS_ONLY = gql(
    "query { students(first: 100) { edges { node { analytics { average gpa } } } } }"
)

FIVE_STUDENTS = gql(
    """
    query {
      a: student(studentId: "S00001") { name }
      b: student(studentId: "S00002") { name }
      c: student(studentId: "S00003") { name }
      d: student(studentId: "S00004") { name }
      e: student(studentId: "S00005") { name }
    }
    """
)

FIVE_ANALYTICS = gql(
    """
    query {
      a: studentAnalytics(studentId: "S00011") { average percentile }
      b: studentAnalytics(studentId: "S00012") { average percentile }
      c: studentAnalytics(studentId: "S00013") { average percentile }
      d: studentAnalytics(studentId: "S00014") { average percentile }
      e: studentAnalytics(studentId: "S00015") { average percentile }
    }
    """
)

CLASS_ANALYTICS = gql(
    """
    query { classAnalytics(gradeLevel: 3) {
      gradeCount median stdDev letters { a } histogram { count } subjects { latest }
      top { name } bottom { name } } }
    """
)

AT_RISK = """
query {
  atRiskStudents(first: %d) {
    totalCount edges { node { name analytics { atRisk } } }
  }
}
"""


async def reads_of(api: Any, document: Any) -> tuple[list[str], dict[str, Any]]:
    """The read statements one request sends, and its result."""
    api.counter.reset()
    result = await api.execute(document)
    assert api.counter.statements == api.counter.reads  # reads only
    return list(api.counter.reads), result


def sources(statements: list[str]) -> list[str]:
    """What each statement reads first (a table, or "(SELECT" for a subquery), sorted:
    loaders of one level run concurrently, in no fixed order."""
    return sorted(
        " ".join(s.split()).split(" FROM ", 1)[1].split()[0] for s in statements
    )


async def test_students_with_grades_and_analytics_take_three_statements(seeded_api):
    reads, result = await reads_of(seeded_api, gql(STUDENTS_GRADES_ANALYTICS % 100))

    edges = result["students"]["edges"]
    assert len(edges) == 100
    assert all(len(e["node"]["grades"]) == 12 for e in edges)
    # the page, every grade of the page, the analytics summaries: at most 4 (the issue)
    assert sources(reads) == ["grades", "student_subject_stats", "students"]


async def test_statement_count_depends_on_shape_not_rows(make_api, seeded_url):
    counts = []
    for first in (10, 100):
        api = await make_api(seeded_url)  # a cold cache each time
        reads, result = await reads_of(api, gql(STUDENTS_GRADES_ANALYTICS % first))
        assert len(result["students"]["edges"]) == first
        counts.append(len(reads))

    assert counts == [3, 3]


async def test_analytics_are_sql_aggregates_not_grade_rows(seeded_api):
    reads, _ = await reads_of(seeded_api, STUDENTS_ANALYTICS_ONLY)

    # The summaries the writes keep (db.summaries), not the grades summed anew.
    assert sources(reads) == ["student_subject_stats", "students"]
    assert not any(" grades" in statement for statement in reads)


async def test_percentile_over_many_grade_levels_adds_one_statement(
    make_api, seeded_url
):
    counts = []
    for first in (10, 100):
        api = await make_api(seeded_url)
        reads, result = await reads_of(api, gql(STUDENTS_PERCENTILE % first))
        levels = {e["node"]["gradeLevel"] for e in result["students"]["edges"]}
        assert len(levels) >= (7 if first == 10 else 12)
        assert all(
            e["node"]["analytics"]["percentile"] is not None
            for e in result["students"]["edges"]
        )
        counts.append(sources(reads))

    # one more statement: the rankings of every grade level on the page at once
    assert counts == [["grades", "student_subject_stats", "students", "students"]] * 2


async def test_five_aliased_students_take_one_statement(seeded_api):
    reads, result = await reads_of(seeded_api, FIVE_STUDENTS)

    assert [result[k]["name"] is not None for k in "abcde"] == [True] * 5
    assert sources(reads) == ["students"]
    # The five ids as one list: IN (SELECT value FROM json_each(?)) or = ANY ($1).
    statement = reads[0].upper()
    assert "JSON_EACH(?)" in statement or "= ANY ($1" in statement


async def test_five_aliased_student_analytics_are_batched(seeded_api):
    reads, result = await reads_of(seeded_api, FIVE_ANALYTICS)

    assert all(result[k]["percentile"] is not None for k in "abcde")
    # the students, their analytics summaries, the rankings of their levels
    assert sources(reads) == ["student_subject_stats", "students", "students"]


async def test_second_identical_request_hits_the_shared_cache(seeded_api):
    first, result = await reads_of(seeded_api, FIVE_STUDENTS)
    second, again = await reads_of(seeded_api, FIVE_STUDENTS)

    assert (len(first), len(second)) == (1, 0)
    assert again == result


async def test_second_students_request_reads_only_page_and_grades(seeded_api):
    document = gql(STUDENTS_PERCENTILE % 100)
    first, result = await reads_of(seeded_api, document)
    second, again = await reads_of(seeded_api, document)

    # analytics and rankings come from the shared cache; the page and grades do not
    assert (len(first), len(second)) == (4, 2)
    assert sources(second) == ["grades", "students"]
    assert again == result


async def test_class_analytics_takes_four_statements_then_none(seeded_api):
    first, result = await reads_of(seeded_api, CLASS_ANALYTICS)
    second, again = await reads_of(seeded_api, CLASS_ANALYTICS)

    assert (len(first), len(second)) == (4, 0)
    assert again == result


async def test_at_risk_students_statement_count_depends_on_shape(make_api, seeded_url):
    counts = []
    for first in (2, 100):
        api = await make_api(seeded_url)
        reads, result = await reads_of(api, gql(AT_RISK % first))
        page = result["atRiskStudents"]
        assert len(page["edges"]) == min(first, page["totalCount"])
        counts.append(sources(reads))

    # the page of ids, their students, the total count, their analytics
    assert page["totalCount"] > 2
    assert counts == [["(SELECT", "student_subject_stats", "students", "students"]] * 2
