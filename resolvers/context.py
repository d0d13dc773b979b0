"""The per-request context: database, loaders, shared cache, limits and the viewer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from db.engine import Database
from monitoring.monitor import Monitor
from resolvers.cache import SharedCache
from resolvers.errors import Forbidden
from resolvers.jobs import ImportJobs
from resolvers.loaders import Loaders, make_loaders

Role = Literal["admin", "teacher", "student"]


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is asking. Until authentication exists every caller is an anonymous admin."""

    identity: str = "anonymous"
    role: Role = "admin"
    student_id: str | None = None
    grade_levels: frozenset[int] | None = None

    def require(self, *roles: Role) -> None:
        if self.role not in roles:
            raise Forbidden(f"the {self.role} role may not do this")

    def may_write_level(self, grade_level: int) -> bool:
        if self.role == "admin":
            return True
        if self.role == "teacher":
            return self.grade_levels is None or grade_level in self.grade_levels
        return False


@dataclass(frozen=True, slots=True)
class Limits:
    """Plain values handed down from the settings by the composition root."""

    max_batch_size: int = 5000
    at_risk_average: float = 65.0
    at_risk_trend: float = -2.0
    max_subscriptions_per_connection: int = 20
    max_subscriptions: int = 10_000
    import_chunk_size: int = 1000


@dataclass(slots=True)
class Context:
    database: Database
    cache: SharedCache
    limits: Limits
    loaders: Loaders
    monitor: Monitor | None = None
    viewer: Viewer = field(default_factory=Viewer)
    request_id: str | None = None
    # HTTP operations count as API requests; WebSocket events do not.
    over_http: bool = True
    # The HTTP middleware's per-request state (the operation name goes in its log line).
    request_state: dict[str, Any] | None = None
    # On a WebSocket one context serves the whole connection: its open subscriptions
    # and a way to close it (code, reason), set by the protocol handler.
    subscriptions: int = 0
    close_connection: Callable[[int, str], Awaitable[None]] | None = None
    # Background imports outlive the request that started them.
    imports: ImportJobs = field(default_factory=ImportJobs)

    def refresh_loaders(self) -> None:
        """New DataLoaders for the next operation or subscription event: a WebSocket
        context outlives many of them, and a loader caches what it loaded."""
        self.loaders = make_loaders(self.database, self.cache)


@dataclass(frozen=True, slots=True)
class Services:
    """What outlives requests; the app builds one and makes a Context per request."""

    database: Database
    cache: SharedCache
    limits: Limits
    monitor: Monitor | None = None
    imports: ImportJobs = field(default_factory=ImportJobs)

    def context(
        self,
        *,
        viewer: Viewer | None = None,
        request_id: str | None = None,
        over_http: bool = True,
        request_state: dict[str, Any] | None = None,
    ) -> Context:
        return Context(
            database=self.database,
            cache=self.cache,
            limits=self.limits,
            loaders=make_loaders(self.database, self.cache),
            monitor=self.monitor,
            viewer=viewer or Viewer(),
            request_id=request_id,
            over_http=over_http,
            request_state=request_state,
            imports=self.imports,
        )
