"""The app under benchmark plus its baselines: a hand-written handler running the same
SQL with byte-identical JSON, and a raw Starlette JSON endpoint."""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app import create_app
from db import grades, students
from settings import load_settings

STUDENTS_PAGE = 100
RAW_BODY = orjson.dumps({"data": {"__typename": "Query"}})


def create_bench_app(*, audit: bool = True) -> Starlette:
    app = create_app(load_settings(), audit=audit)
    database = app.state.services.database
    monitor = app.state.monitor

    async def handwritten(request: Request) -> Response:
        # The same two statements as the GraphQL path (db.students, db.grades), no cache.
        async with database.sessions() as session:
            rows, _ = await students.list_students(
                session, first=STUDENTS_PAGE, where=students.StudentFilter()
            )
        async with database.sessions() as session:
            per_student = await grades.grades_by_student_ids(
                session, [(row.student_id, None) for row in rows]
            )
        edges = [
            {
                "node": {
                    "studentId": row.student_id,
                    "grades": [{"subject": g.subject, "score": g.score} for g in gs],
                }
            }
            for row, gs in zip(rows, per_student, strict=True)
        ]
        # The GraphQL response carries its cost; so does this one (2 statements).
        body = orjson.dumps(
            {
                "data": {"students": {"edges": edges}},
                "extensions": {"cost": monitor.price(2, 1)},
            }
        )
        return Response(body, media_type="application/json")

    async def raw(request: Request) -> Response:
        return Response(RAW_BODY, media_type="application/json")

    app.router.routes.extend(
        [
            Route("/bench/handwritten", handwritten),
            Route("/bench/raw", raw, methods=["GET", "POST"]),
        ]
    )
    return app


def create_unaudited_bench_app() -> Starlette:
    """The same app without the FERPA audit log, only to measure what it costs."""
    return create_bench_app(audit=False)
