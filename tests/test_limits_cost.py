"""Query cost limits, and repeated fields counted as aliases before validation."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from graphql import (
    GraphQLInterfaceType,
    GraphQLObjectType,
    get_named_type,
    get_nullable_type,
    is_composite_type,
    is_list_type,
    parse,
)

from server import gate as server_gate
from server.build import build_schema
from server.cost import LIST_ESTIMATES, PAGE_ARGUMENTS, SIZED_BY
from server.gate import graphql_schema
from server.limits import QueryLimits, check_shape, measure
from tests.factories import (
    ROOT,
    cost_of,
    post,
    refusal,
    refused,
)
from tests.factories.limits import STUDENTS_WITH_GRADES

# The HTTP and WebSocket layers: the same on either backend (conftest.py).
pytestmark = pytest.mark.sqlite_only

README_QUERY = (
    "query Students { students(first: 5, gradeLevel: 9, orderBy: NAME) { totalCount "
    "pageInfo { hasNextPage endCursor } edges { node { studentId name gradeLevel "
    'grades(subject: "Math") { subject score percentage recordedAt } '
    "analytics { average letter gpa trendPerMonth percentile atRisk riskReasons } "
    "} } } }"
)

# --- cost ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "variables", "points"),
    [
        ("{ __typename }", {}, 0),
        ("{ subjects }", {}, 0),  # a list of scalars is free
        # 1 for the connection; per edge 1 + node 1 + 20 estimated grades
        (STUDENTS_WITH_GRADES, {}, 1 + 100 * (1 + 1 + 20)),
        ("{ students { edges { cursor } } }", {}, 1 + 20 * 1),  # first defaults to 20
        ("{ students { totalCount pageInfo { hasNextPage } } }", {}, 1 + 1),
        # pageInfo 1; per edge 1 + node 1 + 20 grades + analytics 1
        (README_QUERY, {}, 1 + 1 + 5 * (1 + 1 + 20 + 1)),
        (
            "query($n: Int!) { students(first: $n) { edges { node { name } } } }",
            {"n": 7},
            1 + 7 * 2,
        ),
        (
            "query($n: Int!) { students(first: $n) { edges { node { name } } } }",
            {"n": 50},
            1 + 50 * 2,
        ),
        (
            "query($n: Int = 3) { students(first: $n) { edges { node { name } } } }",
            {},
            1 + 3 * 2,
        ),
        (
            """{ students(first: 10) { ...Page } }
            fragment Page on StudentConnection { edges { node { ...Subjects } } }
            fragment Subjects on Student { analytics { subjects { subject } } }""",
            {},
            # per edge: 1 + node 1 + analytics 1 + 10 estimated subjects
            1 + 10 * (1 + 1 + 1 + 10),
        ),
        (
            "{ classAnalytics { letters { a } histogram { count } top { name } } }",
            {},
            1 + 1 + 10 + 5,
        ),
        ("{ slowestResolvers(first: 5) { field } alerts(last: 3) { rule } }", {}, 8),
        (
            "{ grades(first: 30) { totalCount edges { node { subject } } } }",
            {},
            1 + 30 * 2,
        ),
    ],
)
async def test_cost_in_points(seeded_api, query, variables, points):
    assert await cost_of(seeded_api, query, **variables) == points


async def test_query_over_max_cost_is_refused(make_api, seeded_url):
    api = await make_api(seeded_url, max_cost=2000)

    extensions = await refused(api, STUDENTS_WITH_GRADES)

    assert extensions == {"code": "QUERY_TOO_COSTLY", "limit": 2000, "actual": 2201}


async def test_cost_follows_variables_on_every_request(make_api, seeded_url):
    api = await make_api(seeded_url, max_cost=2000)
    query = (
        "query Page($n: Int!) { students(first: $n) "
        "{ edges { node { grades { score } } } } }"
    )

    assert await cost_of(api, query, n=10) == 1 + 10 * 22
    extensions = await refused(api, query, {"n": 100})
    assert await cost_of(api, query, n=2) == 1 + 2 * 22

    assert extensions == {"code": "QUERY_TOO_COSTLY", "limit": 2000, "actual": 2201}


async def test_aliased_copies_add_up_over_the_default_max_cost(seeded_api):
    one = "students(first: 100) { edges { node { grades { score } } } }"
    query = "{ " + " ".join(f"s{i}: {one}" for i in range(3)) + " }"

    extensions = await refused(seeded_api, query)

    assert extensions == {"code": "QUERY_TOO_COSTLY", "limit": 5000, "actual": 3 * 2201}


async def test_cost_is_that_of_the_operation_that_runs(make_api, seeded_url):
    api = await make_api(seeded_url, max_cost=100)
    document = f"""
        query Small {{ students(first: 2) {{ edges {{ node {{ name }} }} }} }}
        query Big {STUDENTS_WITH_GRADES}
    """

    small = (await post(api, document, operation_name="Small")).json()
    big = (await post(api, document, operation_name="Big")).json()

    assert small["extensions"]["rateLimit"]["cost"] == 1 + 2 * 2
    assert refusal(big) == {"code": "QUERY_TOO_COSTLY", "limit": 100, "actual": 2201}


def test_every_unpaged_list_of_objects_has_an_estimate():
    """A new list of objects gets a `first` or an explicit estimate, not the default
    (lists directly inside a connection take the connection's `first`)."""
    schema = graphql_schema(build_schema())
    types = [
        kind
        for name, kind in schema.type_map.items()
        if not name.startswith("__")
        and isinstance(kind, GraphQLObjectType | GraphQLInterfaceType)
    ]
    fields = [
        (kind.name, name, field)
        for kind in types
        for name, field in getattr(kind, "fields", {}).items()
    ]
    connections = {
        get_named_type(field.type).name
        for _, _, field in fields
        if any(argument in field.args for argument in PAGE_ARGUMENTS)
    }
    unpaged = sorted(
        f"{type_name}.{name}"
        for type_name, name, field in fields
        if type_name not in connections
        and is_list_type(get_nullable_type(field.type))
        and is_composite_type(get_named_type(field.type))
        and not any(argument in field.args for argument in PAGE_ARGUMENTS)
    )

    assert unpaged == sorted([*LIST_ESTIMATES, *SIZED_BY])


# --- repeated fields count as aliases, before validation ---------------------------


def copies(count: int, selection: str) -> str:
    return "{ " + " ".join([selection] * count) + " }"


async def test_repeated_fields_are_refused_before_validation(seeded_api, monkeypatch):
    validated: list[Any] = []
    validate = server_gate.validate_document

    def recording_validate(*args: Any, **kwargs: Any) -> Any:
        validated.append(args[1])
        return validate(*args, **kwargs)

    monkeypatch.setattr(server_gate, "validate_document", recording_validate)
    query = copies(490, "students{totalCount}")  # 1,962 tokens
    started = time.perf_counter()

    extensions = await refused(seeded_api, query)

    elapsed = time.perf_counter() - started
    assert extensions == {"code": "TOO_MANY_ALIASES", "limit": 15, "actual": 489}
    assert validated == []
    assert elapsed < 0.5, elapsed  # validation alone took ~0.7 s before
    [error] = (await post(seeded_api, query)).json()["errors"]
    assert error["message"] == (
        "the query uses 489 aliases or repeated fields (a field selected again "
        "under the same name in one selection set, a fragment spread again, a "
        "fragment's count each time it is spread); at most 15 are allowed"
    )


@pytest.mark.parametrize(
    ("query", "repeats"),
    [
        # Inline fragments merge with the selection set they are in.
        (copies(40, "... { students { totalCount } }"), 39),
        (copies(20, "... on Query { ... { students { totalCount } } }"), 19),
        # Different fragments that select the same response name.
        (
            "{ "
            + " ".join(f"...F{i}" for i in range(20))
            + " } "
            + " ".join(
                f"fragment F{i} on Query {{ students {{ totalCount }} }}"
                for i in range(20)
            ),
            19,
        ),
        # One fragment spread again and again.
        (
            copies(20, "...F") + " fragment F on Query { students { totalCount } }",
            19,
        ),
        # Inside a nested selection set.
        (
            "{ students { " + " ".join(["totalCount"] * 17) + " } }",
            16,
        ),
    ],
)
async def test_repeats_are_counted_through_fragments(seeded_api, query, repeats):
    extensions = await refused(seeded_api, query)

    assert extensions == {"code": "TOO_MANY_ALIASES", "limit": 15, "actual": repeats}


async def test_fifteen_repeats_pass(seeded_api):
    body = (await post(seeded_api, copies(16, "students { totalCount }"))).json()

    assert body["data"] == {"students": {"totalCount": 120}}


def documents_in_use() -> dict[str, str]:
    """The README's documents and the dashboard's, as clients send them."""
    readme = (ROOT / "README.md").read_text()
    documents = {
        f"README block {i}": block
        for i, block in enumerate(re.findall(r"```graphql\n(.*?)```", readme, re.S))
    }
    script = (ROOT / "static/dashboard/dashboard.js").read_text()
    constants = dict(re.findall(r"const (\w+) = `(.*?)`;", script, re.S))
    for name in (
        "METRICS_SUBSCRIPTION",
        "COSTS_SUBSCRIPTION",
        "ALERTS_SUBSCRIPTION",
        "INITIAL_QUERY",
    ):
        documents[name] = re.sub(
            r"\$\{(\w+)\}", lambda m: constants[m.group(1)], constants[name]
        )
    return documents


def test_documents_in_use_pass_the_default_limits():
    documents = documents_in_use()

    refused_ones = {
        name: error.message
        for name, document in documents.items()
        if (error := check_shape(measure(parse(document)), QueryLimits()))
    }

    assert len(documents) >= 11
    assert refused_ones == {}
