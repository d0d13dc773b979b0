"""Pure ASGI middleware for HTTP: request id, timing, status, Server-Timing, and one
structured log line per request. WebSocket and lifespan scopes pass through."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from monitoring.registry import Registry

log = logging.getLogger("gradepulse.access")
REQUEST_ID = b"x-request-id"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

Scope = dict[str, Any]


class RequestMonitor:
    def __init__(self, app: Any, *, registry: Registry) -> None:
        self.app = app
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_of(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500

        async def send_with_headers(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                duration_ms = (time.perf_counter() - started) * 1000
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID, request_id.encode()))
                headers.append(
                    (b"server-timing", f"app;dur={duration_ms:.1f}".encode())
                )
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            duration = time.perf_counter() - started
            self.registry.record_http(scope["method"], status, duration)
            if log.isEnabledFor(logging.INFO):
                log.info(
                    json.dumps(
                        {
                            "requestId": request_id,
                            "method": scope["method"],
                            "path": scope["path"],
                            "operation": state.get("operation"),
                            "status": status,
                            "durationMs": round(duration * 1000, 3),
                        },
                        separators=(",", ":"),
                    )
                )


def request_id_of(scope: Scope) -> str:
    """The client's X-Request-ID when it is a safe token, else a new id."""
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID:
            candidate = value.decode("latin-1").strip()
            if _SAFE_ID.match(candidate):
                return candidate
            break
    return uuid.uuid4().hex
