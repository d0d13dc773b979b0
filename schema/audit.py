"""The FERPA audit log in the schema: the extension that records each response's
students before it goes out, the AuditEntry type and the auditLog query."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import datetime
from enum import Enum
from typing import Annotated, Any

import strawberry
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    SelectionSetNode,
)
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext

from db.audit import AuditRecord
from resolvers import audit
from resolvers.context import Context
from resolvers.pagination import Page
from schema.common import PageInfo, ctx
from schema.limits import select_operation

log = logging.getLogger("gradepulse.audit")


def operation_label(context: ExecutionContext) -> str:
    """The operation as the audit log names it: its name when it has one, otherwise
    its type and root fields, e.g. "query:students" or "mutation:gradeAdd"."""
    if name := context.operation_name:
        return name
    document = context.graphql_document
    operation = select_operation(document, None) if document is not None else None
    if document is None or operation is None:
        return "unknown"
    fragments = {
        d.name.value: d
        for d in document.definitions
        if isinstance(d, FragmentDefinitionNode)
    }
    fields: dict[str, None] = {}
    _root_fields(operation.selection_set, fragments, fields, set())
    return f"{operation.operation.value}:{','.join(fields)}"


def _root_fields(
    selection_set: SelectionSetNode,
    fragments: dict[str, FragmentDefinitionNode],
    found: dict[str, None],
    seen: set[str],
) -> None:
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            if not selection.name.value.startswith("__"):
                found[selection.name.value] = None
        elif isinstance(selection, InlineFragmentNode):
            _root_fields(selection.selection_set, fragments, found, seen)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name in fragments and name not in seen:
                seen.add(name)
                _root_fields(fragments[name].selection_set, fragments, found, seen)


class AuditExtension(SchemaExtension):
    """Records the students an operation returned before its result goes out; when
    the record cannot be committed, the result loses its data.

    Over HTTP the result is returned after on_operation ends; over a WebSocket each
    result is sent from inside it, after on_stream_result. Whichever comes first
    records (once). Subscription events of gradeEvents are recorded by the resolver
    itself, each before it is yielded."""

    def __init__(self) -> None:
        self.operation: audit.OperationAudit | None = None

    def _context(self) -> Context | None:
        context = self.execution_context.context
        return context if isinstance(context, Context) else None

    async def on_operation(self) -> AsyncIterator[None]:
        context = self._context()
        if context is None:
            yield
            return
        execution_context = self.execution_context
        self.operation = audit.OperationAudit(
            lambda: operation_label(execution_context)
        )
        token = audit.begin_operation(self.operation)
        try:
            yield
        finally:
            audit.end_operation(token)
        await self._settle(execution_context.result)

    async def on_stream_result(self, result: Any) -> None:
        await self._settle(result)

    async def _settle(self, result: Any) -> None:
        context, operation = self._context(), self.operation
        if context is None or operation is None or result is None:
            return
        students = operation.unrecorded()
        if not students:
            return
        try:
            await audit.record_read(context, students, operation.name)
        except Exception as exc:
            # The type only: a driver's message can quote the statement's values.
            log.warning(
                "response withheld, audit record failed: %s", type(exc).__name__
            )
            withhold(result, context.request_id)


def withhold(result: Any, request_id: str | None) -> None:
    """No data, and one error saying why: partial data or other errors could carry
    what the record did not cover."""
    extensions: dict[str, Any] = {"code": audit.AuditUnavailable.code}
    if request_id:
        extensions["requestId"] = request_id
    result.data = None
    result.errors = [GraphQLError(audit.UNAVAILABLE_MESSAGE, extensions=extensions)]


AuditAction = strawberry.enum(
    Enum("AuditAction", {"READ": audit.READ, "WRITE": audit.WRITE}),  # type: ignore[misc]
    name="AuditAction",
    description="READ: a response or subscription event returned the students' "
    "grades or analytics. WRITE: their grades were added, changed or deleted.",
)


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
    action: AuditAction = strawberry.field(description="READ or WRITE.")  # type: ignore[valid-type]
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
            edges=[
                AuditEntryEdge(cursor=cursor, node=AuditEntry.from_model(row))
                for row, cursor in zip(page.items, page.cursors, strict=True)
            ],
            page_info=PageInfo(has_next_page=page.has_next, end_cursor=page.end_cursor),
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
        recorded_since: Annotated[
            datetime | None, strawberry.argument(description="Recorded at or after.")
        ] = None,
        recorded_before: Annotated[
            datetime | None, strawberry.argument(description="Recorded before.")
        ] = None,
        first: Annotated[
            int, strawberry.argument(description="Page size, 1 to 100.")
        ] = 20,
        after: Annotated[
            str | None,
            strawberry.argument(description="The endCursor of the previous page."),
        ] = None,
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
