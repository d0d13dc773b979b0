"""Query cost of page sizes as graphql-core coerces them: an integral float is its
int, a page that cannot be determined costs the largest page, and a variable that
does not coerce is refused uncharged."""

from __future__ import annotations

import pytest

from tests.factories import (
    budgeted_api,
    cost_of,
    post,
    rate_limit,
    refusal,
    refused,
)

# The HTTP and WebSocket layers: the same on either backend (conftest.py).
pytestmark = pytest.mark.sqlite_only

PAGE_BY_VARIABLE = (
    "query Page($n: Int!) { students(first: $n) "
    "{ edges { node { studentId grades { score } } } } }"
)
# 1 for the connection; per edge 1 + node 1 + 20 estimated grades.
FULL_PAGE_COST = 1 + 100 * (1 + 1 + 20)


@pytest.mark.parametrize("n", [100, 100.0])
async def test_an_integral_float_page_costs_as_its_int(seeded_api, n):
    body = (await post(seeded_api, PAGE_BY_VARIABLE, {"n": n})).json()

    assert "errors" not in body, body
    assert len(body["data"]["students"]["edges"]) == 100
    assert rate_limit(body)["cost"] == FULL_PAGE_COST


async def test_a_float_page_cannot_slip_under_max_cost(make_api, seeded_url):
    api = await make_api(seeded_url, max_cost=2000)

    extensions = await refused(api, PAGE_BY_VARIABLE, {"n": 100.0})

    assert extensions == {
        "code": "QUERY_TOO_COSTLY",
        "limit": 2000,
        "actual": FULL_PAGE_COST,
    }


async def test_a_float_page_is_charged_in_full_to_the_rate_budget(make_api, seeded_url):
    api, clock = await budgeted_api(make_api, seeded_url, capacity=5000)
    query = "query($n: Int!) { students(first: $n) { edges { node { studentId } } } }"

    body = (await post(api, query, {"n": 100.0})).json()

    assert len(body["data"]["students"]["edges"]) == 100
    assert rate_limit(body)["cost"] == 1 + 100 * 2
    assert rate_limit(body)["remaining"] == 5000 - 201


async def test_an_undeterminable_page_costs_the_largest_page(make_api, seeded_url):
    api = await make_api(seeded_url, max_cost=2000)
    # A nullable variable may stand for `first: Int! = 20`; null is refused at
    # execution, absent takes the default: costed as the largest page, and as 20.
    query = (
        "query Page($n: Int) { students(first: $n) "
        "{ edges { node { studentId grades { score } } } } }"
    )

    extensions = await refused(api, query, {"n": None})
    absent = await cost_of(api, query)

    assert extensions == {
        "code": "QUERY_TOO_COSTLY",
        "limit": 2000,
        "actual": FULL_PAGE_COST,
    }
    assert absent == 1 + 20 * 22


async def test_a_page_variable_that_does_not_coerce_is_refused_uncharged(
    make_api, seeded_url
):
    api, clock = await budgeted_api(make_api, seeded_url, capacity=5000)

    api.counter.reset()
    body = (await post(api, PAGE_BY_VARIABLE, {"n": "100"})).json()

    assert api.counter.statements == []
    assert refusal(body) == {"code": "BAD_USER_INPUT"}
    assert body["errors"][0]["message"] == (
        "Variable '$n' has invalid value: Int cannot represent non-integer value: '100'"
    )
    assert rate_limit(body)["cost"] == 0
    assert rate_limit(body)["remaining"] == 5000
