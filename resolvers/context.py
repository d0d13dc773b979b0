"""The per-request context: the services, loaders, viewer and operation audit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from db.audit import AuditLog
from db.engine import Database
from db.models import OPERATION_MAX
from monitoring.cluster import Worker
from monitoring.monitor import Monitor
from resolvers.cache import LOCAL_ONLY, InvalidationBus, SharedCache
from resolvers.jobs import ImportJobs
from resolvers.loaders import Loaders, make_loaders
from resolvers.viewer import Viewer

if TYPE_CHECKING:
    from resolvers.auth import Authenticator
    from resolvers.ratelimit import RateLimiter, RateState


@dataclass(frozen=True, slots=True)
class Limits:
    """Plain values handed down from the settings by the composition root."""

    max_batch_size: int = 5000
    at_risk_average: float = 65.0
    at_risk_trend: float = -2.0
    max_subscriptions_per_connection: int = 20
    max_subscriptions: int = 10_000
    max_subscriptions_per_identity: int = 100
    import_chunk_size: int = 1000


@dataclass(slots=True, eq=False)
class OperationAudit:
    """What one operation returned (`students`) and which students its writes
    already recorded in their own transactions (`written`); resolvers/audit.py
    decides what to record."""

    label: Callable[[], str]
    students: set[str] = field(default_factory=set)
    written: set[str] = field(default_factory=set)
    _name: str | None = None
    # Until the operation ends; a context runs one operation at a time.
    running: bool = True

    @property
    def name(self) -> str:
        if self._name is None:
            self._name = self.label()[:OPERATION_MAX]
        return self._name

    def unrecorded(self) -> set[str]:
        """The students to record now, once: a write record already covers the
        grades a mutation returns, in the same transaction as the data."""
        students = self.students - self.written
        self.students.clear()
        return students


@dataclass(slots=True)
class Connection:
    """What the operations of one WebSocket connection share: its open
    subscriptions and a way to close it (code, reason), set by the protocol handler.
    Over HTTP each context has one of its own."""

    subscriptions: int = 0
    close: Callable[[int, str], Awaitable[None]] | None = None
    closing: asyncio.Task[None] | None = None

    def close_soon(self, code: int, reason: str) -> asyncio.Task[None] | None:
        """Close the connection once, from code that may not wait (a queue that
        overflows); the task is kept here, and a second call returns it."""
        if self.closing is None and self.close is not None:
            self.closing = asyncio.get_running_loop().create_task(
                self.close(code, reason)
            )
        return self.closing


@dataclass(frozen=True, slots=True)
class Services:
    """What outlives requests; the app builds one and makes a Context per request."""

    database: Database
    cache: SharedCache
    limits: Limits
    monitor: Monitor | None = None
    imports: ImportJobs = field(default_factory=lambda: ImportJobs(Worker.here().id))
    authenticator: Authenticator | None = None
    rate_limiter: RateLimiter | None = None
    audit: AuditLog | None = None
    # Tells the other workers what a write invalidated (RedisInvalidations).
    invalidations: InvalidationBus = LOCAL_ONLY
    # Open subscriptions per identity on this worker (resolvers.live._slot).
    subscribers: dict[str, int] = field(default_factory=dict)

    def context(
        self,
        *,
        viewer: Viewer | None = None,
        request_id: str | None = None,
        over_http: bool = True,
        request_state: dict[str, Any] | None = None,
        client_host: str | None = None,
    ) -> Context:
        return Context(
            services=self,
            loaders=make_loaders(self.database, self.cache),
            viewer=viewer or Viewer(),
            request_id=request_id,
            over_http=over_http,
            request_state=request_state,
            client_host=client_host,
        )


@dataclass(slots=True)
class Context:
    """One request's (or one WebSocket operation's) view of the services."""

    services: Services
    loaders: Loaders
    viewer: Viewer = field(default_factory=Viewer)
    request_id: str | None = None
    # HTTP operations count as API requests; WebSocket events do not.
    over_http: bool = True
    # The HTTP middleware's per-request state (the operation name goes in its log line).
    request_state: dict[str, Any] | None = None
    connection: Connection = field(default_factory=Connection)
    # Security (issue 5): the caller's address and the rate budget after this
    # operation's charge.
    client_host: str | None = None
    rate: RateState | None = None
    # A charge made for this operation by the planned path, which then handed the
    # operation to the general path (server/pipeline.py): not charged again.
    precharged: RateState | None = None
    # Set once the operation's fields are counted (monitoring/usage.py), so that a
    # path that hands it over to another does not count them twice.
    usage_counted: bool = False
    # What the running operation returned, for the FERPA audit log (set by
    # server/audit.py's extension; None outside a GraphQL operation).
    operation: OperationAudit | None = None

    def for_operation(self) -> Context:
        """A context of its own for one operation of a WebSocket connection, whose
        operations run concurrently: fresh DataLoaders, its own rate and audit
        record, the connection's viewer and (shared) Connection. A charge already
        made for the operation (`precharged`) goes with it."""
        return replace(
            self,
            loaders=make_loaders(self.services.database, self.services.cache),
            rate=None,
            operation=None,
        )

    def refresh_loaders(self) -> None:
        """New DataLoaders for the next subscription event: a subscription's context
        outlives many of them, and a loader caches what it loaded."""
        self.loaders = make_loaders(self.services.database, self.services.cache)
