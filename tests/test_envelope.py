"""The operation envelope: HTTP and both WebSocket protocols refuse the same malformed
operations with the same coded error, and the connection goes on."""

from __future__ import annotations

from typing import Any

import pytest

from tests.asgi_ws import AsgiWebSocket

# The HTTP and WebSocket layers: the same on either backend (conftest.py).
pytestmark = pytest.mark.sqlite_only

TRANSPORT = "graphql-transport-ws"
LEGACY = "graphql-ws"
RECEIVE_TIMEOUT_S = 10.0

MALFORMED = [
    ({"query": 123}, "`query` must be a string"),
    ({"query": ""}, "an operation's payload has no `query`"),
    (
        {"query": "{ subjects }", "variables": [1]},
        "`variables` must be an object or null",
    ),
    (
        {"query": "{ subjects }", "operationName": 5},
        "`operationName` must be a string or null",
    ),
    (
        {"query": "query A { subjects }", "operationName": "Z" * 201},
        "`operationName` is longer than 200 characters",
    ),
    (
        {"query": "{ subjects }", "extensions": 7},
        "`extensions` must be an object or null",
    ),
    # Persisted operations (Apollo's protocol): version 1 and the document's sha256.
    (
        {"extensions": {"persistedQuery": "abc"}},
        "extensions.persistedQuery must be an object",
    ),
    (
        {"extensions": {"persistedQuery": {"version": 2, "sha256Hash": "a" * 64}}},
        "extensions.persistedQuery.version must be 1",
    ),
    (
        {"extensions": {"persistedQuery": {"version": True, "sha256Hash": "a" * 64}}},
        "extensions.persistedQuery.version must be 1",
    ),
    (
        {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "xyz"}}},
        "extensions.persistedQuery.sha256Hash must be the sha256 of the document, "
        "64 hex digits",
    ),
    (
        {
            "query": "{ subjects }",
            "extensions": {"persistedQuery": {"version": 1, "sha256Hash": "a" * 64}},
        },
        "extensions.persistedQuery.sha256Hash is not the sha256 of `query`",
    ),
]


@pytest.mark.parametrize(("payload", "message"), MALFORMED)
async def test_http_refuses_a_malformed_operation_with_a_coded_400(
    seeded_api: Any, payload: dict[str, Any], message: str
) -> None:
    response = await seeded_api.http.post("/graphql", json=payload)

    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["message"] == message.replace("an operation's payload", "the request")
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["requestId"] == response.headers["x-request-id"]


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
@pytest.mark.parametrize(("payload", "message"), MALFORMED)
async def test_websockets_refuse_the_same_operations_and_go_on(
    seeded_api: Any, protocol: str, payload: dict[str, Any], message: str
) -> None:
    start = "subscribe" if protocol == TRANSPORT else "start"
    async with AsgiWebSocket(seeded_api.app, subprotocol=protocol) as ws:
        await ws.send_json({"type": "connection_init", "payload": {}})
        assert (await ws.receive_json(RECEIVE_TIMEOUT_S))["type"] == "connection_ack"
        await ws.send_json({"id": "1", "type": start, "payload": payload})
        refused = await ws.receive_json(RECEIVE_TIMEOUT_S)
        await ws.send_json(
            {"id": "2", "type": start, "payload": {"query": "{ subjects }"}}
        )
        answer = await ws.receive_json(RECEIVE_TIMEOUT_S)

    assert (refused["id"], refused["type"]) == ("1", "error")
    # graphql-transport-ws sends a list of errors, graphql-ws one error.
    error = refused["payload"][0] if protocol == TRANSPORT else refused["payload"]
    assert error["message"] == message
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["requestId"]
    assert answer["id"] == "2"
    over_http = await seeded_api.post("{ subjects }")
    assert answer["payload"]["data"] == over_http["data"]
    assert len(over_http["data"]["subjects"]) == 5


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_an_empty_operation_name_is_none_on_every_transport(
    seeded_api: Any, protocol: str
) -> None:
    payload = {"query": "query Subjects { subjects }", "operationName": ""}
    over_http = (await seeded_api.http.post("/graphql", json=payload)).json()

    start = "subscribe" if protocol == TRANSPORT else "start"
    async with AsgiWebSocket(seeded_api.app, subprotocol=protocol) as ws:
        await ws.send_json({"type": "connection_init", "payload": {}})
        assert (await ws.receive_json(RECEIVE_TIMEOUT_S))["type"] == "connection_ack"
        await ws.send_json({"id": "1", "type": start, "payload": payload})
        answer = await ws.receive_json(RECEIVE_TIMEOUT_S)

    assert "errors" not in over_http
    assert answer["type"] in ("next", "data")
    assert answer["payload"]["data"] == over_http["data"]


# graphql-ws (legacy) ignores a message that does not parse: never acknowledged,
# the connection ends at the init timeout.
@pytest.mark.parametrize(("protocol", "code"), [(TRANSPORT, 4400), (LEGACY, 4408)])
async def test_a_message_naming_a_member_twice_is_malformed(
    seeded_api: Any, protocol: str, code: int
) -> None:
    """Parsers disagree on which of two same-named members counts: the last one
    made a student's key and an admin's in one connection_init an admin."""
    async with AsgiWebSocket(seeded_api.app, subprotocol=protocol) as ws:
        await ws.send_text(
            '{"type": "connection_init", "payload": '
            '{"Authorization": "Bearer a", "Authorization": "Bearer b"}}'
        )
        with pytest.raises(ConnectionError):
            await ws.receive_json(RECEIVE_TIMEOUT_S)

    assert ws.close_code == code
