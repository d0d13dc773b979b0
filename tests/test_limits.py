"""Query limits through the real app: each abusive document is refused with its code,
limit and measured value before any resolver runs, and the server keeps serving."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest
from graphql import (
    GraphQLInterfaceType,
    GraphQLObjectType,
    get_introspection_query,
    get_named_type,
    get_nullable_type,
    is_composite_type,
    is_list_type,
    parse,
)

from monitoring.monitor import METRICS
from resolvers import students
from server import gate as server_gate
from server.build import build_schema
from server.cost import LIST_ESTIMATES, PAGE_ARGUMENTS
from server.limits import QueryLimits, check_shape, measure, nesting_depth
from tests.asgi_ws import AsgiWebSocket
from tests.factories import (
    ROOT,
    TEST_JWT_SECRET,
    bearer_header,
    cost_of,
    jwt_token,
    post,
    refusal,
    refused,
    wait_until,
    ws_init,
    ws_start,
)

DEEP_GRADES = "{ students { edges { node { grades { score } } } } }"  # depth 5
STUDENTS_WITH_GRADES = (
    "{ students(first: 100) { edges { node { grades { score } } } } }"  # 2201 points
)
README_QUERY = (
    "query Students { students(first: 5, gradeLevel: 9, orderBy: NAME) { totalCount "
    "pageInfo { hasNextPage endCursor } edges { node { studentId name gradeLevel "
    'grades(subject: "Math") { subject score percentage recordedAt } '
    "analytics { average letter gpa trendPerMonth percentile atRisk riskReasons } "
    "} } } }"
)


def fragment_bomb(levels: int, leaf: str) -> str:
    """Fragment i spreads fragment i+1 twice: the leaf is selected 2**levels times."""
    fragments = [
        f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(levels)
    ]
    fragments.append(f"fragment F{levels} on Query {{ {leaf} }}")
    return "query Bomb { ...F0 } " + " ".join(fragments)


# --- before parsing -----------------------------------------------------------------


async def test_document_over_max_chars_is_refused(make_api, seeded_url):
    api = await make_api(seeded_url, max_document_chars=100)
    query = "{ students(first: 1) { totalCount } }" + " " * 64  # 101 characters

    extensions = await refused(api, query)

    assert extensions == {"code": "DOCUMENT_TOO_LARGE", "limit": 100, "actual": 101}
    body = (await post(api, "{ students(first: 1) { totalCount } }")).json()
    assert body["data"] == {"students": {"totalCount": 120}}


async def test_deep_brackets_are_refused_before_parsing(
    make_api, seeded_url, monkeypatch
):
    api = await make_api(seeded_url, max_document_chars=300_000)
    depth = 100_000
    parsed: list[str] = []

    def no_parse(source: Any, **options: Any) -> Any:
        parsed.append(str(source)[:20])
        raise AssertionError("the parser must not see this document")

    monkeypatch.setattr("server.gate.parse", no_parse)
    monkeypatch.setattr("strawberry.schema.schema.parse", no_parse)
    started = time.perf_counter()

    extensions = await refused(api, "{" * depth + "}" * depth)

    assert time.perf_counter() - started < 2.0
    assert extensions == {"code": "QUERY_TOO_DEEP", "limit": 100, "actual": depth}
    assert parsed == []


async def test_nesting_at_the_limit_is_parsed(make_api, seeded_url):
    api = await make_api(seeded_url, max_nesting=5)
    # 5 levels: { students( ) { edges { node { grades { score } } } } }
    within = "{ students(first: 1) { edges { node { grades { score } } } } }"
    beyond = (
        "{ students(first: 1) { edges { node { analytics { subjects { count } } } } } }"
    )

    body = (await post(api, within)).json()
    extensions = await refused(api, beyond)

    assert "errors" not in body
    assert len(body["data"]["students"]["edges"][0]["node"]["grades"]) == 12
    assert extensions == {"code": "QUERY_TOO_DEEP", "limit": 5, "actual": 6}


def test_nesting_ignores_strings_block_strings_and_comments():
    query = (
        '{ a(x: "{{{{ ((( [[[", y: """ {{{{ \\""" {{{{ """) # {{{{{{{\n'
        "  b { c(z: [[1]]) } }"
    )

    assert nesting_depth(query) == 5  # { b { c( [[
    assert nesting_depth('{ a(x: "unterminated {{{{') == 2
    assert nesting_depth("") == 0


async def test_brackets_in_strings_do_not_count(make_api, seeded_url):
    api = await make_api(seeded_url, max_nesting=4)
    text = "{" * 50
    query = f'{{ students(search: "{text}") {{ totalCount }} }} # {"(" * 50}'

    body = (await post(api, query)).json()

    assert "errors" not in body
    assert body["data"] == {"students": {"totalCount": 0}}


async def test_too_many_tokens_is_refused(make_api, seeded_url):
    api = await make_api(seeded_url, max_tokens=10)
    # { a : __typename b : __typename c : __typename } is 11 tokens; comments and
    # commas are not tokens.
    query = "{ a: __typename, b: __typename, c: __typename } # a comment"

    extensions = await refused(api, query)

    assert extensions == {"code": "TOO_MANY_TOKENS", "limit": 10, "actual": 11}
    body = (await post(api, "{ a: __typename, b: __typename }")).json()
    assert body["data"] == {"a": "Query", "b": "Query"}


# --- after parsing ------------------------------------------------------------------


async def test_query_deeper_than_max_depth_is_refused(make_api, seeded_url):
    api = await make_api(seeded_url, max_depth=4)

    extensions = await refused(api, DEEP_GRADES)

    assert extensions == {"code": "QUERY_TOO_DEEP", "limit": 4, "actual": 5}
    body = (
        await post(api, "{ students(first: 1) { edges { node { name } } } }")
    ).json()
    assert len(body["data"]["students"]["edges"]) == 1


async def test_depth_follows_fragments_and_inline_fragments(make_api, seeded_url):
    api = await make_api(seeded_url, max_depth=4)
    query = """
        query { students { ...Page } }
        fragment Page on StudentConnection {
          edges { node { ... on Student { grades { score } } } }
        }
    """

    extensions = await refused(api, query)

    assert extensions == {"code": "QUERY_TOO_DEEP", "limit": 4, "actual": 5}


async def test_introspection_is_outside_depth(make_api, seeded_url):
    api = await make_api(seeded_url, max_depth=2)
    query = "{ __schema { types { name fields { name type { name kind } } } } }"

    body = (await post(api, query)).json()

    assert "errors" not in body
    assert {"name": "Query"} in [
        {"name": t["name"]} for t in body["data"]["__schema"]["types"]
    ]
    assert body["extensions"]["rateLimit"]["cost"] == 0


async def test_graphiql_introspection_query_passes_every_default_limit(seeded_api):
    response = await post(seeded_api, get_introspection_query())
    body = response.json()

    assert response.status_code == 200
    assert "errors" not in body
    assert body["data"]["__schema"]["queryType"]["name"] == "Query"
    assert body["extensions"]["rateLimit"]["cost"] == 0


async def test_deep_introspection_is_bounded_by_graphql_core(seeded_api):
    query = (
        "{ __schema { types { fields { type { fields { type { fields { name } } } } } "
        "} } }"
    )

    seeded_api.counter.reset()
    body = (await post(seeded_api, query)).json()

    assert seeded_api.counter.statements == []
    assert body.get("data") is None
    [error] = body["errors"]
    assert error["message"] == "Maximum introspection depth exceeded"
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


async def test_aliases_are_counted_through_fragments(make_api, seeded_url):
    api = await make_api(seeded_url, max_aliases=3)
    # F's two aliases count twice: spread directly and through G; and through G
    # the keys a and b are selected again in the operation's selection set.
    query = """
        query { ...F ...G }
        fragment F on Query { a: __typename b: __typename }
        fragment G on Query { ...F }
    """

    extensions = await refused(api, query)

    assert extensions == {"code": "TOO_MANY_ALIASES", "limit": 3, "actual": 4 + 2}
    body = (
        await post(api, "query { ...F } fragment F on Query { a: __typename }")
    ).json()
    assert body["data"] == {"a": "Query"}


async def test_fragment_bomb_is_refused_cheaply(seeded_api):
    query = fragment_bomb(30, "x: __typename")
    started = time.perf_counter()

    extensions = await refused(seeded_api, query)

    assert time.perf_counter() - started < 1.0
    # 2**30 aliases, and each fragment's second spread of the next (2**30 - 1).
    assert extensions == {
        "code": "TOO_MANY_ALIASES",
        "limit": 15,
        "actual": 2**30 + 2**30 - 1,
    }


async def test_too_many_directives_is_refused(make_api, seeded_url):
    api = await make_api(seeded_url, max_directives=2)
    query = """
        query { ...F ...F2 }
        fragment F on Query { __typename @include(if: true) }
        fragment F2 on Query { ...F a: __typename @skip(if: false) }
    """

    extensions = await refused(api, query)

    assert extensions == {"code": "TOO_MANY_DIRECTIVES", "limit": 2, "actual": 3}


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
    schema = build_schema()._schema
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

    assert unpaged == sorted(LIST_ESTIMATES)


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


# --- hardening ----------------------------------------------------------------------


async def test_introspection_off_is_a_validation_error(make_api, seeded_url):
    api = await make_api(seeded_url, introspection_enabled=False)

    api.counter.reset()
    whole = (await post(api, "{ __schema { queryType { name } } }")).json()
    one_type = (await post(api, '{ __type(name: "Student") { name } }')).json()
    plain = (await post(api, "{ __typename }")).json()

    assert api.counter.statements == []
    for body, fields in ((whole, ["__schema", "queryType"]), (one_type, ["__type"])):
        assert body.get("data") is None
        assert [error["message"] for error in body["errors"]] == [
            "GraphQL introspection has been disabled, but the requested query "
            f"contained the field '{field}'."
            for field in fields
        ]
        assert {e["extensions"]["code"] for e in body["errors"]} == {
            "GRAPHQL_VALIDATION_FAILED"
        }
    assert plain["data"] == {"__typename": "Query"}


async def test_field_suggestions_only_outside_production():
    quiet = build_schema(suggestions=False)
    chatty = build_schema()

    for schema, expected in ((quiet, False), (chatty, True)):
        for query in ("{ studnts }", "{ students(frist: 1) { totalCount } }"):
            result = await schema.execute(query)
            assert result.errors is not None
            messages = " ".join(error.message for error in result.errors)
            assert ("Did you mean" in messages) is expected, messages


async def test_development_app_suggests_fields(seeded_api):
    body = (await post(seeded_api, "{ studnts }")).json()

    assert "Did you mean 'students'" in body["errors"][0]["message"]
    assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


async def test_production_app_has_no_suggestions_and_no_introspection(
    make_api, seeded_url
):
    api = await make_api(
        seeded_url, environment="production", jwt_secret=TEST_JWT_SECRET
    )
    headers = bearer_header(jwt_token())

    typo = await api.http.post(
        "/graphql", json={"query": "{ studnts }"}, headers=headers
    )
    intro = await api.http.post(
        "/graphql", json={"query": "{ __schema { types { name } } }"}, headers=headers
    )

    [error] = typo.json()["errors"]
    assert error["message"] == "Cannot query field 'studnts' on type 'Query'."
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert intro.json()["errors"][0]["message"] == (
        "GraphQL introspection has been disabled, but the requested query "
        "contained the field '__schema'."
    )


# --- the server keeps serving -------------------------------------------------------


async def test_abusive_documents_do_not_hold_up_others(
    make_api, seeded_url, monkeypatch
):
    api = await make_api(seeded_url, max_document_chars=300_000)
    abusive = [
        "{" * 100_000 + "}" * 100_000,
        fragment_bomb(25, "x: __typename"),
        "{ " + " ".join(f"a{i}: __typename" for i in range(500)) + " }",
        "{ " + " ".join(f"s{i}: {STUDENTS_WITH_GRADES[2:-2]}" for i in range(3)) + " }",
    ]
    normal = "{ students(first: 3) { edges { node { studentId } } } }"
    measured = asyncio.Event()  # an abusive document has reached the limits
    check_source = server_gate.check_source

    def signalling_check(query: str, limits: Any) -> Any:
        if query in abusive:
            measured.set()
        return check_source(query, limits)

    monkeypatch.setattr(server_gate, "check_source", signalling_check)

    refusals = [asyncio.create_task(post(api, query)) for query in abusive]
    await asyncio.wait_for(measured.wait(), 10)
    started = time.perf_counter()
    answer = await asyncio.wait_for(post(api, normal), 10)
    elapsed = time.perf_counter() - started
    results = await asyncio.wait_for(asyncio.gather(*refusals), 30)

    codes = [r.json()["errors"][0]["extensions"]["code"] for r in results]
    assert codes == [
        "QUERY_TOO_DEEP",
        "TOO_MANY_ALIASES",
        "TOO_MANY_ALIASES",
        "QUERY_TOO_COSTLY",
    ]
    assert answer.json()["data"] == {
        "students": {
            "edges": [
                {"node": {"studentId": "S00001"}},
                {"node": {"studentId": "S00002"}},
                {"node": {"studentId": "S00003"}},
            ]
        }
    }
    # Answered while the abusive ones were in flight, as fast as alone (~20 ms);
    # the bound leaves room for a busy 2-core CI.
    assert elapsed < 2.0, elapsed


# --- WebSocket ------------------------------------------------------------------------


async def test_limits_apply_to_operations_over_a_websocket(make_api, seeded_url):
    api = await make_api(seeded_url, max_depth=4)

    async with AsgiWebSocket(api.app) as ws:
        await ws_init(ws)
        api.counter.reset()
        await ws_start(ws, "deep", DEEP_GRADES)
        deep = await ws.receive_json()
        await ws_start(ws, "nested", "{" * 101 + "}" * 101)
        nested = await ws.receive_json()
        statements = list(api.counter.statements)
        await ws_start(ws, "ok", "{ students(first: 2) { totalCount } }")
        ok = await ws.receive_json()
        assert await ws.receive_json() == {"id": "ok", "type": "complete"}

    assert statements == []
    assert deep["id"] == "deep" and deep["type"] == "error"
    assert refusal({"errors": deep["payload"]}) == {
        "code": "QUERY_TOO_DEEP",
        "limit": 4,
        "actual": 5,
    }
    assert nested["type"] == "error"
    assert refusal({"errors": nested["payload"]}) == {
        "code": "QUERY_TOO_DEEP",
        "limit": 100,
        "actual": 101,
    }
    assert ok["type"] == "next"
    assert ok["payload"]["data"] == {"students": {"totalCount": 120}}
    assert ok["payload"]["extensions"]["rateLimit"]["cost"] == 1


async def test_refused_subscription_over_the_legacy_protocol(make_api, seeded_url):
    api = await make_api(seeded_url, max_nesting=10)

    async with AsgiWebSocket(api.app, subprotocol="graphql-ws") as ws:
        await ws_init(ws)
        deep = "subscription { metrics " + "{" * 11 + "}" * 11 + " }"
        await ws_start(ws, "1", deep, legacy=True)
        error = await ws.receive_json()

    assert error["id"] == "1" and error["type"] == "error"
    payload = error["payload"]
    errors = payload if isinstance(payload, list) else [payload]
    assert refusal({"errors": errors}) == {
        "code": "QUERY_TOO_DEEP",
        "limit": 10,
        "actual": 12,
    }


async def test_websocket_queries_stop_at_the_operation_timeout(
    make_api, seeded_url, monkeypatch
):
    api = await make_api(seeded_url, operation_timeout_s=0.2)
    list_students = students.list_students

    async def slow(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(5)
        return await list_students(*args, **kwargs)

    monkeypatch.setattr(students, "list_students", slow)

    async with AsgiWebSocket(api.app) as ws:
        await ws_init(ws)
        started = time.perf_counter()
        await ws_start(ws, "slow", "{ students(first: 1) { totalCount } }")
        error = await ws.receive_json()
        elapsed = time.perf_counter() - started
        # The connection goes on serving.
        await ws_start(ws, "fast", "{ __typename }")
        fast = await ws.receive_json()

    assert error["id"] == "slow" and error["type"] == "error"
    extensions = refusal({"errors": error["payload"]})
    assert extensions.pop("actual") >= 0.2
    assert extensions == {"code": "OPERATION_TIMEOUT", "limit": 0.2}
    assert elapsed < 2.0
    assert fast["payload"]["data"] == {"__typename": "Query"}


async def test_subscriptions_outlive_the_operation_timeout(make_api, seeded_url):
    api = await make_api(seeded_url, operation_timeout_s=0.2)

    async with AsgiWebSocket(api.app) as ws:
        await ws_init(ws)
        await ws_start(ws, "m", "subscription { metrics(intervalMs: 1000) { at } }")
        bus = api.app.state.monitor.bus
        await wait_until(lambda: bus.subscribers(METRICS) == 1)  # before any tick
        await asyncio.sleep(0.5)  # past the operation timeout
        api.app.state.monitor.tick()
        event = await ws.receive_json()

    assert event["id"] == "m" and event["type"] == "next"
    assert event["payload"]["data"]["metrics"]["at"].endswith("Z")
