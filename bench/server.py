"""The app under benchmark plus its baselines: a hand-written handler running the same
SQL with byte-identical JSON, and a raw Starlette JSON endpoint."""

from __future__ import annotations

import orjson
from graphql import OperationDefinitionNode, parse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app import create_app
from db import grades, students
from resolvers.audit import record_read
from server.cost import price_operation
from server.gate import rate_limit_extension
from settings import load_settings

STUDENTS_PAGE = 100
STUDENTS_QUERY = (
    "{ students(first: 100) { edges { node { studentId name gradeLevel "
    "grades { subject score } } } } }"
)
RAW_BODY = orjson.dumps({"data": {"__typename": "Query"}})


def create_bench_app(*, audit: bool = True) -> Starlette:
    app = create_app(load_settings(), audit=audit)
    services = app.state.services
    database = services.database
    monitor = app.state.monitor
    # What the GraphQL path charges the caller's rate budget for this query.
    schema = app.state.schema._schema
    document = parse(STUDENTS_QUERY)
    operation = document.definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    cost = price_operation(schema, document, operation, None).cost

    async def handwritten(request: Request) -> Response:
        # The same work as the GraphQL path: authenticate, charge the budget, the
        # same two statements (db.students, db.grades; no cache), and the FERPA
        # record of the students returned, before the response.
        client = request.client.host if request.client else None
        viewer = await services.authenticator.authenticate(
            request.headers.get("authorization"), client
        )
        rate = await services.rate_limiter.charge(viewer, client, cost)
        rows, _ = await students.list_students(
            database.reader, first=STUDENTS_PAGE, where=students.StudentFilter()
        )
        per_student = await grades.grades_by_student_ids(
            database.reader, [(row.student_id, None) for row in rows]
        )
        edges = [
            {
                "node": {
                    "studentId": row.student_id,
                    "name": row.name,
                    "gradeLevel": row.grade_level,
                    "grades": [{"subject": g.subject, "score": g.score} for g in gs],
                }
            }
            for row, gs in zip(rows, per_student, strict=True)
        ]
        if audit:
            context = services.context(viewer=viewer, client_host=client)
            await record_read(context, [row.student_id for row in rows], "Students")
        # The GraphQL response carries its dollar cost (2 statements) and budget.
        body = orjson.dumps(
            {
                "data": {"students": {"edges": edges}},
                "extensions": {
                    "cost": monitor.price(2, 1),
                    "rateLimit": rate_limit_extension(rate),
                },
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
