"""Persisted operations: automatic persisted queries (Apollo's protocol) over GET,
POST and both WebSocket protocols, trusted documents in the off, audit and require
modes, the admin bypass, the manifest's checks, the dashboard's documents, and the
documents shared through Redis."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from app import StartRefused, trusted_documents
from monitoring.dashboard import dashboard_documents
from server.persisted import MemoryDocuments
from tests.asgi_ws import AsgiWebSocket
from tests.conftest import make_settings
from tests.factories import TEST_JWT_SECRET, bearer_header, jwt_token

# The HTTP and WebSocket layers: the same on either backend (conftest.py).
pytestmark = pytest.mark.sqlite_only

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"
SUBJECTS = "query Subjects { subjects }"
OTHER = "query Levels { students(first: 2) { edges { node { gradeLevel } } } }"
RECEIVE_TIMEOUT_S = 10.0


def sha(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def named(document: str, *, with_query: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha(document)}}
    }
    if with_query:
        body["query"] = document
    return body


async def send(
    api: Any,
    body: dict[str, Any],
    *,
    method: str = "POST",
    accept: str = JSON,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    all_headers = {"accept": accept, **(headers or {})}
    if method == "GET":
        params = {
            key: json.dumps(value) if isinstance(value, dict) else value
            for key, value in body.items()
        }
        response = await api.http.get("/graphql", params=params, headers=all_headers)
    else:
        response = await api.http.post("/graphql", json=body, headers=all_headers)
    return response.status_code, response.json()


def codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


def persisted_counts(api: Any) -> dict[str, float]:
    registry = api.services.monitor.registry.prometheus
    return {
        outcome: registry.get_sample_value(
            "graphql_persisted_operations_total", {"outcome": outcome}
        )
        for outcome in ("trusted", "untrusted", "not_found", "refused")
    }


def manifest_file(tmp_path: Path, *documents: str) -> str:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({sha(d): d for d in documents}))
    return str(path)


# --- automatic persisted queries ---------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_apq_hash_then_document_then_hash_alone(seeded_api, method):
    before = persisted_counts(seeded_api)
    # The hash alone, unknown: the request error Apollo's clients expect (200 under
    # application/json, 400 without `data` under application/graphql-response+json).
    status, body = await send(seeded_api, named(SUBJECTS), method=method)
    assert status == 200
    assert body["errors"][0]["message"] == "PersistedQueryNotFound"
    assert codes(body) == ["PERSISTED_QUERY_NOT_FOUND"] and "data" not in body
    status, body = await send(
        seeded_api, named(SUBJECTS), method=method, accept=GRAPHQL_RESPONSE
    )
    assert status == 400 and codes(body) == ["PERSISTED_QUERY_NOT_FOUND"]
    assert "data" not in body

    # The hash with the document: runs, and is kept.
    status, body = await send(
        seeded_api, named(SUBJECTS, with_query=True), method=method
    )
    expected = (await seeded_api.post(SUBJECTS))["data"]
    assert status == 200 and body["data"] == expected and len(expected["subjects"]) == 5
    # From now on the hash alone runs it.
    status, body = await send(seeded_api, named(SUBJECTS), method=method)
    assert status == 200 and body["data"] == expected and "errors" not in body

    after = persisted_counts(seeded_api)
    # Off in development: the two not found, and the two runs outside a manifest.
    assert after["not_found"] - before["not_found"] == 2
    assert after["untrusted"] - before["untrusted"] == 2
    assert after["refused"] == before["refused"]


async def test_a_hash_that_is_not_the_documents_is_refused_and_not_kept(seeded_api):
    body = named(OTHER)
    body["query"] = SUBJECTS  # another document under OTHER's hash
    status, answer = await send(seeded_api, body)
    assert status == 400 and codes(answer) == ["BAD_USER_INPUT"]
    status, answer = await send(seeded_api, named(OTHER))
    assert codes(answer) == ["PERSISTED_QUERY_NOT_FOUND"]


@pytest.mark.parametrize(
    "document",
    ["{ subjects ", "{ " + "subjects " * 2000 + "}"],  # does not parse; too long
    ids=["unparsable", "over-max-document-chars"],
)
async def test_only_a_document_within_the_limits_is_kept(seeded_api, document):
    status, body = await send(seeded_api, named(document, with_query=True))
    assert codes(body) and codes(body)[0] in (
        "GRAPHQL_PARSE_FAILED",
        "DOCUMENT_TOO_LARGE",
    )
    status, body = await send(seeded_api, named(document))
    assert codes(body) == ["PERSISTED_QUERY_NOT_FOUND"]


def test_the_workers_store_is_bounded_by_characters():
    store = MemoryDocuments(max_chars=100)

    async def fill() -> list[str | None]:
        for number in range(5):
            await store.put(str(number), "x" * 30)
        return [await store.get(str(number)) for number in range(5)]

    kept = asyncio.run(fill())
    assert kept == [None, None, "x" * 30, "x" * 30, "x" * 30]


async def test_a_persisted_mutation_over_get_is_refused_as_any_mutation(api):
    mutation = 'mutation Drop { studentDelete(studentId: "NOBODY") { __typename } }'
    status, _ = await send(api, named(mutation, with_query=True))  # POST: kept
    assert status == 200
    response = await api.http.get(
        "/graphql", params={"extensions": json.dumps(named(mutation)["extensions"])}
    )
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_websockets_run_persisted_documents(seeded_api, protocol):
    start = "subscribe" if protocol == "graphql-transport-ws" else "start"
    expected = (await seeded_api.post(SUBJECTS))["data"]
    async with AsgiWebSocket(seeded_api.app, subprotocol=protocol) as ws:
        await ws.send_json({"type": "connection_init", "payload": {}})
        assert (await ws.receive_json(RECEIVE_TIMEOUT_S))["type"] == "connection_ack"
        await ws.send_json({"id": "1", "type": start, "payload": named(OTHER)})
        missing = await ws.receive_json(RECEIVE_TIMEOUT_S)
        await ws.send_json(
            {"id": "2", "type": start, "payload": named(SUBJECTS, with_query=True)}
        )
        first = await ws.receive_json(RECEIVE_TIMEOUT_S)
        await ws.receive_json(RECEIVE_TIMEOUT_S)  # complete
        await ws.send_json({"id": "3", "type": start, "payload": named(SUBJECTS)})
        again = await ws.receive_json(RECEIVE_TIMEOUT_S)
    error = (
        missing["payload"][0]
        if protocol == "graphql-transport-ws"
        else missing["payload"]
    )
    assert (missing["id"], missing["type"]) == ("1", "error")
    assert error["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    assert first["id"] == "2" and first["payload"]["data"] == expected
    assert again["id"] == "3" and again["payload"]["data"] == expected


# --- the modes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environment", "mode"),
    [("development", "off"), ("staging", "audit"), ("production", "audit")],
)
def test_the_profiles_default_mode(environment, mode):
    extra = {}
    if environment != "development":
        extra = {"jwt_secret": TEST_JWT_SECRET, "trusted_hosts": "api.example.org"}
    settings = make_settings(
        "sqlite+aiosqlite:////tmp/x.db", environment=environment, **extra
    )
    assert settings.persisted_operations_mode == mode
    chosen = make_settings(
        "sqlite+aiosqlite:////tmp/x.db", persisted_operations=" Require "
    )
    assert chosen.persisted_operations_mode == "require"


async def test_audit_runs_unknown_documents_and_counts_and_logs_them_once(
    make_api, scratch_url, tmp_path, caplog
):
    api = await make_api(
        scratch_url,
        persisted_operations="audit",
        persisted_operations_manifest=manifest_file(tmp_path, SUBJECTS),
    )
    before = persisted_counts(api)
    with caplog.at_level(logging.WARNING, logger="gradepulse.persisted"):
        for _ in range(3):
            status, body = await send(api, {"query": OTHER, "operationName": "Levels"})
            assert status == 200 and body["data"] == {"students": {"edges": []}}
        status, body = await send(api, named(SUBJECTS))  # trusted, by hash
        assert body["data"] == {"subjects": []}
        status, body = await send(api, {"query": SUBJECTS})  # trusted, sent whole
        assert body["data"] == {"subjects": []}
    after = persisted_counts(api)
    assert after["untrusted"] - before["untrusted"] == 3
    assert after["trusted"] - before["trusted"] == 2
    logged = [
        r.getMessage() for r in caplog.records if r.name == "gradepulse.persisted"
    ]
    assert logged == [
        f"an operation outside the trusted documents ran: sha256 {sha(OTHER)} "
        "(operation Levels, admin)"
    ]


async def require_api(make_api, scratch_url, tmp_path, **overrides) -> Any:
    return await make_api(
        scratch_url,
        persisted_operations="require",
        persisted_operations_manifest=manifest_file(tmp_path, SUBJECTS),
        jwt_secret=TEST_JWT_SECRET,
        **overrides,
    )


async def test_require_runs_only_the_manifest(make_api, scratch_url, tmp_path):
    api = await require_api(make_api, scratch_url, tmp_path)
    before = persisted_counts(api)
    for body in (
        named(SUBJECTS),
        {"query": SUBJECTS},
        named(SUBJECTS, with_query=True),
    ):
        status, answer = await send(api, body)
        assert (status, answer.get("data")) == (200, {"subjects": []}), answer

    for accept, expected_status in ((JSON, 200), (GRAPHQL_RESPONSE, 400)):
        status, answer = await send(api, {"query": OTHER}, accept=accept)
        assert status == expected_status and "data" not in answer
        assert codes(answer) == ["PERSISTED_QUERY_REQUIRED"]
    # Sent with its hash, it is refused too, and not registered: the hash alone
    # is then unknown.
    status, answer = await send(api, named(OTHER, with_query=True))
    assert codes(answer) == ["PERSISTED_QUERY_REQUIRED"]
    status, answer = await send(api, named(OTHER))
    assert codes(answer) == ["PERSISTED_QUERY_NOT_FOUND"]

    after = persisted_counts(api)
    assert after["trusted"] - before["trusted"] == 3
    assert after["refused"] - before["refused"] == 3
    assert after["not_found"] - before["not_found"] == 1
    assert after["untrusted"] == before["untrusted"]


@pytest.mark.parametrize(
    ("bypass", "role", "runs"),
    [(True, "admin", True), (True, "teacher", False), (False, "admin", False)],
)
async def test_admins_bypass_require_only_when_allowed(
    make_api, scratch_url, tmp_path, bypass, role, runs
):
    api = await require_api(
        make_api,
        scratch_url,
        tmp_path,
        persisted_operations_admin_bypass=bypass,
    )
    headers = bearer_header(jwt_token(role))
    status, answer = await send(api, {"query": OTHER}, headers=headers)
    if runs:
        assert status == 200 and answer["data"] == {"students": {"edges": []}}
        # And an admin may register a document, which only admins then run.
        status, answer = await send(api, named(OTHER, with_query=True), headers=headers)
        assert answer["data"] == {"students": {"edges": []}}
        status, answer = await send(api, named(OTHER), headers=headers)
        assert answer["data"] == {"students": {"edges": []}}
        teacher = bearer_header(jwt_token("teacher"))
        status, answer = await send(api, named(OTHER), headers=teacher)
        assert codes(answer) == ["PERSISTED_QUERY_NOT_FOUND"]
    else:
        assert codes(answer) == ["PERSISTED_QUERY_REQUIRED"]


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_require_holds_over_websockets(make_api, scratch_url, tmp_path, protocol):
    api = await require_api(make_api, scratch_url, tmp_path)
    start = "subscribe" if protocol == "graphql-transport-ws" else "start"
    async with AsgiWebSocket(api.app, subprotocol=protocol) as ws:
        await ws.send_json({"type": "connection_init", "payload": {}})
        assert (await ws.receive_json(RECEIVE_TIMEOUT_S))["type"] == "connection_ack"
        await ws.send_json({"id": "1", "type": start, "payload": {"query": OTHER}})
        refused = await ws.receive_json(RECEIVE_TIMEOUT_S)
        await ws.send_json({"id": "2", "type": start, "payload": named(SUBJECTS)})
        answer = await ws.receive_json(RECEIVE_TIMEOUT_S)
    error = (
        refused["payload"][0]
        if protocol == "graphql-transport-ws"
        else refused["payload"]
    )
    assert (refused["id"], refused["type"]) == ("1", "error")
    assert error["extensions"]["code"] == "PERSISTED_QUERY_REQUIRED"
    assert answer["id"] == "2" and answer["payload"]["data"] == {"subjects": []}


# --- the manifest ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "is not JSON"),
        ("[]", "a manifest is a JSON object of hash: document"),
        (json.dumps({"abc": SUBJECTS}), "'abc' is not a sha256 hash (64 hex digits)"),
        (json.dumps({sha(SUBJECTS): 5}), "is not a string"),
        (json.dumps({sha(OTHER): SUBJECTS}), "is not the sha256 of its document"),
        (json.dumps({sha(SUBJECTS).upper(): SUBJECTS}), "is not a sha256 hash"),
    ],
)
def test_a_manifest_that_cannot_be_used_stops_the_start(tmp_path, content, reason):
    path = tmp_path / "manifest.json"
    path.write_text(content)
    settings = make_settings(
        "sqlite+aiosqlite:////tmp/x.db", persisted_operations_manifest=str(path)
    )
    with pytest.raises(StartRefused) as refused:
        trusted_documents(settings)
    message = str(refused.value)
    assert message.startswith("refusing to start: PERSISTED_OPERATIONS_MANIFEST ")
    assert reason in message and "\n" not in message


def test_a_missing_manifest_stops_the_start(tmp_path):
    settings = make_settings(
        "sqlite+aiosqlite:////tmp/x.db",
        persisted_operations_manifest=str(tmp_path / "nowhere.json"),
    )
    with pytest.raises(StartRefused, match="No such file or directory"):
        trusted_documents(settings)


def test_the_manifest_holds_its_documents_and_the_dashboards(tmp_path):
    settings = make_settings(
        "sqlite+aiosqlite:////tmp/x.db",
        persisted_operations_manifest=manifest_file(tmp_path, SUBJECTS, OTHER),
    )
    documents = trusted_documents(settings)
    dashboard = dashboard_documents()
    assert set(dashboard) == {
        "DashboardMetricsFeed",
        "DashboardCostsFeed",
        "DashboardAlertsFeed",
        "DashboardInitial",
    }
    assert documents == {
        sha(SUBJECTS): SUBJECTS,
        sha(OTHER): OTHER,
        **{sha(text): text for text in dashboard.values()},
    }


async def test_the_dashboard_names_its_documents_by_hash_and_they_run_under_require(
    make_api, scratch_url, tmp_path
):
    api = await require_api(make_api, scratch_url, tmp_path)
    page = (await api.http.get("/dashboard")).text
    start = page.index('id="dashboard-config">') + len('id="dashboard-config">')
    config = json.loads(page[start : page.index("</script>", start)])
    dashboard = dashboard_documents()
    assert config["documents"] == {name: sha(text) for name, text in dashboard.items()}
    status, body = await send(
        api,
        {
            "operationName": "DashboardInitial",
            "extensions": {
                "persistedQuery": {
                    "version": 1,
                    "sha256Hash": config["documents"]["DashboardInitial"],
                }
            },
        },
    )
    assert status == 200 and "errors" not in body, body
    assert set(body["data"]) == {"alerts", "metrics", "costs"}


# --- shared by the cluster -------------------------------------------------------


async def test_documents_registered_on_one_worker_run_on_another(
    make_api, scratch_url, redis_url, redis_prefix
):
    first = await make_api(scratch_url, redis_url=redis_url, redis_prefix=redis_prefix)
    second = await make_api(scratch_url, redis_url=redis_url, redis_prefix=redis_prefix)
    status, body = await send(first, named(SUBJECTS, with_query=True))
    assert body["data"] == {"subjects": []}
    status, body = await send(second, named(SUBJECTS))
    assert status == 200 and body["data"] == {"subjects": []}
    # Kept under the cluster's prefix, for the configured time.
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        key = f"{redis_prefix}apq:{sha(SUBJECTS)}"
        assert (await client.get(key)) == SUBJECTS.encode()
        assert 0 < await client.ttl(key) <= 7 * 24 * 3600
    finally:
        await client.aclose()


# --- a manifest as Relay's compiler writes it ----------------------------------------

RELAY = Path(__file__).parent / "fixtures" / "relay"


async def test_relays_persisted_documents_run_under_require(
    make_api, seeded_url, levels
):
    """tests/fixtures/relay/persisted.json is relay-compiler 18's output (its
    `persistConfig`) for Students.js there, against schema.graphql: a connection
    with @connection and a @refetchable Student, whose refetch goes through
    `node(id:)`."""
    manifest = json.loads((RELAY / "persisted.json").read_text())
    api = await make_api(
        seeded_url,
        persisted_operations="require",
        persisted_operations_manifest=str(RELAY / "persisted.json"),
    )
    by_name = {
        text.split("(")[0].split()[1]: digest for digest, text in manifest.items()
    }

    async def run(name: str, variables: dict[str, Any]) -> dict[str, Any]:
        body = {
            "variables": variables,
            "extensions": {
                "persistedQuery": {"version": 1, "sha256Hash": by_name[name]}
            },
        }
        status, answer = await send(api, body)
        assert status == 200 and "errors" not in answer, answer
        return answer["data"]

    page = await run("StudentsListPaginationQuery", {"first": 2})
    edges = page["students"]["edges"]
    assert [e["node"]["studentId"] for e in edges] == ["S00001", "S00002"]
    more = await run(
        "StudentsListPaginationQuery",
        {"first": 2, "after": page["students"]["pageInfo"]["endCursor"]},
    )
    assert [e["node"]["studentId"] for e in more["students"]["edges"]] == [
        "S00003",
        "S00004",
    ]
    refetched = await run("StudentCardRefetchQuery", {"id": edges[1]["node"]["id"]})
    assert refetched["node"] == {
        "__typename": "Student",
        "id": edges[1]["node"]["id"],
        "name": edges[1]["node"]["name"],
        "studentId": "S00002",
    }
    status, answer = await send(api, {"query": "{ subjects }"})
    assert codes(answer) == ["PERSISTED_QUERY_REQUIRED"]
