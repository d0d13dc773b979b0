"""Query limits: introspection and suggestions, serving on, over WebSocket."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from monitoring.monitor import METRICS
from resolvers import students
from server import gate as server_gate
from server.build import build_schema
from tests.asgi_ws import AsgiWebSocket
from tests.factories import (
    TEST_JWT_SECRET,
    bearer_header,
    jwt_token,
    post,
    refusal,
    wait_until,
    ws_init,
    ws_start,
)
from tests.factories.limits import DEEP_GRADES, STUDENTS_WITH_GRADES, fragment_bomb

# The HTTP and WebSocket layers: the same on either backend (conftest.py).
pytestmark = pytest.mark.sqlite_only

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
