"""Generated selections over the schema (hypothesis): the compiled plans answer each
exactly as graphql-core's general executor does, on SQLite and PostgreSQL, as an
admin and as a teacher of some levels."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.gate import graphql_schema
from tests.factories.plans import (
    APP_SETTINGS,
    VIEWERS,
    Pair,
    comparable,
    is_live,
    shape,
)

# Root fields over the data (the monitoring reads change between two requests).
ROOTS = (
    "students",
    "student",
    "grades",
    "studentAnalytics",
    "classAnalytics",
    "atRiskStudents",
    "subjects",
)
# Argument values by name: valid ones mostly, and some the resolvers refuse.
ARGUMENTS: dict[str, list[str]] = {
    "first": ["1", "3", "7", "0"],
    "studentId": ['"S00001"', '"S00017"', '"S00042"', '"NOBODY"'],
    "gradeLevel": ["3", "9", "10", "13"],
    "subject": ['"Math"', '"Art"', '"Latin"'],
    "search": ['"an"', '"s0001"'],
    "after": ['"bm90IGEgY3Vyc29y"'],
    "last": ["2", "5"],
}
MAX_DEPTH = 5


def _named(of: Any) -> Any:
    while isinstance(of, (GraphQLNonNull, GraphQLList)):
        of = of.of_type
    return of


@st.composite
def _arguments(draw: Any, field: Any, required_only: bool = False) -> str | None:
    """The argument list of a field, or None when a required one has no values."""
    parts = []
    for name, argument in field.args.items():
        required = isinstance(argument.type, GraphQLNonNull)
        if not required and (required_only or not draw(st.booleans())):
            continue
        named = _named(argument.type)
        if isinstance(named, GraphQLEnumType):
            values = list(named.values)
        else:
            values = ARGUMENTS.get(name, [])
        if not values:
            if required:
                return None
            continue
        parts.append(f"{name}: {draw(st.sampled_from(values))}")
    return f"({', '.join(parts)})" if parts else ""


@st.composite
def _selection(draw: Any, schema: GraphQLSchema, type_: Any, depth: int) -> str:
    if isinstance(type_, GraphQLUnionType):
        return "{ __typename }"
    assert isinstance(type_, GraphQLObjectType)
    names = sorted(type_.fields)
    chosen = draw(
        st.lists(st.sampled_from(names), min_size=1, max_size=min(5, len(names)))
    )
    parts = []
    if draw(st.integers(0, 4)) == 0:
        parts.append("__typename")
    for index, name in enumerate(chosen):
        field = type_.fields[name]
        arguments = draw(_arguments(field))
        if arguments is None:
            continue
        named = _named(field.type)
        alias = f"{name}{index}: " if draw(st.integers(0, 3)) == 0 else ""
        if isinstance(named, (GraphQLObjectType, GraphQLUnionType)):
            if depth >= MAX_DEPTH:
                continue
            inner = draw(_selection(schema, named, depth + 1))
            if draw(st.integers(0, 5)) == 0:  # the same selection in a fragment
                inner = f"{{ ... on {named.name} {inner} }}"
            parts.append(f"{alias}{name}{arguments} {inner}")
        else:
            parts.append(f"{alias}{name}{arguments}")
    if not parts:
        parts.append("__typename")
    return "{ " + " ".join(parts) + " }"


@st.composite
def documents(draw: Any, schema: GraphQLSchema) -> str:
    query = schema.query_type
    assert query is not None
    roots = draw(st.lists(st.sampled_from(ROOTS), min_size=1, max_size=3, unique=True))
    parts = []
    for name in roots:
        field = query.fields[name]
        arguments = draw(_arguments(field))
        if arguments is None:
            arguments = draw(_arguments(field, required_only=True)) or ""
        named = _named(field.type)
        if isinstance(named, GraphQLObjectType):
            parts.append(f"{name}{arguments} {draw(_selection(schema, named, 1))}")
        else:
            parts.append(f"{name}{arguments}")
    return "{ " + " ".join(parts) + " }"


@pytest.fixture
async def pair(make_api: Any, seeded_url: str) -> Pair:
    planned = await make_api(seeded_url, **APP_SETTINGS)
    general = await make_api(seeded_url, query_plans=False, **APP_SETTINGS)
    return Pair(planned, general)


@pytest.fixture
def core(pair: Pair) -> GraphQLSchema:
    return graphql_schema(pair.planned.app.state.schema)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same documents on every run, and in CI
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_generated_selections_answer_identically(
    pair: Pair, core: GraphQLSchema, data: Any
) -> None:
    query = data.draw(documents(core))
    viewer = data.draw(st.sampled_from(["admin", "teacher"]))
    await _compare(pair, query, viewer)


async def _compare(pair: Pair, query: str, viewer: str) -> None:
    (status_p, body_p), (status_g, body_g) = await pair.both(
        query, None, VIEWERS[viewer]
    )
    assert status_p == status_g, query
    if body_g.get("data") is None and body_p.get("data") is None:
        # An error that nulls the whole response ends graphql-core's execution
        # wherever its other fields had got to (what they had loaded on this
        # server): which further errors it reports is not fixed. Both say why.
        assert codes(body_p) & codes(body_g), query
    elif is_live(query):
        assert shape(comparable(body_p)) == shape(comparable(body_g)), query
    else:
        assert comparable(body_p) == comparable(body_g), query


def codes(body: dict[str, Any]) -> set[str]:
    return {(e.get("extensions") or {}).get("code") for e in body.get("errors") or ()}
