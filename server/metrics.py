"""/metrics: the Prometheus text, for loopback clients and holders of METRICS_TOKEN."""

from __future__ import annotations

import hmac
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from monitoring.prometheus import render
from resolvers.auth import bearer_token, is_loopback
from resolvers.errors import Unauthenticated


class MetricsEndpoint:
    def __init__(self, registry: Any, *, token: str | None) -> None:
        self.registry = registry
        self.token = token

    async def respond(self, request: Request) -> Response:
        if refused := self.refuse(request):
            return refused
        body, content_type = render(self.registry)
        return Response(body, media_type=content_type)

    def refuse(self, request: Request) -> Response | None:
        token = self.token
        if token is not None:
            try:
                given = bearer_token(request.headers.get("authorization", ""))
            except Unauthenticated:
                given = ""
            if hmac.compare_digest(given.encode(), token.encode()):
                return None
        if is_loopback(request.client.host if request.client else None):
            return None
        if token is not None:
            return JSONResponse(
                {"error": "metrics need Authorization: Bearer <METRICS_TOKEN>"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        return JSONResponse(
            {"error": "metrics are answered to loopback clients only"},
            status_code=403,
        )
