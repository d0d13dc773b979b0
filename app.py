"""The composition root: create_app(settings=None) wires engine, caches, schema, routes."""

from __future__ import annotations

import gc
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLRequestData

from db.engine import Database, create_database, create_tables
from resolvers.cache import LocalCache
from resolvers.context import Context, Limits, Services
from resolvers.loaders import CACHE_NAMES
from schema import build_schema
from settings import Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parent
STATIC = ROOT / "static"
REQUEST_ID_HEADER = "x-request-id"
log = logging.getLogger("gradepulse")


class GraphQLView(GraphQL[Context, None]):
    """Strawberry's ASGI view with our context and the offline GraphiQL page."""

    def __init__(self, services: Services, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.services = services
        self._ide_html = (STATIC / "graphiql" / "graphiql.html").read_text()

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        return self.services.context(request_id=request_id[:128])

    async def render_graphql_ide(self, request: Request) -> Response:
        return HTMLResponse(self._ide_html)

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    def decode_json(self, data: str | bytes) -> object:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            # NaN and Infinity are not JSON, but Python's parser reads them: the
            # variable then fails Float coercion with a coded BAD_USER_INPUT error
            # rather than a bare 400. Truly malformed JSON still raises here.
            return json.loads(data)

    async def parse_http_body(self, request: Any) -> Any:
        """The common case (a POST of one JSON operation) without Strawberry's
        email-module content-type parsing; everything else goes the stock way."""
        content_type = (request.content_type or "").split(";", 1)[0].strip().lower()
        if (
            request.method == "POST"
            and content_type == "application/json"
            and self._get_stream_transport_from_headers(request.headers) is None
        ):
            data = self.parse_json(await request.get_body())
            if isinstance(data, dict):
                query, variables = data.get("query"), data.get("variables")
                extensions = data.get("extensions")
                if (
                    isinstance(query, (str, type(None)))
                    and isinstance(variables, (dict, type(None)))
                    and isinstance(extensions, (dict, type(None)))
                ):
                    return GraphQLRequestData(
                        query=query,
                        variables=variables,
                        operation_name=data.get("operationName"),
                        extensions=extensions,
                    )
        return await super().parse_http_body(request)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or load_settings()
    database = create_database(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        busy_timeout_ms=settings.db_busy_timeout_ms,
    )
    cache = LocalCache(
        CACHE_NAMES, maxsize=settings.cache_size, ttl=settings.cache_ttl_seconds
    )
    services = Services(
        database=database,
        cache=cache,
        limits=Limits(
            max_batch_size=settings.max_batch_size,
            at_risk_average=settings.at_risk_average,
            at_risk_trend=settings.at_risk_trend,
        ),
    )
    schema = build_schema(expose_errors=settings.debug)
    view = GraphQLView(
        services,
        schema=schema,
        graphql_ide="graphiql" if settings.graphiql else None,
    )
    started = time.monotonic()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await create_tables(database)
        # Everything built so far lives as long as the process: keep it out of the
        # collector's generations so that full collections stay short (NOTES.md).
        gc.collect()
        gc.freeze()
        yield
        await database.dispose()

    async def health(request: Request) -> JSONResponse:
        db = await _check_database(database)
        body = {
            "status": "ok" if db["status"] == "ok" else "degraded",
            "environment": settings.environment,
            "uptimeSeconds": round(time.monotonic() - started, 3),
            "database": db,
        }
        return JSONResponse(body, status_code=200 if db["status"] == "ok" else 503)

    async def live(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> JSONResponse:
        db = await _check_database(database)
        ok = db["status"] == "ok"
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "database": db},
            status_code=200 if ok else 503,
        )

    async def health_db(request: Request) -> JSONResponse:
        db = await _check_database(database)
        return JSONResponse(db, status_code=200 if db["status"] == "ok" else 503)

    app = Starlette(
        debug=False,
        lifespan=lifespan,
        routes=[
            Route("/graphql", view, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", view),
            Route("/health", health),
            Route("/health/live", live),
            Route("/health/ready", ready),
            Route("/health/db", health_db),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
    )
    app.state.services = services
    app.state.settings = settings
    return app


async def _check_database(database: Database) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with database.sessions() as session:
            await session.execute(text("SELECT 1"))
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
        log_level="info",
    )


if __name__ == "__main__":
    main()
