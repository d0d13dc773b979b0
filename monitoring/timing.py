"""The schema extension that times operations and resolvers and prices operations.

Registered as a factory (`partial(OperationMonitor, monitor=..., server_errors=...)`):
one instance per operation. DB statements are attributed to the operation that ran
them through monitoring/tally.py."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection, Iterator
from typing import Any

from graphql import GraphQLField, GraphQLResolveInfo, OperationType
from strawberry.extensions import SchemaExtension

from monitoring.monitor import Monitor
from monitoring.tally import Tally, current_tally


def is_default_resolver(field: GraphQLField) -> bool:
    """Whether the field is one of Strawberry's basic attribute fields (no resolver
    of its own). Strawberry 0.341.2 marks their resolve function with the private
    attribute `_is_default` and has no public way to tell: this is the one place
    that reads it."""
    return bool(getattr(field.resolve, "_is_default", False))


class OperationMonitor(SchemaExtension):
    """Times the operation and each non-trivial resolver; adds extensions.cost."""

    def __init__(self, *, monitor: Monitor, server_errors: Collection[str]) -> None:
        """`server_errors`: the codes that count as the server's failures (the
        error rate), as opposed to refused requests."""
        self.monitor = monitor
        self.server_errors = server_errors
        self.tally = Tally()

    def _over_http(self) -> bool:
        return bool(getattr(self.execution_context.context, "over_http", True))

    def on_operation(self) -> Iterator[None]:
        token = current_tally.set(self.tally)
        started = time.perf_counter()
        try:
            yield
        finally:
            duration = time.perf_counter() - started
            # A subscription's stream may be closed from another task (or by the
            # event loop's finalizer): that context never saw our token.
            with contextlib.suppress(ValueError):
                current_tally.reset(token)
            self._finish(duration)

    def _finish(self, duration: float) -> None:
        context = self.execution_context
        try:
            operation_type = context.operation_type.value
        except RuntimeError:  # the document did not parse or names no operation
            operation_type = "unknown"
        result = context.result
        errors = getattr(result, "errors", None) or []
        failed = any(
            (error.extensions or {}).get("code") in self.server_errors
            for error in errors
        )
        over_http = self._over_http()
        state = getattr(context.context, "request_state", None)
        if isinstance(state, dict):  # for the access log line
            state["operation"] = context.operation_name
        self.monitor.record_operation(
            operation_type=operation_type,
            operation=context.operation_name,
            duration_s=duration,
            failed=failed,
            over_http=over_http,
            db_queries=self.tally.db_queries,
        )

    def get_results(self) -> dict[str, Any]:
        return {
            "cost": self.monitor.price(
                self.tally.db_queries, 1 if self._over_http() else 0
            )
        }

    def resolve(
        self,
        _next: Callable[..., Any],
        root: Any,
        info: GraphQLResolveInfo,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        field_def = info.parent_type.fields.get(info.field_name)
        if (
            field_def is None
            or is_default_resolver(field_def)
            # Each subscription event re-reads the root field from the event itself:
            # trivial, and it would cost every subscriber on every tick.
            or (
                info.operation.operation is OperationType.SUBSCRIPTION
                and info.path.prev is None
            )
        ):
            return _next(root, info, *args, **kwargs)
        name = f"{info.parent_type.name}.{info.field_name}"
        started = time.perf_counter()
        try:
            result = _next(root, info, *args, **kwargs)
        except BaseException:
            self.monitor.registry.record_resolver(name, time.perf_counter() - started)
            raise
        if isinstance(result, asyncio.Future):
            # A DataLoader's future: time it with a callback, not a coroutine per field.
            record = self.monitor.registry.record_resolver
            result.add_done_callback(
                lambda _: record(name, time.perf_counter() - started)
            )
            return result
        if info.is_awaitable(result):
            return self._timed(result, name, started)
        self.monitor.registry.record_resolver(name, time.perf_counter() - started)
        return result

    async def _timed(self, awaitable: Any, name: str, started: float) -> Any:
        try:
            return await awaitable
        finally:
            self.monitor.registry.record_resolver(name, time.perf_counter() - started)
