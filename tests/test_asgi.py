"""server/asgi.py: the HTTP requests of a direct path reach their endpoint through
the app's middleware but not through the router; everything else goes Starlette's
way."""

from __future__ import annotations

from typing import Any

import httpx
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from server.asgi import App, TrustedHosts


class Tag:
    """Middleware that marks each request it saw."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["tagged"] = True
        await self.app(scope, receive, send)


class Endpoint:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/boom":
            raise RuntimeError("boom")
        response = JSONResponse(
            {
                "tagged": scope["state"].get("tagged", False),
                "routed": "router" in scope,
            }
        )
        await response(scope, receive, send)


async def other(request: Request) -> PlainTextResponse:
    return PlainTextResponse("other")


def app_with(direct: list[str]) -> App:
    endpoint = Endpoint()
    return App(
        routes=[
            Route("/graphql", endpoint),
            Route("/boom", endpoint),
            Route("/other", other),
        ],
        middleware=[Middleware(Tag)],
        direct=direct,
    )


async def test_a_direct_path_skips_the_router_but_not_the_middleware() -> None:
    transport = httpx.ASGITransport(app=app_with(["/graphql", "/boom"]))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        direct = await client.post("/graphql")
        routed_other = await client.get("/other")
        slash = await client.get("/graphql/")  # not the direct path: the router's
    assert direct.json() == {"tagged": True, "routed": False}
    assert routed_other.text == "other"
    assert slash.status_code in (307, 404)


async def test_without_direct_paths_starlette_routes_everything() -> None:
    transport = httpx.ASGITransport(app=app_with([]))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/graphql")
    assert response.json() == {"tagged": True, "routed": True}


async def test_an_error_on_a_direct_path_is_a_plain_500() -> None:
    transport = httpx.ASGITransport(
        app=app_with(["/graphql", "/boom"]), raise_app_exceptions=False
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    assert response.text == "Internal Server Error"


async def test_trusted_hosts_remember_only_what_they_accepted() -> None:
    trusted = TrustedHosts(Tag(Endpoint()), allowed_hosts=["good.test", "*.ok.test"])
    transport = httpx.ASGITransport(app=trusted)
    hosts = ["good.test", "good.test", "a.ok.test", "evil.test", "evil.test"]
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        answers = [
            (await client.post("/graphql", headers={"Host": host})).status_code
            for host in hosts
        ]
        odd = await client.post("/graphql", headers={"Host": "GOOD.test:8000"})
        refused = await client.post("/graphql", headers={"Host": "evil.test"})
    assert answers == [200, 200, 200, 400, 400]
    assert odd.status_code == 200  # Starlette's rules: case and port ignored
    assert refused.text == "Invalid host header"  # Starlette's own refusal
    assert trusted._accepted == {b"good.test", b"a.ok.test", b"GOOD.test:8000"}
