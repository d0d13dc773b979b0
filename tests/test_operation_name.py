"""The operation that runs: an operation name that selects nothing is refused
uncharged over HTTP and WebSocket; a named operation of several runs."""

from __future__ import annotations

from typing import Any

import pytest

from tests.asgi_ws import AsgiWebSocket
from tests.factories import (
    post,
    rate_limit,
    refusal,
    ws_init,
    ws_start,
)

# The HTTP and WebSocket layers: the same on either backend (conftest.py).
pytestmark = pytest.mark.sqlite_only

GRAPHQL_RESPONSE = "application/graphql-response+json"
TWO_OPERATIONS = """
    query Names { students(first: 2) { edges { node { name } } } }
    query Count { students { totalCount } }
"""


@pytest.mark.parametrize(
    ("document", "operation_name", "message"),
    [
        (
            TWO_OPERATIONS,
            None,
            "Must provide operation name if query contains multiple operations.",
        ),
        (TWO_OPERATIONS, "Nope", "Unknown operation named 'Nope'."),
        ("{ students { totalCount } }", "Nope", "Unknown operation named 'Nope'."),
        (
            "fragment F on Query { __typename }",
            None,
            "Must provide an operation.",
        ),
    ],
)
@pytest.mark.parametrize(
    ("accept", "status"), [("application/json", 200), (GRAPHQL_RESPONSE, 400)]
)
async def test_an_operation_name_that_selects_nothing_is_refused(
    seeded_api, document, operation_name, message, accept, status
):
    body: dict[str, Any] = {"query": document}
    if operation_name is not None:
        body["operationName"] = operation_name

    seeded_api.counter.reset()
    response = await seeded_api.http.post(
        "/graphql", json=body, headers={"Accept": accept}
    )

    assert seeded_api.counter.statements == []
    assert response.status_code == status
    assert response.headers["content-type"].startswith(accept)
    payload = response.json()
    assert "data" not in payload
    assert [error["message"] for error in payload["errors"]] == [message]
    assert refusal(payload) == {"code": "BAD_USER_INPUT"}
    assert rate_limit(payload)["cost"] == 0


async def test_a_named_operation_of_several_runs(seeded_api):
    body = (await post(seeded_api, TWO_OPERATIONS, operation_name="Count")).json()

    assert body["data"] == {"students": {"totalCount": 120}}


async def test_an_unknown_operation_name_over_a_websocket(seeded_api):
    async with AsgiWebSocket(seeded_api.app) as ws:
        await ws_init(ws)
        await ws.send_json(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": TWO_OPERATIONS, "operationName": "Nope"},
            }
        )
        error = await ws.receive_json()
        await ws_start(ws, "2", TWO_OPERATIONS)
        unnamed = await ws.receive_json()
        await ws_start(ws, "3", "{ __typename }")
        ok = await ws.receive_json()

    assert error["id"] == "1" and error["type"] == "error"
    assert [e["message"] for e in error["payload"]] == [
        "Unknown operation named 'Nope'."
    ]
    assert refusal({"errors": error["payload"]}) == {"code": "BAD_USER_INPUT"}
    assert unnamed["id"] == "2" and unnamed["type"] == "error"
    assert refusal({"errors": unnamed["payload"]}) == {"code": "BAD_USER_INPUT"}
    assert ok["payload"]["data"] == {"__typename": "Query"}
