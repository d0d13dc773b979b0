"""Query limits before and after parsing: size, tokens, depth, aliases, fragments."""

from __future__ import annotations

import time
from typing import Any

import pytest
from graphql import (
    get_introspection_query,
)

from server.limits import nesting_depth
from tests.factories import (
    post,
    refused,
)
from tests.factories.limits import DEEP_GRADES, fragment_bomb

# The HTTP and WebSocket layers: the same on either backend (conftest.py).
pytestmark = pytest.mark.sqlite_only

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
