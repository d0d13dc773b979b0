"""Compiled query plans answer exactly as graphql-core's general executor does: every
query document of the test suite and of the README, as an admin, a teacher and a
student, on SQLite and PostgreSQL; and what the planned path owes besides the data
(the audit record, the rate charge, the fallback counter, timing)."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import (
    ListTypeNode,
    NamedTypeNode,
    NonNullTypeNode,
    OperationDefinitionNode,
    parse,
)

from tests.factories.audit import records
from tests.factories.plans import (
    APP_SETTINGS,
    VIEWERS,
    Pair,
    comparable,
    fallbacks,
    is_live,
    shape,
    statements,
    suite_queries,
)

QUERIES = suite_queries()
# Variable values by name for the suite's documents (other names by their type).
VARIABLES: dict[str, Any] = {
    "id": "S00017",
    "studentId": "S00017",
    "student": "S00017",
    "level": 9,
    "gradeLevel": 9,
    "first": 5,
    "subject": "Math",
    "last": 3,
}
BY_TYPE: dict[str, Any] = {
    "String": "S00017",
    "ID": "1",
    "Int": 3,
    "Float": 50.0,
    "Boolean": True,
}
README_STUDENTS = """query Students {
  students(first: 5, gradeLevel: 9, orderBy: NAME) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { node { studentId name gradeLevel
        grades(subject: "Math") { subject score percentage recordedAt }
        analytics { average letter gpa trendPerMonth percentile atRisk riskReasons }
    } } } }"""


def variables_for(query: str) -> dict[str, Any] | None:
    document = parse(query)
    values: dict[str, Any] = {}
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        for variable in definition.variable_definitions or ():
            name = variable.variable.name.value
            type_node = variable.type
            while isinstance(type_node, (NonNullTypeNode, ListTypeNode)):
                type_node = type_node.type
            assert isinstance(type_node, NamedTypeNode)
            if name in VARIABLES:
                values[name] = VARIABLES[name]
            elif type_node.name.value in BY_TYPE:
                values[name] = BY_TYPE[type_node.name.value]
    return values or None


@pytest.fixture
async def pair(make_api: Any, seeded_url: str) -> Pair:
    planned = await make_api(seeded_url, **APP_SETTINGS)
    general = await make_api(seeded_url, query_plans=False, **APP_SETTINGS)
    return Pair(planned, general)


def test_the_suite_has_queries_to_compare() -> None:
    assert len(QUERIES) >= 100
    assert any("students(first: 5, gradeLevel: 9, orderBy: NAME)" in q for q in QUERIES)


async def test_every_suite_query_answers_identically(pair: Pair) -> None:
    """Data, errors (messages, paths, locations, codes), status and extensions: the
    same from both paths for every document, viewer and backend. A plan may run
    fewer statements, never more."""
    planned = {viewer: 0 for viewer in VIEWERS}
    for viewer, headers in VIEWERS.items():
        for query in QUERIES:
            variables = variables_for(query)
            before = await fallbacks(pair.planned)
            (status_p, body_p), (status_g, body_g) = await pair.both(
                query, variables, headers
            )
            where = f"{viewer}: {query!r} {variables}"
            assert status_p == status_g, where
            if is_live(query):
                assert shape(comparable(body_p)) == shape(comparable(body_g)), where
            else:
                assert comparable(body_p) == comparable(body_g), where
            assert statements(body_p) <= statements(body_g), where
            after = await fallbacks(pair.planned)
            # An answer without errors was planned, or was not plannable at all:
            # it never fell back at run time.
            assert after.get("runtime", 0) == before.get("runtime", 0) or body_g.get(
                "errors"
            ), where
            if after == before:
                planned[viewer] += 1
    # Most of the suite's queries are planned; the rest are introspection, invalid
    # documents, refusals and errors the general path words.
    print(f"planned of {len(QUERIES)}: {planned}")
    assert planned["admin"] >= len(QUERIES) // 2


async def test_the_readme_queries_are_planned(pair: Pair) -> None:
    queries = [q for q in QUERIES if "query Students" in q or "query Class" in q]
    queries.append(
        '{ student(studentId: "S00001") { name analytics { average letter gpa } } }'
    )
    assert len(queries) >= 3
    for query in queries:
        before = await fallbacks(pair.planned)
        (_, body_p), (_, body_g) = await pair.both(query, None, VIEWERS["admin"])
        assert "errors" not in body_p, body_p
        assert comparable(body_p) == comparable(body_g)
        assert await fallbacks(pair.planned) == before, query


async def test_fallbacks_are_counted_by_reason(pair: Pair) -> None:
    admin = VIEWERS["admin"]
    before = await fallbacks(pair.planned)
    await pair.both("{ __schema { queryType { name } } }", None, admin)
    await pair.both(
        "{ students(first: 1) @include(if: true) { totalCount } }", None, admin
    )
    await pair.both(
        '{ student(studentId: "S00001") { name } }', None, VIEWERS["student"]
    )
    await pair.both("{ students(first: 0) { totalCount } }", None, admin)
    after = await fallbacks(pair.planned)
    grew = {r: after.get(r, 0) - before.get(r, 0) for r in after}
    assert grew.get("introspection") == 1
    assert grew.get("directives") == 1
    # A student asking for someone else: FORBIDDEN, which the general path words.
    # first: 0 is refused by the resolver: also answered by the general path.
    assert grew.get("runtime") == 2


async def test_a_planned_read_is_audited_and_charged_once(pair: Pair) -> None:
    for name, api in (("planned", pair.planned), ("general", pair.general)):
        request_id = f"plans-audit-{name}"
        response = await api.http.post(
            "/graphql",
            json={"query": README_STUDENTS},
            headers={**VIEWERS["admin"], "X-Request-ID": request_id},
        )
        body = response.json()
        returned = sorted(
            edge["node"]["studentId"] for edge in body["data"]["students"]["edges"]
        )
        assert len(returned) == 5
        assert await records(api, request_id) == [
            ("user:admin-1", "admin", "Students", "read", returned)
        ]
    # A run-time fallback (FORBIDDEN for a student asking for someone else) is
    # charged once, as the general path charges it.
    student = VIEWERS["student"]
    query = '{ student(studentId: "S00001") { name grades { subject score } } }'
    first = await pair.both(query, None, student)
    second = await pair.both(query, None, student)
    for (_, before), (_, after) in zip(first, second, strict=True):
        rate_before = before["extensions"]["rateLimit"]
        rate_after = after["extensions"]["rateLimit"]
        assert before["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        cost = rate_after["cost"]
        assert cost >= 20
        # One charge (the bucket refills a point or so in between), not two.
        spent = rate_before["remaining"] - rate_after["remaining"]
        assert cost - 2 <= spent <= cost


async def test_plan_steps_are_timed_once_per_level(pair: Pair) -> None:
    await pair.planned.http.post(
        "/graphql", json={"query": README_STUDENTS}, headers=VIEWERS["admin"]
    )
    registry = pair.planned.app.state.monitor.registry
    windows = registry.resolvers
    assert windows["Query.students"].count == 1
    assert windows["Student.grades"].count == 1  # 5 students, one step
    assert windows["Student.analytics"].count == 1
    assert windows["StudentAnalytics.percentile"].count == 1
