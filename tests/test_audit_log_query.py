"""The auditLog query: newest first, filters, bad arguments, admins only."""

from __future__ import annotations

import json
from typing import Any

import pytest

from db.audit import insert_entries
from tests.factories import (
    TEST_JWT_SECRET,
    bearer_header,
    jwt_token,
    post,
)
from tests.factories.audit import answer, audit_entry, records

AUDIT_LOG = """
query Audit($studentId: String, $actor: String, $since: DateTime, $before: DateTime,
            $first: Int! = 20, $after: String) {
  auditLog(studentId: $studentId, actor: $actor, recordedSince: $since,
           recordedBefore: $before, first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { node { at actor role operation action requestId studentIds } }
  }
}
"""


# --- auditLog -----------------------------------------------------------------------


ENTRIES = [
    audit_entry(10, "user:a", ("S1",)),  # e1
    audit_entry(11, "user:b", ("S1", "S2")),  # e2
    audit_entry(12, "user:a", ("S2",)),  # e3
    audit_entry(12, "user:a", ("S1", "S3"), "write"),  # e4: same time, later id
    audit_entry(13, "key:7", ("S3",)),  # e5
]


@pytest.fixture
async def logged(api: Any) -> Any:
    async with api.services.database.writing() as session:
        await insert_entries(session, ENTRIES[:2])
    async with api.services.database.writing() as session:
        await insert_entries(session, ENTRIES[2:])
    return api


async def audit_page(api: Any, **variables: Any) -> dict[str, Any]:
    _, body = answer(await post(api, AUDIT_LOG, variables))
    assert "errors" not in body, body
    page: dict[str, Any] = body["data"]["auditLog"]
    return page


def requests_of(page: dict[str, Any]) -> list[str]:
    return [edge["node"]["requestId"] for edge in page["edges"]]


def request_of(n: int) -> str:
    entry = ENTRIES[n - 1]
    assert entry.request_id is not None
    return entry.request_id


async def test_audit_log_pages_newest_first(logged):
    first = await audit_page(logged, first=2)
    second = await audit_page(logged, first=2, after=first["pageInfo"]["endCursor"])
    third = await audit_page(logged, first=2, after=second["pageInfo"]["endCursor"])

    assert requests_of(first) == [request_of(5), request_of(4)]
    assert requests_of(second) == [request_of(3), request_of(2)]
    assert requests_of(third) == [request_of(1)]
    assert [p["pageInfo"]["hasNextPage"] for p in (first, second, third)] == [
        True,
        True,
        False,
    ]
    assert first["totalCount"] == 5
    assert first["edges"][1]["node"] == {
        "at": "2026-01-01T12:00:00Z",
        "actor": "user:a",
        "role": "teacher",
        "operation": "op12",
        "action": "WRITE",
        "requestId": "req-12-user:a",
        "studentIds": ["S1", "S3"],
    }
    assert first["edges"][0]["node"]["action"] == "READ"


async def test_audit_log_filters(logged):
    by_student = await audit_page(logged, studentId="S1")
    by_actor = await audit_page(logged, actor="user:a")
    by_time = await audit_page(
        logged, since="2026-01-01T11:00:00Z", before="2026-01-01T13:00:00Z"
    )
    both = await audit_page(logged, studentId="S1", actor="user:a")
    nobody = await audit_page(logged, studentId="S9")
    paged = await audit_page(logged, studentId="S1", first=1)
    rest = await audit_page(
        logged, studentId="S1", first=1, after=paged["pageInfo"]["endCursor"]
    )

    assert requests_of(by_student) == [request_of(4), request_of(2), request_of(1)]
    assert by_student["totalCount"] == 3
    assert requests_of(by_actor) == [request_of(4), request_of(3), request_of(1)]
    assert requests_of(by_time) == [request_of(4), request_of(3), request_of(2)]
    assert requests_of(both) == [request_of(4), request_of(1)]
    assert (requests_of(nobody), nobody["totalCount"]) == ([], 0)
    assert nobody["pageInfo"] == {"hasNextPage": False, "endCursor": None}
    assert requests_of(paged) == [request_of(4)]
    assert requests_of(rest) == [request_of(2)]


async def test_reading_the_audit_log_is_not_recorded(logged):
    await audit_page(logged, first=5)

    assert len(await records(logged)) == 5


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"first": 0}, "first must be between 1 and 100, got 0"),
        ({"after": "bm9wZQ"}, "invalid cursor 'bm9wZQ' for this list"),
    ],
)
async def test_audit_log_refuses_bad_arguments(api, variables, message):
    _, body = answer(await post(api, AUDIT_LOG, variables))

    assert body["data"] is None
    assert [(e["message"], e["extensions"]["code"]) for e in body["errors"]] == [
        (message, "BAD_USER_INPUT")
    ]


@pytest.mark.parametrize("role", ["teacher", "student"])
async def test_audit_log_is_forbidden_to_others_than_admins(
    make_api, scratch_url, role
):
    api = await make_api(scratch_url, jwt_secret=TEST_JWT_SECRET)
    async with api.services.database.writing() as session:
        await insert_entries(session, ENTRIES)
    claims = {"student_id": "S1"} if role == "student" else {}

    _, body = answer(
        await post(api, AUDIT_LOG, {}, headers=bearer_header(jwt_token(role, **claims)))
    )

    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]
    assert "S1" not in json.dumps(body)
