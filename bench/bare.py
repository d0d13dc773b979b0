"""The bare baselines, an app of their own with no GradePulse code: what a user would
write by hand for the same answers.

- POST /students: the students query's answer (the first 100 students by id, with
  name and grade level, each with their grades' subject and score, oldest first)
  from the same two statements with SQLAlchemy async `text()`, built with plain
  dicts and orjson.
- POST /students-sql-json: the same answer built by the database itself in one
  statement (SQLite's json_object/json_group_array, PostgreSQL's json_build_object/
  json_agg), sent as it comes: what the planner could do instead of building JSON in
  Python (issue 12 asks for both to be measured).
- POST /readme: the README's students query (5 students of level 9 by name, their
  count, their Math grades, their analytics) from the same three statements, with
  the analytics read from a dict (the bench fills it from the app's own answer:
  both sides read cached analytics).
- POST /students-driver and /readme-driver: the same two answers from the same
  statements sent on the driver itself (aiosqlite, or an asyncpg pool), without
  SQLAlchemy: GradePulse's hot reads run on the driver (db/reader.py), so this is
  the leaner baseline it is also compared with.
- POST /raw: `{"data":{"__typename":"Query"}}`, a Starlette JSON route.
- GET /health/live: for the bench's start-up check.

Served by uvicorn like the app (`bench.process.Server(factory=BARE)`), on the
DATABASE_URL the bench gives it."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
_STUDENTS = text(
    "SELECT student_id, name, grade_level FROM students ORDER BY student_id LIMIT :n"
)
_GRADES = text(
    "SELECT student_id, subject, score FROM grades WHERE student_id IN :ids "
    "ORDER BY student_id, recorded_at, id"
).bindparams(bindparam("ids", expanding=True))
_SQL_JSON = {
    "sqlite": text(
        "SELECT json_object('students', json_object('edges', json_group_array("
        "json_object('node', json_object('studentId', s.student_id, 'name', s.name, "
        "'gradeLevel', s.grade_level, 'grades', (SELECT json_group_array("
        "json_object('subject', g.subject, 'score', g.score)) FROM (SELECT subject, "
        "score FROM grades WHERE student_id = s.student_id ORDER BY recorded_at, id) "
        "g)))))) FROM (SELECT student_id, name, grade_level FROM students ORDER BY "
        "student_id LIMIT :n) s"
    ),
    "postgresql": text(
        "SELECT json_build_object('students', json_build_object('edges', "
        "coalesce(json_agg(json_build_object('node', json_build_object('studentId', "
        "s.student_id, 'name', s.name, 'gradeLevel', s.grade_level, 'grades', "
        "(SELECT coalesce(json_agg(json_build_object('subject', g.subject, 'score', "
        "g.score) ORDER BY g.recorded_at, g.id), '[]'::json) FROM grades g WHERE "
        "g.student_id = s.student_id))) ORDER BY s.student_id), '[]'::json)))::text "
        "FROM (SELECT student_id, name, grade_level FROM students ORDER BY student_id "
        "LIMIT :n) s"
    ),
}
README_LEVEL = 9
README_FIRST = 5
_README_PAGE = text(
    "SELECT student_id, name, grade_level FROM students WHERE grade_level = :level "
    "ORDER BY name, student_id LIMIT :n"
)
_README_COUNT = text("SELECT count(*) FROM students WHERE grade_level = :level")
_README_GRADES = text(
    "SELECT student_id, subject, score, max_score, recorded_at FROM grades "
    "WHERE student_id IN :ids AND subject = :subject "
    "ORDER BY student_id, recorded_at, id"
).bindparams(bindparam("ids", expanding=True))


def _node(row: Any, grades: dict[str, list[dict[str, object]]]) -> dict[str, object]:
    student_id, name, level = row
    return {
        "studentId": student_id,
        "name": name,
        "gradeLevel": level,
        "grades": grades[student_id],
    }


def _cursor(kind: str, *parts: object) -> str:
    raw = json.dumps([kind, *parts], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _utc_text(value: object) -> str:
    """A stored time as the API writes it (ISO 8601, UTC, Z)."""
    if isinstance(value, str):  # SQLite keeps text
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    spec = "seconds" if not value.microsecond else "microseconds"
    return value.isoformat(timespec=spec) + "Z"


def _async_url(url: str) -> str:
    for prefix, driver in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+asyncpg://"),
    ):
        if url.startswith(prefix):
            return driver + url[len(prefix) :]
    return url


class Driver:
    """The statements on the driver: a few aiosqlite connections (the least busy
    takes the statement), or an asyncpg pool; opened on first use."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = url.startswith("sqlite")
        self._connections: list[Any] = []
        self._busy: list[int] = []
        self._pool: Any = None

    def sql(self, statement: str, count: int = 0) -> str:
        """`statement` with `?` placeholders (and `{list}` for a list of `count`) in
        the driver's style."""
        statement = statement.replace("{list}", "(" + ", ".join("?" * count) + ")")
        if self.sqlite:
            return statement
        parts = statement.split("?")
        return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))

    async def fetch(self, statement: str, *values: Any) -> list[Any]:
        if self.sqlite:
            import aiosqlite

            if not self._connections:
                path = self.url.split(":///", 1)[1]
                self._connections = [await aiosqlite.connect(path) for _ in range(4)]
                self._busy = [0] * 4
            index = self._busy.index(min(self._busy))
            self._busy[index] += 1
            try:
                connection = self._connections[index]
                return list(await connection.execute_fetchall(statement, values))
            finally:
                self._busy[index] -= 1
        import asyncpg

        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self.url.replace("postgresql+asyncpg://", "postgresql://"),
                min_size=1,
                max_size=10,
            )
        return list(await self._pool.fetch(statement, *values))

    async def close(self) -> None:
        for connection in self._connections:
            await connection.close()
        if self._pool is not None:
            await self._pool.close()


def _readme_grade(row: Any) -> dict[str, object]:
    """One of the README query's grades from (student_id, subject, score, max_score,
    recorded_at)."""
    _, subject, score, max_score, recorded_at = row
    return {
        "subject": subject,
        "score": score,
        "percentage": (100.0 * score) / max_score,
        "recordedAt": _utc_text(recorded_at),
    }


def _students_answer(page: list[Any], grade_rows: list[Any]) -> bytes:
    grades: dict[str, list[dict[str, object]]] = {row[0]: [] for row in page}
    for student_id, subject, score in grade_rows:
        grades[student_id].append({"subject": subject, "score": score})
    edges = [{"node": _node(row, grades)} for row in page]
    return orjson.dumps({"data": {"students": {"edges": edges}}})


def create_bare_app() -> Starlette:
    engine = create_async_engine(_async_url(os.environ["DATABASE_URL"]))
    driver = Driver(_async_url(os.environ["DATABASE_URL"]))

    analytics: dict[str, object] = {}
    if path := os.environ.get("BARE_ANALYTICS"):
        analytics = orjson.loads(Path(path).read_bytes())
    dialect = "postgresql" if engine.dialect.name == "postgresql" else "sqlite"

    async def students(request: Request) -> Response:
        async with engine.connect() as conn:
            page = list(await conn.execute(_STUDENTS, {"n": PAGE}))
            ids = [row[0] for row in page]
            rows = list(await conn.execute(_GRADES, {"ids": ids}))
        return Response(_students_answer(page, rows), media_type="application/json")

    async def students_sql_json(request: Request) -> Response:
        async with engine.connect() as conn:
            data = (await conn.execute(_SQL_JSON[dialect], {"n": PAGE})).scalar_one()
        return Response(
            b'{"data":' + data.encode() + b"}", media_type="application/json"
        )

    async def readme(request: Request) -> Response:
        async with engine.connect() as conn:
            page = list(
                await conn.execute(
                    _README_PAGE, {"level": README_LEVEL, "n": README_FIRST + 1}
                )
            )
            has_next = len(page) > README_FIRST
            page = page[:README_FIRST]
            total = (
                await conn.execute(_README_COUNT, {"level": README_LEVEL})
            ).scalar_one()
            ids = [row[0] for row in page]
            grades: dict[str, list[dict[str, object]]] = {i: [] for i in ids}
            rows = await conn.execute(_README_GRADES, {"ids": ids, "subject": "Math"})
            for row in rows:
                grades[row[0]].append(_readme_grade(row))
        body = orjson.dumps(
            {"data": {"students": _readme_students(page, grades, has_next, total)}}
        )
        return Response(body, media_type="application/json")

    def _readme_students(
        page: list[Any],
        grades: dict[str, list[dict[str, object]]],
        has_next: bool,
        total: int,
    ) -> dict[str, object]:
        edges = [
            {"node": {**_node(row, grades), "analytics": analytics.get(row[0])}}
            for row in page
        ]
        last = page[-1] if page else None
        return {
            "totalCount": total,
            "pageInfo": {
                "hasNextPage": has_next,
                "endCursor": _cursor("s:name:a", last[1], last[0]) if last else None,
            },
            "edges": edges,
        }

    students_sql = driver.sql(
        "SELECT student_id, name, grade_level FROM students ORDER BY student_id LIMIT ?"
    )
    readme_page_sql = driver.sql(
        "SELECT student_id, name, grade_level FROM students WHERE grade_level = ? "
        "ORDER BY name, student_id LIMIT ?"
    )
    readme_count_sql = driver.sql("SELECT count(*) FROM students WHERE grade_level = ?")

    async def students_driver(request: Request) -> Response:
        page = await driver.fetch(students_sql, PAGE)
        grades_sql = driver.sql(
            "SELECT student_id, subject, score FROM grades WHERE student_id IN {list} "
            "ORDER BY student_id, recorded_at, id",
            len(page),
        )
        rows = await driver.fetch(grades_sql, *(row[0] for row in page))
        body = _students_answer(page, rows)
        return Response(body, media_type="application/json")

    async def readme_driver(request: Request) -> Response:
        page = await driver.fetch(readme_page_sql, README_LEVEL, README_FIRST + 1)
        has_next = len(page) > README_FIRST
        page = page[:README_FIRST]
        [(total,)] = await driver.fetch(readme_count_sql, README_LEVEL)
        ids = [row[0] for row in page]
        grades: dict[str, list[dict[str, object]]] = {i: [] for i in ids}
        grades_sql = driver.sql(
            "SELECT student_id, subject, score, max_score, recorded_at FROM grades "
            "WHERE student_id IN {list} AND subject = ? "
            "ORDER BY student_id, recorded_at, id",
            len(ids),
        )
        for row in await driver.fetch(grades_sql, *ids, "Math"):
            grades[row[0]].append(_readme_grade(row))
        body = orjson.dumps(
            {"data": {"students": _readme_students(page, grades, has_next, total)}}
        )
        return Response(body, media_type="application/json")

    async def raw(request: Request) -> Response:
        return Response(RAW_BODY, media_type="application/json")

    async def live(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await driver.close()
        await engine.dispose()

    return Starlette(
        routes=[
            Route("/students", students, methods=["GET", "POST"]),
            Route("/students-sql-json", students_sql_json, methods=["GET", "POST"]),
            Route("/readme", readme, methods=["GET", "POST"]),
            Route("/students-driver", students_driver, methods=["GET", "POST"]),
            Route("/readme-driver", readme_driver, methods=["GET", "POST"]),
            Route("/raw", raw, methods=["GET", "POST"]),
            Route("/health/live", live),
        ],
        lifespan=lifespan,
    )
