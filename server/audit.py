"""The schema extension that records each response's students in the FERPA audit
log before the response goes out, and withholds the data when it cannot."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    SelectionSetNode,
    get_operation_ast,
)
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext

from resolvers import audit
from resolvers.context import Context, OperationAudit
from server.errors import coded_error

log = logging.getLogger("gradepulse.audit")


def operation_label(context: ExecutionContext) -> str:
    """The operation as the audit log names it: its name when it has one, otherwise
    its type and root fields, e.g. "query:students" or "mutation:gradeAdd"."""
    if name := context.operation_name:
        return name
    document = context.graphql_document
    return "unknown" if document is None else label_of(document, None)


def label_of(document: DocumentNode, operation_name: str | None) -> str:
    """operation_label for a parsed document and the operationName a request gave."""
    if operation_name:
        return operation_name
    operation = get_operation_ast(document)
    if operation is None:
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
        self.operation: OperationAudit | None = None
        # Started on a context that already runs an operation: nothing goes out.
        self.shared = False

    def _context(self) -> Context | None:
        context = self.execution_context.context
        return context if isinstance(context, Context) else None

    async def on_operation(self) -> AsyncIterator[None]:
        context = self._context()
        if context is None:
            yield
            return
        execution_context = self.execution_context
        if context.operation is not None and context.operation.running:
            # Two operations on one context would share one record, and one of
            # them could go out unrecorded: this one returns nothing.
            log.error("an operation started on a context already running one")
            self.shared = True
            yield
            if execution_context.result is not None:
                withhold(execution_context.result, context.request_id)
            return
        # The operation's record lives on its context: over HTTP each operation
        # has one, and so does each operation of a WebSocket (server/build.py). It
        # stays there: work the operation started (an import) writes under its name.
        self.operation = context.operation = OperationAudit(
            lambda: operation_label(execution_context)
        )
        try:
            yield
        finally:
            self.operation.running = False
        await self._settle(execution_context.result)

    async def on_stream_result(self, result: Any) -> None:
        if self.shared:
            withhold(result, getattr(self._context(), "request_id", None))
            return
        await self._settle(result)

    async def _settle(self, result: Any) -> None:
        context, operation = self._context(), self.operation
        if context is None or operation is None or result is None:
            return
        await settle(context, operation, result)


async def settle(context: Context, operation: OperationAudit, result: Any) -> None:
    """Record the students the result returns (once); withhold its data when the
    record cannot be committed."""
    students = operation.unrecorded()
    if not students:
        return
    try:
        await audit.record_read(context, students, operation.name)
    except Exception as exc:
        # The type only: a driver's message can quote the statement's values.
        log.warning("response withheld, audit record failed: %s", type(exc).__name__)
        withhold(result, context.request_id)


def withhold(result: Any, request_id: str | None) -> None:
    """No data, and one error saying why: partial data or other errors could carry
    what the record did not cover."""
    error = coded_error(
        audit.AuditUnavailable.code, audit.UNAVAILABLE_MESSAGE, request_id
    )
    result.data = None
    result.errors = [GraphQLError(error["message"], extensions=error["extensions"])]
