"""The FERPA audit log: one record per response, with exactly its students."""

from __future__ import annotations

from resolvers.context import OperationAudit
from tests.factories import (
    post,
)
from tests.factories.audit import ANONYMOUS, GRADES_OF, answer, records

STUDENTS_WITH_GRADES = (
    "query { students(first: 5) { edges { node { studentId grades { score } } } } }"
)
ONE_ANALYTICS = (
    'query One { student(studentId: "S00007") { name analytics { average } } }'
)

# --- one record per response, with exactly its students -----------------------------


async def test_students_page_with_grades_is_one_record_of_its_five_students(
    seeded_api,
):
    request_id, body = answer(await post(seeded_api, STUDENTS_WITH_GRADES))

    ids = [edge["node"]["studentId"] for edge in body["data"]["students"]["edges"]]
    assert ids == ["S00001", "S00002", "S00003", "S00004", "S00005"]
    assert all(
        len(e["node"]["grades"]) == 12 for e in body["data"]["students"]["edges"]
    )
    assert await records(seeded_api, request_id) == [
        (ANONYMOUS, "admin", "query:students", "read", ids)
    ]


async def test_one_students_analytics_is_recorded_under_the_operation_name(
    seeded_api,
):
    request_id, body = answer(await post(seeded_api, ONE_ANALYTICS))

    assert body["data"]["student"]["analytics"]["average"] is not None
    assert await records(seeded_api, request_id) == [
        (ANONYMOUS, "admin", "One", "read", ["S00007"])
    ]


async def test_grades_by_student_are_recorded(seeded_api):
    request_id, body = answer(await post(seeded_api, GRADES_OF, {"id": "S00003"}))

    nodes = [edge["node"] for edge in body["data"]["grades"]["edges"]]
    assert [node["studentId"] for node in nodes] == ["S00003"] * 3
    assert await records(seeded_api, request_id) == [
        (ANONYMOUS, "admin", "query:grades", "read", ["S00003"])
    ]


async def test_aliased_fields_of_one_response_share_one_sorted_record(seeded_api):
    request_id, body = answer(
        await post(
            seeded_api,
            """{ b: studentAnalytics(studentId: "S00012") { average }
             a: student(studentId: "S00010") { grades { score } }
             c: grades(studentId: "S00010", first: 1) { edges { node { score } } }
             d: atRiskStudents(first: 2) { edges { node { studentId } } } }""",
        )
    )

    at_risk = [e["node"]["studentId"] for e in body["data"]["d"]["edges"]]
    assert len(at_risk) == 2
    expected = sorted({"S00010", "S00012", *at_risk})
    assert await records(seeded_api, request_id) == [
        (
            ANONYMOUS,
            "admin",
            "query:studentAnalytics,student,grades,atRiskStudents",
            "read",
            expected,
        )
    ]


async def test_class_rankings_are_recorded_but_aggregates_are_not(seeded_api):
    aggregates_id, _ = answer(
        await post(
            seeded_api, "{ classAnalytics(gradeLevel: 3) { mean median gradeCount } }"
        )
    )
    ranking_id, body = answer(
        await post(
            seeded_api,
            "{ classAnalytics(gradeLevel: 3) { top { studentId } bottom { studentId } } }",
        )
    )

    named = {
        row["studentId"]
        for part in ("top", "bottom")
        for row in body["data"]["classAnalytics"][part]
    }
    assert len(named) >= 5
    assert await records(seeded_api, aggregates_id) == []
    assert await records(seeded_api, ranking_id) == [
        (ANONYMOUS, "admin", "query:classAnalytics", "read", sorted(named))
    ]


async def test_responses_without_grades_or_analytics_write_no_record(seeded_api):
    directory_id, body = answer(
        await post(
            seeded_api,
            "{ students(first: 5) { edges { node { studentId name email } } } subjects }",
        )
    )
    nobody_id, empty = answer(await post(seeded_api, GRADES_OF, {"id": "NOBODY"}))
    absent_id, absent = answer(
        await post(seeded_api, '{ student(studentId: "NOBODY") { grades { score } } }')
    )

    assert len(body["data"]["students"]["edges"]) == 5
    assert empty["data"]["grades"]["edges"] == []
    assert absent["data"] == {"student": None}
    for request_id in (directory_id, nobody_id, absent_id):
        assert await records(seeded_api, request_id) == []


async def test_audit_inserts_are_not_counted_as_the_operations_statements(
    seeded_api,
):
    seeded_api.counter.reset()
    request_id, body = answer(await post(seeded_api, STUDENTS_WITH_GRADES))

    # The page and its grades: the audit record goes through the log's own engine.
    assert seeded_api.counter.statements == seeded_api.counter.reads
    assert len(seeded_api.counter.reads) == 2
    assert body["extensions"]["cost"]["dbQueries"] == 2
    assert len(await records(seeded_api, request_id)) == 1


async def test_an_operation_on_a_context_that_runs_another_returns_nothing(
    seeded_api, caplog
):
    """One record per context at a time: a second operation on a context whose
    operation still runs could go out unrecorded, so it is withheld instead."""
    context = seeded_api.services.context()
    context.operation = OperationAudit(lambda: "query:students")  # still running

    result = await seeded_api.app.state.schema.execute(
        STUDENTS_WITH_GRADES, context_value=context
    )

    assert result.data is None
    assert [error.extensions["code"] for error in result.errors] == ["DB_UNAVAILABLE"]
    assert "already running one" in caplog.text
    context.operation.running = False  # ended: the next operation records again
    result = await seeded_api.app.state.schema.execute(
        STUDENTS_WITH_GRADES, context_value=context
    )
    assert result.errors is None
    assert len(result.data["students"]["edges"]) == 5


async def test_class_figures_over_fewer_than_five_students_are_recorded(api, school):
    """Level 6 has two students (MINE and PEER): its mean describes each of them,
    as their analytics would. Over five or more, aggregates are not recorded."""
    request_id, body = answer(
        await post(api, "{ classAnalytics(gradeLevel: 6) { studentCount mean } }")
    )

    assert body["data"]["classAnalytics"]["studentCount"] == 2
    assert await records(api, request_id) == [
        (ANONYMOUS, "admin", "query:classAnalytics", "read", ["MINE", "PEER"])
    ]
