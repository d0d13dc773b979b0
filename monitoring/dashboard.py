"""The /dashboard page: static/dashboard/dashboard.html with the environment and the
alert thresholds embedded as JSON, served by a small ASGI app."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).resolve().parents[1] / "static/dashboard/dashboard.html"
SCRIPT = TEMPLATE.with_name("dashboard.js")
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


_CONSTANT = re.compile(r"const ([A-Z_]+) = `([^`]*)`;")
_INTERPOLATION = re.compile(r"\$\{([A-Z_]+)\}")
_OPERATION = re.compile(r"(query|mutation|subscription)\s+([A-Za-z_]\w*)")


@cache  # the script does not change while the server runs: read once (read-only)
def dashboard_documents(script: Path = SCRIPT) -> dict[str, str]:
    """The dashboard's GraphQL operations, by operation name, exactly as the page
    sends them: the script's `const NAME = `...`;` template literals, with each
    `${OTHER}` replaced by that constant's text, as the browser builds them.
    These are the dashboard's trusted documents (PERSISTED_OPERATIONS): the page
    names each by its hash, which the server embeds in the page."""
    constants: dict[str, str] = {}
    documents: dict[str, str] = {}
    for name, raw in _CONSTANT.findall(script.read_text(encoding="utf-8")):
        if "\\" in raw:
            raise ValueError(f"{script}: {name} has an escape the server cannot read")

        def substitute(match: re.Match[str], name: str = name) -> str:
            if match.group(1) not in constants:
                raise ValueError(f"{script}: {name} uses {match.group(1)} before it")
            return constants[match.group(1)]

        text = constants[name] = _INTERPOLATION.sub(substitute, raw)
        operation = _OPERATION.match(text)
        if operation is not None:
            documents[operation.group(2)] = text
    return documents


def document_hashes(documents: Mapping[str, str]) -> dict[str, str]:
    """Operation name -> sha256 hex of its document."""
    return {
        name: hashlib.sha256(text.encode("utf-8")).hexdigest()
        for name, text in documents.items()
    }


def render_dashboard(
    *,
    environment: str,
    thresholds: Mapping[str, float],
    template: Path = TEMPLATE,
    auth_required: bool = False,
    documents: Mapping[str, str] | None = None,
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
        # Operation name -> sha256 of its document: the page sends the hash alone
        # (extensions.persistedQuery), which PERSISTED_OPERATIONS=require runs.
        "documents": document_hashes(documents or {}),
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
        documents: Mapping[str, str] | None = None,
    ) -> None:
        self.body = render_dashboard(
            environment=environment,
            thresholds=thresholds,
            template=template,
            auth_required=auth_required,
            documents=documents,
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
