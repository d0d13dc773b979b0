"""The bare baselines, an app of their own with no GradePulse code: what a user would
write by hand for the same answers.

- POST /students: the students query's answer (the first 100 students by id, each
  with their grades' subject and score, oldest first) from the same two statements
  with SQLAlchemy async `text()`, built with plain dicts and orjson.
- POST /raw: `{"data":{"__typename":"Query"}}`, a Starlette JSON route.
- GET /health/live: for the bench's start-up check.

Served by uvicorn like the app (`bench.process.Server(factory=BARE)`), on the
DATABASE_URL the bench gives it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BARE = "bench.bare:create_bare_app"
PAGE = 100
RAW_BODY = orjson.dumps({"data": {"__typename": "Query"}})
_STUDENTS = text("SELECT student_id FROM students ORDER BY student_id LIMIT :n")
_GRADES = text(
    "SELECT student_id, subject, score FROM grades WHERE student_id IN :ids "
    "ORDER BY student_id, recorded_at, id"
).bindparams(bindparam("ids", expanding=True))


def _async_url(url: str) -> str:
    for prefix, driver in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+asyncpg://"),
    ):
        if url.startswith(prefix):
            return driver + url[len(prefix) :]
    return url


def create_bare_app() -> Starlette:
    engine = create_async_engine(_async_url(os.environ["DATABASE_URL"]))

    async def students(request: Request) -> Response:
        async with engine.connect() as conn:
            ids = [row[0] for row in await conn.execute(_STUDENTS, {"n": PAGE})]
            grades: dict[str, list[dict[str, object]]] = {i: [] for i in ids}
            for student_id, subject, score in await conn.execute(_GRADES, {"ids": ids}):
                grades[student_id].append({"subject": subject, "score": score})
        edges = [{"node": {"studentId": i, "grades": grades[i]}} for i in ids]
        body = orjson.dumps({"data": {"students": {"edges": edges}}})
        return Response(body, media_type="application/json")

    async def raw(request: Request) -> Response:
        return Response(RAW_BODY, media_type="application/json")

    async def live(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await engine.dispose()

    return Starlette(
        routes=[
            Route("/students", students, methods=["GET", "POST"]),
            Route("/raw", raw, methods=["GET", "POST"]),
            Route("/health/live", live),
        ],
        lifespan=lifespan,
    )
