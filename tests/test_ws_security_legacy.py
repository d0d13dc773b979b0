"""WebSocket security: graphql-ws operations with the HTTP limits and audit."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from sqlalchemy import text

from resolvers import students
from tests.asgi_ws import AsgiWebSocket
from tests.factories import (
    add_key,
    bearer_header,
    jwt_token,
)
from tests.factories.ws_security import (
    LEGACY,
    REMOTE,
    connect,
    http,
    secured_api,
    start,
)

STUDENT_CREATE = (
    'mutation { studentCreate(input: {studentId: "{id}", name: "WS Student", '
    'email: "{id}@school.example", gradeLevel: 9}) { __typename '
    "... on StudentCreateSuccess { student { studentId gradeLevel } } } }"
)
GRADE_ADD = (
    'mutation { gradeAdd(input: {studentId: "{id}", subject: "Math", score: 71.5}) '
    "{ __typename } }"
)

# --- queries and mutations over the legacy protocol ------------------------------


async def legacy_run(ws: AsgiWebSocket, id: str, query: str) -> list[dict[str, Any]]:
    """start, then every message of that operation up to its complete or error."""
    await start(ws, LEGACY, id, query)
    messages = []
    while True:
        message = await ws.receive_json()
        assert message["id"] == id, message
        messages.append(message)
        if message["type"] in ("complete", "error"):
            return messages


async def test_legacy_queries_answer_data_then_complete(
    make_api: Any, seeded_url: str
) -> None:
    api = await secured_api(make_api, seeded_url)
    admin = jwt_token()
    over_http = (await http(api, "{ subjects }", admin)).json()["data"]

    async with AsgiWebSocket(api.app, subprotocol=LEGACY, client=REMOTE) as ws:
        assert await connect(ws, bearer_header(admin)) == {"type": "connection_ack"}
        subjects = await legacy_run(ws, "1", "{ subjects }")
        total = await legacy_run(ws, "2", "{ students(first: 2) { totalCount } }")

    assert len(over_http["subjects"]) > 1
    data, complete = subjects
    assert data == {"id": "1", "type": "data", "payload": data["payload"]}
    assert data["payload"]["data"] == over_http
    assert complete == {"id": "1", "type": "complete"}
    assert total[0]["payload"]["data"] == {"students": {"totalCount": 120}}
    # The operation was costed and charged like one over HTTP.
    assert total[0]["payload"]["extensions"]["rateLimit"]["cost"] == 1
    assert total[1] == {"id": "2", "type": "complete"}


async def test_legacy_mutations_run_with_the_viewer_of_the_connection(
    make_api: Any, scratch_url: str
) -> None:
    api = await secured_api(make_api, scratch_url)
    admin, _ = await add_key(api.services.database, "admin")
    teacher, _ = await add_key(api.services.database, "teacher")

    async with AsgiWebSocket(api.app, subprotocol=LEGACY, client=REMOTE) as ws:
        assert await connect(ws, bearer_header(admin)) == {"type": "connection_ack"}
        created = await legacy_run(ws, "1", STUDENT_CREATE.replace("{id}", "WS-9"))
    async with AsgiWebSocket(api.app, subprotocol=LEGACY, client=REMOTE) as ws:
        assert await connect(ws, bearer_header(teacher)) == {"type": "connection_ack"}
        refused = await legacy_run(ws, "1", STUDENT_CREATE.replace("{id}", "WS-10"))

    assert [m["type"] for m in created] == ["data", "complete"]
    assert created[0]["payload"]["data"] == {
        "studentCreate": {
            "__typename": "StudentCreateSuccess",
            "student": {"studentId": "WS-9", "gradeLevel": 9},
        }
    }
    # A teacher may not create students: FORBIDDEN, as over HTTP, and no row.
    assert refused[0]["type"] == "data"
    assert refused[0]["payload"]["data"] is None
    assert [e["extensions"]["code"] for e in refused[0]["payload"]["errors"]] == [
        "FORBIDDEN"
    ]
    async with api.services.database.sessions() as session:
        count = await session.execute(text("SELECT count(*) FROM students"))
    assert count.scalar_one() == 1


async def test_legacy_queries_are_refused_by_the_limits_with_a_code(
    make_api: Any, seeded_url: str
) -> None:
    api = await secured_api(make_api, seeded_url, max_depth=4)

    async with AsgiWebSocket(api.app, subprotocol=LEGACY, client=REMOTE) as ws:
        assert await connect(ws, bearer_header(jwt_token())) == {
            "type": "connection_ack"
        }
        api.counter.reset()
        [deep] = await legacy_run(
            ws, "deep", "{ students { edges { node { grades { score } } } } }"
        )
        statements = list(api.counter.statements)
        ok = await legacy_run(ws, "ok", "{ __typename }")

    assert deep["type"] == "error"
    extensions = deep["payload"]["extensions"]
    assert (extensions["code"], extensions["limit"], extensions["actual"]) == (
        "QUERY_TOO_DEEP",
        4,
        5,
    )
    assert statements == []
    assert ok[0]["payload"]["data"] == {"__typename": "Query"}


async def test_legacy_queries_stop_at_the_operation_timeout(
    make_api: Any, seeded_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = await secured_api(make_api, seeded_url, operation_timeout_s=0.2)
    list_students = students.list_students

    async def slow(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(5)
        return await list_students(*args, **kwargs)

    monkeypatch.setattr(students, "list_students", slow)

    async with AsgiWebSocket(api.app, subprotocol=LEGACY, client=REMOTE) as ws:
        assert await connect(ws, bearer_header(jwt_token())) == {
            "type": "connection_ack"
        }
        started = time.perf_counter()
        [error] = await legacy_run(ws, "slow", "{ students(first: 1) { totalCount } }")
        elapsed = time.perf_counter() - started
        fast = await legacy_run(ws, "fast", "{ __typename }")

    assert error["type"] == "error"
    extensions = error["payload"]["extensions"]
    assert extensions.pop("actual") >= 0.2
    assert len(extensions.pop("requestId")) == 32
    assert extensions == {"code": "OPERATION_TIMEOUT", "limit": 0.2}
    assert elapsed < 2.0
    assert fast[0]["payload"]["data"] == {"__typename": "Query"}


async def test_legacy_queries_returning_grades_are_audited(
    make_api: Any, scratch_url: str
) -> None:
    api = await secured_api(make_api, scratch_url)
    admin, key_id = await add_key(api.services.database, "admin")
    for mutation in (STUDENT_CREATE, GRADE_ADD):
        response = await http(api, mutation.replace("{id}", "WS-A"), admin)
        assert response.status_code == 200, response.text

    async with AsgiWebSocket(api.app, subprotocol=LEGACY, client=REMOTE) as ws:
        assert await connect(ws, bearer_header(admin)) == {"type": "connection_ack"}
        data, complete = await legacy_run(
            ws, "1", '{ student(studentId: "WS-A") { grades { score } } }'
        )
    async with api.services.database.sessions() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT actor, operation, action, student_ids FROM audit_log "
                    "ORDER BY id"
                )
            )
        ).all()

    assert data["payload"]["data"] == {"student": {"grades": [{"score": 71.5}]}}
    assert complete["type"] == "complete"
    assert [(r[0], r[1], r[2], json.loads(r[3])) for r in rows] == [
        (f"key:{key_id}", "mutation:gradeAdd", "write", ["WS-A"]),
        (f"key:{key_id}", "query:student", "read", ["WS-A"]),
    ]
