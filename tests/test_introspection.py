"""Introspection is bounded by count (one __schema, ten __type) and takes no
aliases; every query GraphiQL sends passes the default limits."""

from __future__ import annotations

import itertools

import pytest
from graphql import get_introspection_query, parse

from server.limits import QueryLimits, check_shape, measure
from tests.factories import (
    post,
    refused,
)

# The HTTP and WebSocket layers: the same on either backend (conftest.py).
pytestmark = pytest.mark.sqlite_only

INTROSPECTION = get_introspection_query()
# The part of GraphiQL's query inside `__schema`, and the fragments it spreads.
SCHEMA_SELECTION = INTROSPECTION[
    INTROSPECTION.index("__schema") + len("__schema") : INTROSPECTION.index(
        "fragment FullType"
    )
].rstrip()[:-1]
INTROSPECTION_FRAGMENTS = INTROSPECTION[INTROSPECTION.index("fragment FullType") :]


async def test_aliased_schema_introspections_are_refused(seeded_api):
    query = (
        "query { "
        + " ".join(f"s{i}: __schema {SCHEMA_SELECTION}" for i in range(15))
        + " } "
        + INTROSPECTION_FRAGMENTS
    )

    extensions = await refused(seeded_api, query)

    assert extensions == {"code": "QUERY_TOO_COSTLY", "limit": 1, "actual": 15}


async def test_schema_selections_are_counted_through_fragments(seeded_api):
    query = """
        query { ...A ...B }
        fragment A on Query { __schema { queryType { name } } }
        fragment B on Query { other: __schema { queryType { name } } }
    """

    extensions = await refused(seeded_api, query)

    assert extensions == {"code": "QUERY_TOO_COSTLY", "limit": 1, "actual": 2}


async def test_type_selections_are_bounded(seeded_api):
    def types(count: int) -> str:
        selections = (f't{i}: __type(name: "Student") {{ name }}' for i in range(count))
        return "{ " + " ".join(selections) + " }"

    extensions = await refused(seeded_api, types(11))
    body = (await post(seeded_api, types(10))).json()

    assert extensions == {"code": "QUERY_TOO_COSTLY", "limit": 10, "actual": 11}
    assert body["data"] == {f"t{i}": {"name": "Student"} for i in range(10)}


@pytest.mark.parametrize(
    ("query", "aliases"),
    [
        (
            "query { __schema { types { ...FullType } "
            + " ".join(f"t{i}: types {{ ...FullType }}" for i in range(14))
            + " } } "
            + INTROSPECTION_FRAGMENTS,
            14,
        ),
        ("{ __schema { types { name } again: types { name } } }", 1),
        (
            "{ __schema { types { ...T } } } fragment T on __Type { n: name k: kind }",
            2,
        ),
        ('{ __type(name: "Student") { f: fields { name } } }', 1),
    ],
)
async def test_introspection_takes_no_aliases(seeded_api, query, aliases):
    extensions = await refused(seeded_api, query)

    assert extensions == {"code": "TOO_MANY_ALIASES", "limit": 0, "actual": aliases}


@pytest.mark.parametrize(
    "flags", list(itertools.product([False, True], repeat=6)), ids=str
)
def test_every_graphiql_introspection_query_passes_the_default_limits(flags):
    document = parse(get_introspection_query(*flags))

    shape = measure(document)

    assert check_shape(shape, QueryLimits()) is None
    assert (shape.schemas, shape.types, shape.introspection_aliases) == (1, 0, 0)
