"""Helpers of the test_audit_* modules: documents, reading the records."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import text

from db.audit import NewAuditEntry

ANONYMOUS = "ip:127.0.0.1"  # the anonymous loopback admin of the development profile
GRADES_OF = (
    "query($id: String!) { grades(studentId: $id, first: 3) "
    "{ edges { node { studentId score } } } }"
)
GRADE_ADD = """
mutation($input: GradeAddInput!) {
  gradeAdd(input: $input) {
    __typename ... on GradeAddSuccess { grade { id studentId score } }
  }
}
"""


def answer(response: httpx.Response) -> tuple[str, dict[str, Any]]:
    """(the request id the app gave the request, the JSON body)."""
    body: dict[str, Any] = response.json()
    return response.headers["x-request-id"], body


Row = tuple[str, str, str, str, list[str]]


async def records(api: Any, request_id: str | None = None) -> list[Row]:
    """(actor, role, operation, action, student ids) of the stored records, oldest
    first; only those of one request when given (the seeded database is shared)."""
    where = "WHERE request_id = :rid " if request_id is not None else ""
    async with api.services.database.sessions() as session:
        rows = await session.execute(
            text(
                "SELECT actor, role, operation, action, student_ids FROM audit_log "
                f"{where}ORDER BY id"
            ),
            {"rid": request_id} if request_id is not None else {},
        )
        return [(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]


def audit_entry(
    hour: int, actor: str, ids: tuple[str, ...], action: str = "read"
) -> NewAuditEntry:
    return NewAuditEntry(
        at=datetime(2026, 1, 1, hour),
        actor=actor,
        role="teacher" if actor.startswith("user:") else "admin",
        operation=f"op{hour}",
        action=action,
        request_id=f"req-{hour}-{actor}",
        student_ids=ids,
    )
