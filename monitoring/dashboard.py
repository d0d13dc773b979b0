"""The /dashboard page: static/dashboard/dashboard.html with the environment and the
alert thresholds embedded as JSON, served by a small ASGI app."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).resolve().parents[1] / "static/dashboard/dashboard.html"
PLACEHOLDER = "{{ DASHBOARD_CONFIG }}"
GRAPHQL_PATH = "/graphql"
WINDOW_SECONDS = 300  # what the charts show
INTERVAL_MS = 1000  # the metrics and costs subscriptions' interval

# Nothing but this origin: scripts and styles from /static, the API over fetch and
# WebSocket ('self' covers ws:// and wss:// of the same host).
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

Scope = dict[str, Any]


def render_dashboard(
    *,
    environment: str,
    thresholds: Mapping[str, float],
    template: Path = TEMPLATE,
    auth_required: bool = False,
) -> str:
    """The page, its configuration embedded as JSON. `thresholds` maps alert rule
    ids (high_response_time, low_cache_hit_rate, ...) to their thresholds; a rule
    left out (disabled) colours nothing."""
    for rule, value in thresholds.items():
        if not math.isfinite(value):
            raise ValueError(f"threshold of {rule} must be a finite number")
    config = {
        "environment": environment,
        "thresholds": {rule: float(value) for rule, value in thresholds.items()},
        "graphqlPath": GRAPHQL_PATH,
        "windowSeconds": WINDOW_SECONDS,
        "intervalMs": INTERVAL_MS,
        # The page asks for an API key before connecting when the server needs one.
        "authRequired": auth_required,
    }
    # Inside <script type="application/json"> only "</script" could end the block:
    # escaping <, > and & keeps any text inert.
    embedded = (
        json.dumps(config, allow_nan=False)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )
    html = template.read_text(encoding="utf-8")
    if PLACEHOLDER not in html:
        raise ValueError(f"{template} has no {PLACEHOLDER} placeholder")
    return html.replace(PLACEHOLDER, embedded)


class DashboardPage:
    """ASGI app answering GET and HEAD with the rendered page (rendered once)."""

    def __init__(
        self,
        *,
        environment: str,
        thresholds: Mapping[str, float],
        template: Path = TEMPLATE,
        auth_required: bool = False,
    ) -> None:
        self.body = render_dashboard(
            environment=environment,
            thresholds=thresholds,
            template=template,
            auth_required=auth_required,
        ).encode()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            await _respond(
                send,
                405,
                b"Method Not Allowed",
                [
                    (b"allow", b"GET, HEAD"),
                    (b"content-type", b"text/plain"),
                    (b"content-length", b"18"),
                ],
            )
            return
        headers = [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"cache-control", b"no-store"),
            (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
        ]
        # HEAD announces the length of the body it leaves out.
        headers.append((b"content-length", str(len(self.body)).encode()))
        await _respond(send, 200, b"" if method == "HEAD" else self.body, headers)


async def _respond(
    send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
