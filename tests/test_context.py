"""The context: a WebSocket operation's own context shares the connection's services,
viewer and subscriptions, and keeps its own loaders, rate and audit record."""

from __future__ import annotations

from resolvers import audit
from resolvers.cache import LocalCache
from resolvers.context import Context, Limits, OperationAudit, Services
from resolvers.loaders import CACHE_NAMES
from resolvers.viewer import Viewer

TEACHER = Viewer(identity="key:7", role="teacher", anonymous=False)


def connection_context() -> Context:
    services = Services(
        database=None,  # type: ignore[arg-type]  # never reached: loaders are lazy
        cache=LocalCache(CACHE_NAMES, maxsize=10, ttl=60),
        limits=Limits(),
    )
    return services.context(viewer=TEACHER, request_id="r1", over_http=False)


def test_an_operation_context_shares_the_connection_and_keeps_its_own_state():
    connection = connection_context()

    first, second = connection.for_operation(), connection.for_operation()
    first.connection.subscriptions += 1

    assert first.services is connection.services
    assert (first.viewer, first.request_id, first.over_http) == (TEACHER, "r1", False)
    assert first.connection is second.connection is connection.connection
    assert connection.connection.subscriptions == 1
    assert first.loaders is not second.loaders
    assert first.loaders is not connection.loaders
    assert (first.rate, first.operation) == (None, None)


def test_concurrent_operations_note_their_own_students():
    connection = connection_context()
    first, second = connection.for_operation(), connection.for_operation()
    first.operation = OperationAudit(lambda: "query:grades")
    second.operation = OperationAudit(lambda: "query:student")

    audit.note(first, "S1")
    audit.note_many(second, ["S2", "S3"])
    audit.note(connection, "S4")  # outside an operation: nothing to record

    assert first.operation.unrecorded() == {"S1"}
    assert second.operation.unrecorded() == {"S2", "S3"}
    assert audit.operation_name(first, "default") == "query:grades"
    assert audit.operation_name(connection, "default") == "default"
