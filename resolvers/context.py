"""The per-request context: database, loaders, shared cache, limits and the viewer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from db.engine import Database
from monitoring.monitor import Monitor
from resolvers.cache import SharedCache
from resolvers.errors import Forbidden
from resolvers.jobs import ImportJobs
from resolvers.loaders import Loaders, make_loaders

if TYPE_CHECKING:
    from resolvers.audit import AuditLog
    from resolvers.auth import Authenticator
    from resolvers.ratelimit import RateLimiter, RateState

Role = Literal["admin", "teacher", "student"]
ROLES: tuple[Role, ...] = ("admin", "teacher", "student")


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is asking: `identity` names them in the audit log and keys their rate
    budget ("key:<id>", "user:<sub>", or "ip:<address>" when anonymous). Anonymous
    callers exist only where AUTH_REQUIRED is off, and then act as admin.
    `expires_at` (epoch seconds) is when the credential behind the viewer expires,
    None when it does not: a WebSocket connection ends then."""

    identity: str = "anonymous"
    role: Role = "admin"
    student_id: str | None = None
    grade_levels: frozenset[int] | None = None
    anonymous: bool = True
    expires_at: float | None = None

    def require(self, *roles: Role) -> None:
        if self.role not in roles:
            raise Forbidden(f"the {self.role} role may not do this")

    def may_write_level(self, grade_level: int) -> bool:
        if self.role == "admin":
            return True
        if self.role == "teacher":
            return self.grade_levels is None or grade_level in self.grade_levels
        return False

    def may_read(self, student_id: str, grade_level: int) -> bool:
        """Whether the viewer may read this student's record, grades and analytics."""
        if self.role == "student":
            return student_id == self.student_id
        return self.may_write_level(grade_level)

    @property
    def readable_levels(self) -> frozenset[int] | None:
        """Lists show only students of these grade levels; None: every level."""
        return self.grade_levels if self.role == "teacher" else None

    @property
    def readable_students(self) -> frozenset[str] | None:
        """Lists show only these students (a student's own id); None: anyone."""
        if self.role != "student":
            return None
        return frozenset({self.student_id}) if self.student_id else frozenset()


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
    # Security (issue 5): the caller's address and the rate budget after this
    # operation's charge.
    client_host: str | None = None
    rate: RateState | None = None
    authenticator: Authenticator | None = None
    rate_limiter: RateLimiter | None = None
    audit: AuditLog | None = None

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
    authenticator: Authenticator | None = None
    rate_limiter: RateLimiter | None = None
    audit: AuditLog | None = None

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
            client_host=client_host,
            authenticator=self.authenticator,
            rate_limiter=self.rate_limiter,
            audit=self.audit,
        )
