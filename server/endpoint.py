"""/graphql: one endpoint for HTTP (and GraphiQL) and both WebSocket protocols."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.routing import BaseRoute, Route, WebSocketRoute

from resolvers.context import Services
from server.fanout import FanOut
from server.http import GraphQLHTTP, HTTPLimits
from server.persisted import PersistedOperations
from server.websocket import GraphQLWebSocket


class GraphQLEndpoint:
    """An ASGI app: HTTP requests go to server/http.py, WebSockets to
    server/websocket.py, with the same schema and services."""

    def __init__(
        self,
        *,
        schema: Any,
        services: Services,
        limits: HTTPLimits,
        graphiql: Path | None,
        allowed_origins: list[str],
        persisted: PersistedOperations | None = None,
    ) -> None:
        self.schema = schema
        persisted = persisted or PersistedOperations()
        pipeline = getattr(schema, "pipeline", None)
        self.http = GraphQLHTTP(
            schema=schema,
            services=services,
            limits=limits,
            ide_html=graphiql.read_text() if graphiql is not None else None,
            pipeline=pipeline,
            persisted=persisted,
        )
        fanout = (
            FanOut(pipeline, pipeline.monitor)
            if pipeline is not None and pipeline.monitor is not None
            else None
        )
        self.websocket = GraphQLWebSocket(
            services,
            schema=schema,
            allowed_origins=allowed_origins,
            fanout=fanout,
            persisted=persisted,
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        app: Any = self.websocket if scope["type"] == "websocket" else self.http
        await app(scope, receive, send)

    def routes(self, path: str = "/graphql") -> list[BaseRoute]:
        """Starlette matches HTTP and WebSocket scopes with separate route kinds;
        both lead to this endpoint. Every HTTP method: the endpoint answers 405 with
        its own Allow header."""
        return [Route(path, self), WebSocketRoute(path, self)]
