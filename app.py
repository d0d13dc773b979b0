"""The composition root: create_app(settings=None) wires engine, caches, schema, routes."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy import event
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from db.audit import AuditLog
from db.backup import BackupError, hold_serving
from db.costs import CostLedger
from db.engine import Database, create_database, ping
from db.migrations import MigrationError, revision, upgrade
from db.usage import UsageLedger
from monitoring.alerts import (
    HIGH_COST,
    AlertEngine,
    AlertRule,
    default_rules,
    parse_rules,
)
from monitoring.bus import EventBus
from monitoring.bus_redis import RedisBus
from monitoring.cluster import Cluster, Worker
from monitoring.costs import COSTS_HEADER, CostMeter
from monitoring.dashboard import DashboardPage, dashboard_documents
from monitoring.health import Health
from monitoring.leader import Leadership
from monitoring.middleware import AccessLines, RequestId, RequestMonitor
from monitoring.monitor import CODECS as MONITOR_CODECS
from monitoring.monitor import SNAPSHOTS, Monitor
from monitoring.prometheus import ScrapeTimeCollector, install_collectors
from monitoring.registry import Registry
from monitoring.sinks import FileSink
from monitoring.subscriber import RedisSubscriber
from monitoring.system import PsutilReader
from monitoring.usage import FieldUsageMeter
from resolvers.auth import Authenticator
from resolvers.cache import LOCAL_ONLY, InvalidationBus, LocalCache
from resolvers.cache_redis import RedisInvalidations
from resolvers.context import Limits, Services
from resolvers.errors import SERVER_ERROR_CODES
from resolvers.import_runner import start_keeper
from resolvers.jobs import ImportJobs
from resolvers.live import CODECS as LIVE_CODECS
from resolvers.live import GRADES
from resolvers.loaders import CACHE_NAMES, apply_invalidation
from resolvers.ordering import GradeOrder
from resolvers.ratelimit import MemoryRateStore, RateLimiter, RateStore
from resolvers.ratelimit_redis import RedisRateStore
from server.asgi import App, TrustedHosts
from server.build import GradePulseSchema, build_schema, declare_usage
from server.endpoint import GraphQLEndpoint
from server.http import UPLOAD_HEADER, HTTPLimits
from server.limits import QueryLimits
from server.metrics import MetricsEndpoint
from server.persisted import (
    DocumentStore,
    ManifestError,
    MemoryDocuments,
    PersistedOperations,
    RedisDocuments,
    check_manifest,
    document_hash,
)
from server.slowclients import RequestTimeoutProtocol, SendTimeoutProtocol
from settings import Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parent
STATIC = ROOT / "static"
try:
    VERSION = version("gradepulse")
except PackageNotFoundError:  # running from a checkout without `pip install -e .`
    VERSION = "unknown"
log = logging.getLogger("gradepulse")
MIGRATE_COMMAND = "gradepulse migrate (make migrate)"
# A dead or unreachable Redis answers an operation within this long instead of
# hanging it (connect and every read); the rate store then charges locally.
REDIS_TIMEOUT_S = 0.5
# Connections per worker. Past them an operation waits (up to REDIS_TIMEOUT_S) for
# one to be free: commands take well under a millisecond, and a pool that refused
# instead would look like a Redis that is down.
REDIS_CONNECTIONS = 50
# At SIGTERM a request in flight has OPERATION_TIMEOUT_S plus this long to answer.
DRAIN_MARGIN_S = 1.0


class StartRefused(Exception):
    """The server must not start against this database; the message is one line."""


def configure_logging(settings: Settings) -> None:
    """Our loggers write to stderr unless the host configured them: the access log
    as bare JSON lines, everything else with level and logger name."""
    access = logging.getLogger("gradepulse.access")
    if not access.handlers:
        access.addHandler(AccessLines())  # one write per batch of lines
        access.propagate = False
    access.setLevel(logging.INFO if settings.access_log else logging.WARNING)
    root = logging.getLogger("gradepulse")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.DEBUG if settings.debug else logging.INFO)
        root.propagate = False


# A request's wait for SQLite's write lock ends this far into its operation's time.
BUSY_SHARE = 0.8


def request_busy_timeout_ms(settings: Settings) -> int:
    """The SQLite busy timeout of the engines that serve requests: at most 80% of
    OPERATION_TIMEOUT_S. A write kept waiting by another process's lock then gives up
    (DB_UNAVAILABLE) while its operation may still answer: cancelled at the deadline
    instead, its rollback would queue behind the wait on the connection's thread and
    the answer come only when the busy timeout ran out."""
    return min(
        settings.db_busy_timeout_ms,
        int(settings.operation_timeout_s * 1000 * BUSY_SHARE),
    )


def create_app(settings: Settings | None = None, *, audit: bool = True) -> Starlette:
    """`audit=False` exists for the bench's unaudited comparison only: operators
    cannot switch the FERPA audit log off."""
    settings = settings or load_settings()
    configure_logging(settings)
    database = create_database(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        busy_timeout_ms=request_busy_timeout_ms(settings),
    )
    cache = LocalCache(
        CACHE_NAMES, maxsize=settings.cache_size, ttl=settings.cache_ttl_seconds
    )
    sinks = (
        FileSink("alertLog", settings.alert_log_path),
        FileSink("costsCsv", settings.costs_csv_path, header=COSTS_HEADER),
    )
    redis = connect_redis(settings)
    cluster = cluster_for(settings, redis)
    subscriber = redis_subscriber(settings, redis, cluster.worker)
    monitor = build_monitor(
        settings,
        cache,
        *sinks,
        bus=event_bus(settings, redis, cluster.worker, subscriber),
        cluster=cluster,
        redis=redis,
    )
    observe = settings.monitoring_enabled  # off only to measure what monitoring costs
    # The audit log writes through an engine of its own (db/audit.py).
    audit_log = (
        AuditLog.connect(
            settings.database_url, busy_timeout_ms=request_busy_timeout_ms(settings)
        )
        if audit
        else None
    )
    if observe:
        attach_statement_listener(database, monitor)
        if audit_log is not None:
            attach_statement_listener(audit_log.database, monitor)
    services = build_services(
        settings,
        database,
        cache,
        monitor,
        audit_log,
        redis,
        cluster.worker.id,
        subscriber,
    )
    schema = build_schema_for(settings, monitor if observe else None, audit=audit)
    declare_usage(schema, monitor)
    install_collectors(monitor.registry.prometheus, scrape_collector(monitor))

    app = App(
        debug=False,
        direct=["/graphql"],
        lifespan=partial(
            running,
            database,
            services,
            monitor,
            audit_log,
            redis,
            environment=settings.environment,
            observe=observe,
            cluster=cluster,
            subscriber=subscriber,
            gc_thresholds=settings.gc_thresholds,
        ),
        middleware=middleware(settings, monitor.registry if observe else None),
        routes=build_routes(
            settings, database, services, schema, monitor, sinks, redis, cluster
        ),
    )
    app.state.services = services
    app.state.schema = schema
    app.state.settings = settings
    app.state.monitor = monitor
    app.state.cluster = cluster
    app.state.subscriber = subscriber
    return app


@asynccontextmanager
async def running(
    database: Database,
    services: Services,
    monitor: Monitor,
    audit_log: AuditLog | None,
    redis: Redis | None,
    app: Starlette,
    *,
    environment: str,
    observe: bool,
    cluster: Cluster,
    subscriber: RedisSubscriber | None = None,
    gc_thresholds: tuple[int, int, int] | None = None,
) -> AsyncIterator[None]:
    """The lifespan: the schema checked (or migrated), then the audit writer and the
    monitor run while the app does (with the collector's `gc_thresholds`)."""
    try:
        await prepare_schema(database, environment)
    except BaseException:  # refused: close what create_app opened, then stop
        if audit_log is not None:
            await audit_log.stop()
        await services.imports.shutdown()
        await monitor.costs.aclose()
        await monitor.usage.aclose()
        await database.dispose()
        if subscriber is not None:
            await subscriber.stop()
        if redis is not None:
            await redis.aclose()
        raise
    if audit_log is not None:
        audit_log.start()
    monitor.bus.start()
    if subscriber is not None:
        # One connection for the bus's topics and the cache invalidations; its
        # first subscription clears the caches.
        subscriber.start()
    if observe:
        # The cluster's cost meter read once before serving (bounded in time).
        await monitor.read_costs()
        monitor.start()
    start_keeper(services)  # import job leases and takeovers
    # Everything built so far lives as long as the process: keep it out of the
    # collector's generations, so that full collections stay short.
    gc.collect()
    gc.freeze()
    if gc_thresholds is not None:
        gc.set_threshold(*gc_thresholds)
    yield
    # Running imports are handed over (their leases released), not cancelled.
    await services.imports.shutdown()
    if audit_log is not None:
        await audit_log.stop()
    await monitor.stop()
    await monitor.leader.release()  # another worker leads from its next tick
    await monitor.costs.aclose()
    await monitor.usage.aclose()
    await cluster.leave()  # the other workers stop listing this one at once
    await monitor.bus.stop()  # before the client it publishes through is closed
    if subscriber is not None:
        await subscriber.stop()  # bounded, and closes its own connection
    await database.dispose()
    if redis is not None:
        await redis.aclose()
    for handler in logging.getLogger("gradepulse.access").handlers:
        handler.flush()  # the access lines still waiting for their batch


def connect_redis(settings: Settings) -> Redis | None:
    """The worker's one Redis client when REDIS_URL is set. It connects on first use,
    not here; a failed command is not retried by the client (the callers fall back
    and try again by themselves), so a dead Redis costs about REDIS_TIMEOUT_S."""
    if settings.redis_url is None:
        return None
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=REDIS_CONNECTIONS,
        timeout=REDIS_TIMEOUT_S,
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )
    return Redis.from_pool(pool)


def cluster_for(
    settings: Settings, redis: Redis | None, worker: Worker | None = None
) -> Cluster:
    """This worker (a new id at every start) and, with Redis, its heartbeat."""
    return Cluster(
        worker or Worker.here(),
        redis,
        prefix=settings.redis_prefix,
        interval_s=settings.sample_interval_ms / 1000,
    )


def redis_subscriber(
    settings: Settings, redis: Redis | None, worker: Worker
) -> RedisSubscriber | None:
    """The worker's one pub/sub connection (the bus and the cache invalidations
    listen on it), named after the worker in Redis's CLIENT LIST."""
    if redis is None:
        return None
    return RedisSubscriber(redis, name=f"{settings.redis_prefix}worker:{worker.id}")


def event_bus(
    settings: Settings,
    redis: Redis | None,
    worker: Worker,
    subscriber: RedisSubscriber | None = None,
) -> EventBus:
    """In process, or shared by the workers through Redis pub/sub: alerts, grade
    events, import progress and each worker's sample cross workers."""
    bus = (
        EventBus()
        if redis is None or subscriber is None
        else RedisBus(
            redis,
            subscriber,
            prefix=settings.redis_prefix,
            origin=worker.id,
            codecs={**MONITOR_CODECS, **LIVE_CODECS},
            timeout_s=REDIS_TIMEOUT_S,
        )
    )
    # Each student's grade events in commit order, from whichever worker (even in
    # one process, two writes' publishes may run in the other order).
    bus.sequence(GRADES, GradeOrder())
    return bus


async def heartbeat(cluster: Cluster, monitor: Monitor) -> None:
    """Say this worker is alive (and renew its leader lease beside it), then read
    which others are: the monitor merges only listed workers (and those heard of
    in the last tick)."""
    await asyncio.gather(cluster.beat(), monitor.leader.renew())
    if monitor.bus.crosses(SNAPSHOTS):
        read_at = monitor.registry.clock()
        monitor.peers.members(await cluster.workers(), read_at)


def invalidation_bus(
    settings: Settings,
    redis: Redis | None,
    cache: LocalCache,
    worker_id: str,
    subscriber: RedisSubscriber | None = None,
) -> InvalidationBus:
    """Cache invalidations reach this worker only, or every worker through Redis."""
    if redis is None or subscriber is None:
        return LOCAL_ONLY
    return RedisInvalidations(
        redis,
        subscriber,
        prefix=settings.redis_prefix,
        origin=worker_id,
        apply=partial(apply_invalidation, cache),
        clear=cache.clear,
    )


def rate_store(settings: Settings, redis: Redis | None) -> RateStore:
    """Buckets in this process, or shared by the cluster through Redis (and while
    Redis is down, buckets in this process of 1/WORKERS of the budget)."""
    if redis is None:
        return MemoryRateStore()
    return RedisRateStore(
        redis,
        prefix=settings.redis_prefix,
        fallback=MemoryRateStore(),
        workers=settings.workers,
    )


async def prepare_schema(database: Database, environment: str) -> None:
    """Development migrates to head, once for the whole cluster (under a database
    lock); staging and production only check, and refuse a database not at head."""
    try:
        if environment == "development":
            done = await upgrade(database)
            if done.stamped:
                log.info("database made before migrations: stamped at %s", done.after)
            elif done.changed:
                log.info("database migrated from %s to %s", done.before, done.after)
            return
        state = await revision(database)
    except MigrationError as exc:
        raise StartRefused(f"refusing to start: {exc}") from None
    if not state.at_head:
        raise StartRefused(
            f"refusing to start: the database is at migration {state.current or 'none'}"
            f", not at the latest ({state.head}): run {MIGRATE_COMMAND} first"
        )


def trusted_documents(settings: Settings) -> dict[str, str]:
    """The dashboard's documents and PERSISTED_OPERATIONS_MANIFEST's; StartRefused
    with the reason when the manifest cannot be used."""
    documents = {document_hash(text): text for text in dashboard_documents().values()}
    if settings.persisted_operations_manifest is not None:
        source = Path(settings.persisted_operations_manifest)
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
            documents.update(check_manifest(data, str(source)))
        except OSError as exc:
            raise StartRefused(
                f"refusing to start: PERSISTED_OPERATIONS_MANIFEST {source}: "
                f"{exc.strerror or exc}"
            ) from None
        except ValueError as exc:  # not JSON (or not UTF-8)
            raise StartRefused(
                f"refusing to start: PERSISTED_OPERATIONS_MANIFEST {source} is not "
                f"JSON: {exc}"
            ) from None
        except ManifestError as exc:
            raise StartRefused(
                f"refusing to start: PERSISTED_OPERATIONS_MANIFEST {exc}"
            ) from None
    return documents


def persisted_operations(
    settings: Settings, redis: Redis | None, monitor: Monitor, schema: GradePulseSchema
) -> PersistedOperations:
    """Trusted documents and automatic persisted queries (Redis when configured);
    a document is kept only if it parses within the schema's limits."""
    documents = schema.documents
    assert documents is not None  # build_schema gives every schema its Documents
    store: DocumentStore = (
        RedisDocuments(
            redis,
            prefix=settings.redis_prefix,
            ttl_s=settings.persisted_queries_ttl_s,
            max_chars=settings.persisted_queries_max_chars,
        )
        if redis is not None
        else MemoryDocuments(settings.persisted_queries_max_chars)
    )
    return PersistedOperations(
        mode=settings.persisted_operations_mode,
        manifest=trusted_documents(settings),
        store=store,
        admin_bypass=settings.persisted_operations_admin_bypass,
        count=monitor.registry.record_persisted,
        admissible=documents.admissible,
    )


async def check_schema(settings: Settings) -> None:
    """prepare_schema (and the trusted documents' manifest) before the server
    starts, so that a refusal is one line."""
    trusted_documents(settings)
    database = create_database(
        settings.database_url, busy_timeout_ms=settings.db_busy_timeout_ms
    )
    try:
        await prepare_schema(database, settings.environment)
    finally:
        await database.dispose()


def build_routes(
    settings: Settings,
    database: Database,
    services: Services,
    schema: GradePulseSchema,
    monitor: Monitor,
    sinks: Sequence[FileSink],
    redis: Redis | None,
    cluster: Cluster,
) -> list[BaseRoute]:
    """/graphql, the health endpoints, /metrics, /dashboard and the static files."""
    graphql = GraphQLEndpoint(
        schema=schema,
        services=services,
        limits=http_limits(settings),
        graphiql=STATIC / "graphiql" / "graphiql.html" if settings.graphiql else None,
        allowed_origins=settings.cors_origin_list,
        persisted=persisted_operations(settings, redis, monitor, schema),
    )
    health = Health(
        ping=partial(ping, database),
        dialect=database.dialect,
        sinks=sinks,
        redis_ping=redis.ping if redis is not None else None,
        version=VERSION,
        environment=settings.environment,
        uptime_seconds=monitor.registry.uptime_seconds,
        cluster=cluster,
    )
    metrics = MetricsEndpoint(
        monitor.registry.prometheus,
        token=settings.metrics_token.get_secret_value()
        if settings.metrics_token
        else None,
    )
    dashboard = DashboardPage(
        environment=settings.environment,
        auth_required=settings.requires_auth,
        documents=dashboard_documents(),
        # the rules as parsed (ALERT_RULES applied; disabled ones absent)
        thresholds={rule.id: rule.threshold for rule in monitor.alerts.rules},
    )
    return [
        *graphql.routes("/graphql"),
        *health.routes(),
        Route("/metrics", metrics.respond),
        Route("/dashboard", dashboard),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


def build_services(
    settings: Settings,
    database: Database,
    cache: LocalCache,
    monitor: Monitor,
    audit_log: AuditLog | None,
    redis: Redis | None,
    worker_id: str,
    subscriber: RedisSubscriber | None = None,
) -> Services:
    """The application layer's services, from the settings."""
    # The import keeper's statements (leases, sweeps) go through an engine of their
    # own: maintenance, not requests (uncounted by the monitor and the cost meter).
    keeper_database = create_database(
        settings.database_url,
        pool_size=1,
        max_overflow=1,
        busy_timeout_ms=settings.db_busy_timeout_ms,
    )
    return Services(
        database=database,
        cache=cache,
        imports=ImportJobs(worker_id, database=keeper_database),
        limits=Limits(
            max_batch_size=settings.max_batch_size,
            at_risk_average=settings.at_risk_average,
            at_risk_trend=settings.at_risk_trend,
            max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
            max_subscriptions=settings.max_subscriptions,
            max_subscriptions_per_identity=settings.max_subscriptions_per_identity,
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
            rate_store(settings, redis),
            student=settings.rate_limit_student,
            teacher=settings.rate_limit_teacher,
            admin=settings.rate_limit_admin,
        ),
        invalidations=invalidation_bus(settings, redis, cache, worker_id, subscriber),
    )


def build_schema_for(
    settings: Settings, monitor: Monitor | None, *, audit: bool
) -> GradePulseSchema:
    """The schema with the profile's limits; `monitor` times and prices operations."""
    return build_schema(
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
        monitor=monitor,
        server_errors=SERVER_ERROR_CODES,
        query_plans=settings.query_plans,
    )


def http_limits(settings: Settings) -> HTTPLimits:
    return HTTPLimits(
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        operation_timeout_s=settings.operation_timeout_s,
        batching_enabled=settings.batching_enabled,
        max_batch_operations=settings.max_batch_operations,
    )


def scrape_collector(monitor: Monitor) -> ScrapeTimeCollector:
    """The /metrics values read at scrape time."""
    return ScrapeTimeCollector(
        cache_stats=monitor.cache_stats,
        cost_totals=lambda: cost_totals(monitor),
        alerts_firing=monitor.alerts_firing,
        active_subscriptions=lambda: monitor.registry.active_subscriptions,
    )


def middleware(settings: Settings, registry: Registry | None) -> list[Middleware]:
    """Outermost first: the request log sees every answer, including refused hosts."""
    stack = (
        [Middleware(RequestMonitor, registry=registry)]
        if registry is not None
        else [Middleware(RequestId)]
    )
    # A rebound DNS name must not reach the anonymous loopback admin: the Host header
    # is checked in every profile (WebSocket handshakes included).
    stack.append(
        Middleware(
            TrustedHosts,
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


def alert_rules(settings: Settings) -> list[AlertRule]:
    """The alert rules: the defaults from the settings, with ALERT_RULES applied
    (disabled ones left out); SettingsError names what ALERT_RULES gets wrong."""
    defaults = default_rules(
        response_time_ms=settings.alert_response_time_ms,
        memory_mb=settings.alert_memory_mb,
        cost_per_hour=settings.alert_cost_per_hour,
        cost_window_s=settings.alert_cost_window_s,
    )
    try:
        return parse_rules(settings.alert_rules, defaults)
    except ValueError as exc:
        raise SettingsError(f"invalid settings: ALERT_RULES: {exc}") from None


def build_monitor(
    settings: Settings,
    cache: LocalCache,
    alert_log: FileSink,
    costs_csv: FileSink,
    *,
    cluster: Cluster,
    redis: Redis | None = None,
    bus: EventBus | None = None,
) -> Monitor:
    """The monitor with its sinks, cost meter and alert rules, from the settings;
    its sampler beats `cluster`'s heartbeat and renews the leader lease in `redis`."""
    rules = alert_rules(settings)
    alerts = AlertEngine(
        rules,
        cooldown_seconds=settings.alert_cooldown_seconds,
        sink=alert_log,
    )
    try:
        costs = CostMeter(
            environment=settings.environment,
            cost_per_db_query=settings.cost_per_db_query,
            cost_per_100_requests=settings.cost_per_100_requests,
            interval_s=settings.cost_summary_interval_s,
            sink=costs_csv,
            # The cluster's open period lives in the database, on an engine of the
            # meter's own: its statements are not the operations' DB queries.
            ledger=CostLedger.connect(
                settings.database_url,
                settings.environment,
                busy_timeout_ms=settings.db_busy_timeout_ms,
            ),
            # Where versions before the database kept it: imported once.
            legacy_state_path=settings.costs_csv_path + ".state.json",
            # A sampler tick (at most a second): the other workers' syncs at the
            # boundary land before the leader closes the period.
            close_delay_s=min(settings.sample_interval_ms / 1000, 1.0),
            # high_cost's window (ALERT_COST_WINDOW_S, or its ALERT_RULES window_s):
            # the meter's costPerHour is the figure the rule compares.
            # (A disabled high_cost leaves the meter ALERT_COST_WINDOW_S.)
            rate_window_s=next(
                (r.window_s for r in rules if r.id == HIGH_COST and r.window_s),
                settings.alert_cost_window_s,
            ),
        )
    except ValueError as exc:  # a rate the meter cannot keep exactly
        name, _, reason = str(exc).partition(" ")
        raise SettingsError(f"invalid settings: {name.upper()}: {reason}") from None

    def cache_stats() -> dict[str, tuple[int, int]]:
        return {name: (s.hits, s.misses) for name, s in cache.stats().items()}

    return Monitor(
        environment=settings.environment,
        registry=Registry(),
        costs=costs,
        alerts=alerts,
        system=PsutilReader(Path(settings.costs_csv_path).resolve().parent),
        cache_stats=cache_stats,
        worker=cluster.worker.id,
        # Without Redis this worker alone leads.
        leader=Leadership(
            cluster.worker.id,
            redis,
            prefix=settings.redis_prefix,
            interval_s=settings.sample_interval_ms / 1000,
            rules=alerts,
        ),
        bus=bus,
        interval_s=settings.sample_interval_ms / 1000,
        heartbeat=partial(heartbeat, cluster),  # once per sampler tick
        # Each worker's sample counts its gradeEvents subscribers: a write publishes
        # its grade events only while some worker has one.
        listened=GRADES,
        # Field usage goes by the hour to the database, on an engine of the
        # meter's own (its statements are not the operations' DB queries).
        usage=FieldUsageMeter(
            ledger=UsageLedger.connect(
                settings.database_url, busy_timeout_ms=settings.db_busy_timeout_ms
            )
        ),
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

    # The reads that run on the driver (db/reader.py) are seen as they end.
    database.observe(
        lambda statement, _parameters, duration_s: monitor.on_statement(
            statement, duration_s
        )
    )


def cost_totals(monitor: Monitor) -> dict[str, float]:
    snapshot = monitor.costs.snapshot()
    return {
        "db": snapshot.db_cost,
        "api": snapshot.api_cost,
        "total": snapshot.total_cost,
    }


def main() -> None:
    """`python app.py`: serve with the settings of the environment."""
    import sys

    try:
        settings = load_settings()
    except SettingsError as exc:
        sys.exit(str(exc))
    serve(settings)


def serve(settings: Settings) -> None:
    """`python app.py` and `gradepulse serve`: check the settings and the schema once,
    then serve WORKERS worker processes on HOST:PORT (each builds its app with
    create_app()); a refusal to start exits with one line. On SQLite this process
    (with several workers, the master) holds the database's serving lock as long as
    it serves: `gradepulse restore` refuses to overwrite the database meanwhile."""
    import signal
    import sys

    import uvicorn

    try:
        configure_logging(settings)
        serving = hold_serving(settings.database_url)
        asyncio.run(check_schema(settings))
    except (SettingsError, StartRefused) as exc:
        sys.exit(str(exc))
    except BackupError as exc:  # a restore is writing the database
        sys.exit(f"refusing to start: {exc}")
    logging.basicConfig(level=logging.DEBUG if settings.debug else logging.INFO)
    # prepare_schema logs what a migration did; Alembic's own lines are noise here.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # uvicorn drains on SIGTERM, then raises it again with the handler it found: a
    # stop that drained is a clean exit, not a death by signal.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    several = settings.workers > 1
    drain_s = settings.operation_timeout_s + DRAIN_MARGIN_S
    uvicorn.run(
        # Worker processes build their own app from the import string.
        "app:create_app" if several else create_app(settings),
        factory=several,
        workers=settings.workers,
        app_dir=str(ROOT),
        host=settings.host,
        port=settings.port,
        # websockets-sansio, dropping a client that takes nothing for
        # WS_SEND_TIMEOUT_S (slow clients).
        ws=partial(  # type: ignore[arg-type]  # a protocol factory, as a class is
            SendTimeoutProtocol, send_timeout_s=settings.ws_send_timeout_s
        ),
        # Feed messages are small JSON: compressing each frame cost more CPU than the
        # whole GraphQL execution of a metrics event (measured with 1,000 subscribers).
        ws_per_message_deflate=False,
        # A WebSocket message larger than a request body may be: closed with 1009.
        ws_max_size=settings.max_body_bytes,
        log_level="info",
        # RequestMonitor writes the access log, without query strings (a GET query
        # may search by email).
        access_log=False,
        # No `server: uvicorn` header, in any profile: no client needs it, it only
        # tells a scanner what to try, and development answers as production does.
        server_header=False,
        # SIGTERM: stop accepting, close WebSockets with 1012 at once, let requests in
        # flight finish (each ends by OPERATION_TIMEOUT_S; the margin lets its own
        # timeout answer first), then the lifespan shutdown.
        timeout_graceful_shutdown=drain_s,  # type: ignore[arg-type]  # any seconds
        # A request must arrive whole within HTTP_REQUEST_TIMEOUT_S (slow clients).
        http=partial(  # type: ignore[arg-type]  # a protocol factory, as a class is
            RequestTimeoutProtocol, request_timeout_s=settings.http_request_timeout_s
        ),
    )
    if serving is not None:
        serving.release()


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    main()
