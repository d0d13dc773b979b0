"""The composition root: create_app(settings=None) wires engine, caches, schema, routes."""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import event, text
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from db.engine import Database, create_database, create_tables
from monitoring.alerts import AlertEngine, default_rules, parse_rules
from monitoring.costs import COSTS_HEADER, CostMeter
from monitoring.dashboard import DashboardPage
from monitoring.middleware import RequestMonitor, request_id_of
from monitoring.monitor import Monitor
from monitoring.prometheus import ScrapeTimeCollector, install_collectors, render
from monitoring.registry import Registry
from monitoring.sinks import FileSink
from monitoring.system import PsutilReader
from monitoring.timing import OperationMonitor
from resolvers.audit import AuditLog
from resolvers.auth import Authenticator, bearer_token, is_loopback
from resolvers.cache import LocalCache
from resolvers.context import Context, Limits, Services
from resolvers.errors import Unauthenticated
from resolvers.loaders import CACHE_NAMES
from resolvers.ratelimit import MemoryRateStore, RateLimiter
from schema import build_schema
from schema.http import UPLOAD_HEADER, GraphQLHTTP, HTTPLimits
from schema.limits import QueryLimits
from schema.websocket import (
    CONNECTION_INIT_TIMEOUT,
    KEEP_ALIVE_S,
    LegacyWSHandler,
    TextWebSocketAdapter,
    TransportWSHandler,
)
from settings import Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parent
STATIC = ROOT / "static"
try:
    VERSION = version("gradepulse")
except PackageNotFoundError:  # running from a checkout without `pip install -e .`
    VERSION = "unknown"
log = logging.getLogger("gradepulse")


class GraphQLView(GraphQL[Context, None]):
    """Strawberry's ASGI view for the WebSocket side of /graphql, and the offline
    GraphiQL page; schema/http.py answers HTTP operations."""

    websocket_adapter_class = TextWebSocketAdapter  # type: ignore[assignment]
    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyWSHandler

    def __init__(self, services: Services, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.services = services
        self._ide_html = (STATIC / "graphiql" / "graphiql.html").read_text()

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        state = request.scope.setdefault("state", {})
        request_id = state.get("request_id") or request_id_of(request.scope)
        client = request.client.host if request.client else None
        return self.services.context(
            request_id=request_id,
            over_http=False,  # this view serves WebSockets; HTTP is schema/http.py
            request_state=state,
            client_host=client,
        )

    async def render_graphql_ide(self, request: Request) -> Response:
        return HTMLResponse(self._ide_html)

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)


def configure_logging(settings: Settings) -> None:
    """Our loggers write to stderr unless the host configured them: the access log
    as bare JSON lines, everything else with level and logger name."""
    access = logging.getLogger("gradepulse.access")
    if not access.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.propagate = False
    access.setLevel(logging.INFO if settings.access_log else logging.WARNING)
    root = logging.getLogger("gradepulse")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.DEBUG if settings.debug else logging.INFO)
        root.propagate = False


def create_app(settings: Settings | None = None, *, audit: bool = True) -> Starlette:
    """`audit=False` exists for the bench's unaudited comparison only: operators
    cannot switch the FERPA audit log off."""
    settings = settings or load_settings()
    configure_logging(settings)
    database = create_database(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        busy_timeout_ms=settings.db_busy_timeout_ms,
    )
    cache = LocalCache(
        CACHE_NAMES, maxsize=settings.cache_size, ttl=settings.cache_ttl_seconds
    )
    sinks = (
        FileSink("alertLog", settings.alert_log_path),
        FileSink("costsCsv", settings.costs_csv_path, header=COSTS_HEADER),
    )
    monitor = build_monitor(settings, cache, *sinks)
    observe = settings.monitoring_enabled  # off only to measure what monitoring costs
    # The audit log writes through an engine of its own (resolvers/audit.py).
    audit_log = (
        AuditLog.connect(
            settings.database_url, busy_timeout_ms=settings.db_busy_timeout_ms
        )
        if audit
        else None
    )
    if observe:
        attach_statement_listener(database, monitor)
        if audit_log is not None:
            attach_statement_listener(audit_log.database, monitor)
    services = Services(
        database=database,
        cache=cache,
        limits=Limits(
            max_batch_size=settings.max_batch_size,
            at_risk_average=settings.at_risk_average,
            at_risk_trend=settings.at_risk_trend,
            max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
            max_subscriptions=settings.max_subscriptions,
            import_chunk_size=settings.import_chunk_size,
        ),
        monitor=monitor,
        audit=audit_log,
        authenticator=Authenticator(
            database,
            jwt_secret=settings.jwt_secret.get_secret_value()
            if settings.jwt_secret
            else None,
            jwt_audience=settings.jwt_audience,
            auth_required=settings.requires_auth,
            key_cache_ttl_s=settings.api_key_cache_ttl_s,
        ),
        rate_limiter=RateLimiter(
            MemoryRateStore(),
            student=settings.rate_limit_student,
            teacher=settings.rate_limit_teacher,
            admin=settings.rate_limit_admin,
        ),
    )
    schema = build_schema(
        expose_errors=settings.debug,
        audit=audit,
        limits=QueryLimits(
            max_depth=settings.max_depth,
            max_aliases=settings.max_aliases,
            max_tokens=settings.max_tokens,
            max_directives=settings.max_directives,
            max_document_chars=settings.max_document_chars,
            max_nesting=settings.max_nesting,
            max_cost=settings.max_cost,
            operation_timeout_s=settings.operation_timeout_s,
        ),
        introspection=settings.introspection,
        suggestions=settings.environment != "production",
        outer_extensions=[partial(OperationMonitor, monitor=monitor)]
        if observe
        else [],
    )
    view = GraphQLView(
        services,
        schema=schema,
        graphql_ide="graphiql" if settings.graphiql else None,
        # Browser pages on the CORS allow-list may open subscriptions too.
        allowed_origins=settings.cors_origin_list,
        connection_init_wait_timeout=CONNECTION_INIT_TIMEOUT,
        keep_alive=True,  # graphql-ws "ka" messages; graphql-transport-ws pings
        keep_alive_interval=KEEP_ALIVE_S,
        # resolvers/live.py counts subscriptions (not queries) against the limits
        max_subscriptions_per_connection=None,
    )
    install_collectors(
        monitor.registry.prometheus,
        ScrapeTimeCollector(
            cache_stats=monitor.cache_stats,
            cost_totals=lambda: cost_totals(monitor),
            alerts_firing=monitor.alerts.firing,  # type: ignore[attr-defined]
            active_subscriptions=lambda: monitor.registry.active_subscriptions,
        ),
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await create_tables(database)
        if audit_log is not None:
            audit_log.start()
        if observe:
            monitor.start()
        # Everything built so far lives as long as the process: keep it out of the
        # collector's generations so that full collections stay short (NOTES.md).
        gc.collect()
        gc.freeze()
        yield
        await services.imports.shutdown()
        if audit_log is not None:
            await audit_log.stop()
        await monitor.stop()
        await database.dispose()

    async def health(request: Request) -> JSONResponse:
        db = await _check_database(database)
        checks: dict[str, Any] = {"database": db}
        for sink in sinks:
            status = sink.status()
            checks[status.name] = {
                "status": "ok" if status.ok else "failing",
                "path": status.path,
                "failures": status.failures,
                "lastError": status.last_error,
            }
        ok = all(check["status"] == "ok" for check in checks.values())
        return JSONResponse(
            {
                "status": "ok" if ok else "degraded",
                "version": VERSION,
                "environment": settings.environment,
                "uptimeSeconds": round(monitor.registry.uptime_seconds(), 3),
                "checks": checks,
            }
        )

    async def live(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> JSONResponse:
        # Only the database takes the instance out of rotation; a failing sink
        # degrades /health but requests are still served.
        db = await _check_database(database)
        ok = db["status"] == "ok"
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "database": db},
            status_code=200 if ok else 503,
        )

    async def health_db(request: Request) -> JSONResponse:
        db = await _check_database(database)
        return JSONResponse(db, status_code=200 if db["status"] == "ok" else 503)

    metrics_token = (
        settings.metrics_token.get_secret_value() if settings.metrics_token else None
    )

    async def metrics(request: Request) -> Response:
        if refused := _refuse_metrics(request, metrics_token):
            return refused
        body, content_type = render(monitor.registry.prometheus)
        return Response(body, media_type=content_type)

    http_endpoint = GraphQLHTTP(
        schema=schema,
        services=services,
        limits=HTTPLimits(
            max_body_bytes=settings.max_body_bytes,
            max_upload_bytes=settings.max_upload_bytes,
            operation_timeout_s=settings.operation_timeout_s,
            batching_enabled=settings.batching_enabled,
            max_batch_operations=settings.max_batch_operations,
        ),
        render_ide=view.render_graphql_ide if settings.graphiql else None,
    )

    app = Starlette(
        debug=False,
        lifespan=lifespan,
        middleware=middleware(settings, monitor.registry if observe else None),
        routes=[
            # Every method: the endpoint answers 405 with its own Allow header.
            Route("/graphql", http_endpoint),
            WebSocketRoute("/graphql", view),
            Route("/health", health),
            Route("/health/live", live),
            Route("/health/ready", ready),
            Route("/health/db", health_db),
            Route("/metrics", metrics),
            Route(
                "/dashboard",
                DashboardPage(
                    environment=settings.environment,
                    auth_required=settings.requires_auth,
                    # the rules as parsed (ALERT_RULES applied; disabled ones absent)
                    thresholds={r.id: r.threshold for r in monitor.alerts.rules},  # type: ignore[attr-defined]
                ),
            ),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
    )
    app.state.services = services
    app.state.schema = schema
    app.state.settings = settings
    app.state.monitor = monitor
    return app


def middleware(settings: Settings, registry: Registry | None) -> list[Middleware]:
    """Outermost first: the request log sees every answer, including refused hosts."""
    stack = []
    if registry is not None:
        stack.append(Middleware(RequestMonitor, registry=registry))
    # A rebound DNS name must not reach the anonymous loopback admin: the Host header
    # is checked in every profile (WebSocket handshakes included).
    stack.append(
        Middleware(
            TrustedHostMiddleware,
            allowed_hosts=settings.trusted_host_list,
            www_redirect=False,
        )
    )
    if origins := settings.cors_origin_list:
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["GET", "POST"],
                allow_headers=[
                    "Authorization",
                    "Content-Type",
                    "Accept",
                    "X-Request-ID",
                    UPLOAD_HEADER,
                ],
                expose_headers=[
                    "RateLimit",
                    "RateLimit-Policy",
                    "Retry-After",
                    "X-Request-ID",
                    "Server-Timing",
                ],
                max_age=600,
            )
        )
    return stack


def _refuse_metrics(request: Request, token: str | None) -> Response | None:
    """/metrics answers loopback clients, and holders of METRICS_TOKEN when set."""
    if token is not None:
        try:
            given = bearer_token(request.headers.get("authorization", ""))
        except Unauthenticated:
            given = ""
        if hmac.compare_digest(given.encode(), token.encode()):
            return None
    client = request.client.host if request.client else None
    if is_loopback(client):
        return None
    if token is not None:
        return JSONResponse(
            {"error": "metrics need Authorization: Bearer <METRICS_TOKEN>"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    return JSONResponse(
        {"error": "metrics are answered to loopback clients only"}, status_code=403
    )


def build_monitor(
    settings: Settings, cache: LocalCache, alert_log: FileSink, costs_csv: FileSink
) -> Monitor:
    """The monitor with its sinks, cost meter and alert rules, from the settings."""
    defaults = default_rules(
        response_time_ms=settings.alert_response_time_ms,
        memory_mb=settings.alert_memory_mb,
        cost_per_hour=settings.alert_cost_per_hour,
    )
    try:
        rules = parse_rules(settings.alert_rules, defaults)
    except ValueError as exc:
        raise SettingsError(f"invalid settings: ALERT_RULES: {exc}") from None
    alerts = AlertEngine(
        rules,
        cooldown_seconds=settings.alert_cooldown_seconds,
        sink=alert_log,
    )
    costs = CostMeter(
        environment=settings.environment,
        cost_per_db_query=settings.cost_per_db_query,
        cost_per_100_requests=settings.cost_per_100_requests,
        interval_s=settings.cost_summary_interval_s,
        sink=costs_csv,
        state_path=settings.costs_csv_path + ".state.json",
    )

    def cache_stats() -> dict[str, tuple[int, int]]:
        return {name: (s.hits, s.misses) for name, s in cache.stats().items()}

    return Monitor(
        environment=settings.environment,
        registry=Registry(),
        costs=costs,
        alerts=alerts,
        system=PsutilReader(Path(settings.costs_csv_path).resolve().parent),
        cache_stats=cache_stats,
        interval_s=settings.sample_interval_ms / 1000,
    )


def attach_statement_listener(database: Database, monitor: Monitor) -> None:
    """Count every SQL statement (and its time) for the monitor and the cost meter."""
    engine = database.engine.sync_engine

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info.setdefault("gradepulse_started", []).append(time.perf_counter())

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        started = conn.info["gradepulse_started"].pop()
        monitor.on_statement(statement, time.perf_counter() - started)


def cost_totals(monitor: Monitor) -> dict[str, float]:
    snapshot = monitor.costs.snapshot()
    return {
        "db": snapshot.db_cost,
        "api": snapshot.api_cost,
        "total": snapshot.total_cost,
    }


DB_CHECK_TIMEOUT_S = 1.0


async def _check_database(database: Database) -> dict[str, Any]:
    """SELECT 1 within a second; slower or failing is "unavailable"."""
    started = time.perf_counter()

    async def probe() -> None:
        async with database.sessions() as session:
            await session.execute(text("SELECT 1"))

    try:
        await asyncio.wait_for(probe(), DB_CHECK_TIMEOUT_S)
    except Exception as exc:
        log.warning("database check failed: %s", type(exc).__name__)
        return {"status": "unavailable", "dialect": database.dialect}
    latency = (time.perf_counter() - started) * 1000
    return {"status": "ok", "dialect": database.dialect, "latencyMs": round(latency, 3)}


def main() -> None:
    import sys

    import uvicorn

    try:
        settings = load_settings()
    except SettingsError as exc:
        sys.exit(str(exc))
    logging.basicConfig(level=logging.DEBUG if settings.debug else logging.INFO)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ws="websockets-sansio",
        # Feed messages are small JSON: compressing each frame cost more CPU than the
        # whole GraphQL execution of a metrics event (measured with 1,000 subscribers).
        ws_per_message_deflate=False,
        log_level="info",
        # RequestMonitor writes the access log, without query strings (a GET query
        # may search by email).
        access_log=False,
    )


if __name__ == "__main__":
    main()
