"""The FERPA audit log: AuditEntry and AuditQuery (server/audit.py records it)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated

import strawberry

from resolvers import audit
from resolvers.audit import AuditRecord
from resolvers.pagination import Page
from schema.common import (
    After,
    First,
    PageInfo,
    RecordedBefore,
    RecordedSince,
    ctx,
    edges,
)


@strawberry.enum(
    description="READ: a response or subscription event returned the students' "
    "grades or analytics. WRITE: their grades were added, changed or deleted."
)
class AuditAction(Enum):
    READ = audit.READ
    WRITE = audit.WRITE


@strawberry.type(
    description="One audit record: who received (or wrote) which students' grades "
    "or analytics, in which operation and request, and when."
)
class AuditEntry:
    at: datetime = strawberry.field(description="When (UTC).")
    actor: str = strawberry.field(
        description='Who: "key:<id>", "user:<sub>", or "ip:<address>" when anonymous.'
    )
    role: str = strawberry.field(
        description="The actor's role: admin, teacher or student."
    )
    operation: str = strawberry.field(
        description="The operation's name, or without one its type and root fields, "
        'e.g. "query:students".'
    )
    action: AuditAction = strawberry.field(description="READ or WRITE.")
    request_id: str | None = strawberry.field(
        description="The request id (X-Request-ID); a WebSocket connection's id for "
        "its operations."
    )
    student_ids: list[str] = strawberry.field(
        description="Every student of the response or write, sorted."
    )

    @classmethod
    def from_model(cls, row: AuditRecord) -> AuditEntry:
        return cls(
            at=row.at,
            actor=row.actor,
            role=row.role,
            operation=row.operation,
            action=AuditAction(row.action),
            request_id=row.request_id,
            student_ids=row.student_ids,
        )


@strawberry.type(description="An edge in an audit connection.")
class AuditEntryEdge:
    cursor: str = strawberry.field(description="Opaque position of this record.")
    node: AuditEntry = strawberry.field(description="The record.")


@strawberry.type(description="A page of audit records, newest first.")
class AuditEntryConnection:
    edges: list[AuditEntryEdge] = strawberry.field(
        description="The records on this page."
    )
    page_info: PageInfo = strawberry.field(description="Paging state.")
    _page: strawberry.Private[Page[AuditRecord]]

    @strawberry.field(description="How many records match the filters, on all pages.")
    async def total_count(self) -> int:
        return await self._page.count()

    @classmethod
    def from_page(cls, page: Page[AuditRecord]) -> AuditEntryConnection:
        return cls(
            edges=edges(page, AuditEntryEdge, AuditEntry.from_model),
            page_info=PageInfo.of(page),
            _page=page,
        )


@strawberry.type
class AuditQuery:
    @strawberry.field(
        description="The FERPA audit log, newest first; admins only (others get "
        "FORBIDDEN)."
    )
    async def audit_log(
        self,
        info: strawberry.Info,
        student_id: Annotated[
            str | None,
            strawberry.argument(description="Only records that include this student."),
        ] = None,
        actor: Annotated[
            str | None, strawberry.argument(description="Only this actor's records.")
        ] = None,
        recorded_since: RecordedSince = None,
        recorded_before: RecordedBefore = None,
        first: First = 20,
        after: After = None,
    ) -> AuditEntryConnection:
        page = await audit.list_audit_entries(
            ctx(info),
            student_id=student_id,
            actor=actor,
            recorded_since=recorded_since,
            recorded_before=recorded_before,
            first=first,
            after=after,
        )
        return AuditEntryConnection.from_page(page)
