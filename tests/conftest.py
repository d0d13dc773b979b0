"""Fixtures: the real app per backend (SQLite always, PostgreSQL with TEST_DATABASE_URL),
a seeded read-only database and a scratch one per test, the gql client, SQL counters,
and Redis (TEST_REDIS_URL) under a key prefix of the test's own."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from gql import Client, GraphQLRequest
from gql.transport.httpx import HTTPXAsyncTransport
from sqlalchemy import event, text
from starlette.applications import Starlette

from db.engine import Database, async_url, create_database
from db.migrations import upgrade
from db.seed import seed
from settings import Settings
from tests.factories import (
    DB_STUDENT,
    add_grade,
    create_student,
    database_with_student,
)
from tests.factories.analytics import Data, read_data
from tests.factories.costs import MakeMeter, meters
from tests.factories.roles import ADMIN, GRADE_ADD, SCHOOL, STUDENT_CREATE, run, sql

SEEDED_STUDENTS = 120
SEEDED_GRADES_PER_STUDENT = 12
SEED = 42
# The district-sized data set of issue 11 (tests marked `slow`).
LARGE_STUDENTS = 50_000
LARGE_GRADES_PER_STUDENT = 20
BACKENDS = ["sqlite", "postgresql"]
# Per-run database names, so that two suites on one PostgreSQL server never collide.
PG_SEEDED = f"gradepulse_seeded_{os.getpid()}"
PG_SCRATCH = f"gradepulse_scratch_{os.getpid()}"
PG_LARGE = f"gradepulse_large_{os.getpid()}"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--serial",
        choices=("include", "skip", "only"),
        default="include",
        help="tests marked `serial` (they time the server under load, and another "
        "process's tests would skew them): run them with the rest (include), leave "
        "them out (skip: `make test`'s parallel run) or run only them (only)",
    )


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Modules marked `sqlite_only` test the HTTP and WebSocket layers, which reach
    no SQL that differs between the backends: PostgreSQL would add time, not
    coverage, so their PostgreSQL cases are left out. `--serial` selects by the
    `serial` marker."""
    serial = config.getoption("--serial")
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgresql = (
            callspec is not None and callspec.params.get("backend") == "postgresql"
        )
        is_serial = item.get_closest_marker("serial") is not None
        if (
            (on_postgresql and item.get_closest_marker("sqlite_only") is not None)
            or (serial == "skip" and is_serial)
            or (serial == "only" and not is_serial)
        ):
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # `make test`'s serial run finds nothing to run when PYTEST_ARGS selects no
    # serial test: that is a pass, not pytest's "no tests collected" (5).
    if session.config.getoption("--serial") == "only" and exitstatus == 5:
        session.exitstatus = 0


def _require_services() -> bool:
    return os.environ.get("REQUIRE_SERVICES") == "1"


def postgres_url(database: str) -> str:
    """TEST_DATABASE_URL with another database name on the same server."""
    base = os.environ["TEST_DATABASE_URL"]
    return re.sub(r"/[^/?]*(\?|$)", f"/{database}\\1", async_url(base), count=1)


async def _admin(sql: str, *args: Any) -> Any:
    import asyncpg

    base = async_url(os.environ["TEST_DATABASE_URL"]).replace(
        "postgresql+asyncpg://", "postgresql://"
    )
    conn = await asyncpg.connect(base)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def _ensure_pg_database(name: str) -> None:
    if not await _admin("SELECT 1 FROM pg_database WHERE datname = $1", name):
        await _admin(f'CREATE DATABASE "{name}"')


@pytest.fixture(scope="session", autouse=True)
async def _drop_pg_databases() -> AsyncIterator[None]:
    yield
    if os.environ.get("TEST_DATABASE_URL"):
        for name in (PG_SEEDED, PG_SCRATCH, PG_LARGE):
            await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def skip_without_postgres() -> None:
    if not os.environ.get("TEST_DATABASE_URL"):
        reason = "PostgreSQL run skipped: TEST_DATABASE_URL is not set"
        if _require_services():
            pytest.fail(reason + " (REQUIRE_SERVICES=1)")
        pytest.skip(reason)


def skip_without_redis() -> str:
    """TEST_REDIS_URL, or skip (fail under REQUIRE_SERVICES=1) without it."""
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        reason = "Redis run skipped: TEST_REDIS_URL is not set"
        if _require_services():
            pytest.fail(reason + " (REQUIRE_SERVICES=1)")
        pytest.skip(reason)
    return url


@pytest.fixture
def redis_url() -> str:
    return skip_without_redis()


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A REDIS_PREFIX no other test (or run) uses; its keys are deleted afterwards."""
    from redis.asyncio import Redis

    prefix = f"gradepulse-test:{uuid.uuid4().hex}:"
    yield prefix
    client = Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql":
        skip_without_postgres()
    return str(request.param)


@pytest.fixture(scope="session")
async def seeded_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database seeded once per session with SEED; tests must not write to it."""
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('seeded') / 'seeded.db'}"
    else:
        await _ensure_pg_database(PG_SEEDED)
        url = postgres_url(PG_SEEDED)
    await _seed_once(url, SEEDED_STUDENTS, SEEDED_GRADES_PER_STUDENT)
    return url


@pytest.fixture(scope="session")
async def large_url(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """LARGE_STUDENTS x LARGE_GRADES_PER_STUDENT seeded once per session with SEED;
    tests must not write to it. The SQLite file goes afterwards (pytest keeps its
    last runs' tmp dirs); the PostgreSQL database at the session's end."""
    path = None
    if backend == "sqlite":
        path = tmp_path_factory.mktemp("large") / "large.db"
        url = f"sqlite+aiosqlite:///{path}"
    else:
        await _ensure_pg_database(PG_LARGE)
        url = postgres_url(PG_LARGE)
    await _seed_once(url, LARGE_STUDENTS, LARGE_GRADES_PER_STUDENT)
    yield url
    if path is not None:
        for leftover in path.parent.glob(path.name + "*"):  # -wal and -shm too
            leftover.unlink()


async def _seed_once(url: str, students: int, grades_per_student: int) -> None:
    database = create_database(url)
    try:
        if database.engine.dialect.name == "postgresql":
            await _drop_all(database)
        await upgrade(database)
        await seed(
            database,
            students=students,
            grades_per_student=grades_per_student,
            seed=SEED,
        )
    finally:
        await database.dispose()


async def _drop_all(database: Any) -> None:
    """Every table, Alembic's version table included (or the next upgrade would find
    the database at head with no tables)."""
    from sqlmodel import SQLModel

    async with database.engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.drop_all)
        await conn.execute(text("DROP TABLE IF EXISTS alembic_version"))


@pytest.fixture
async def scratch_url(backend: str, tmp_path: Path) -> str:
    """An empty database for a test that writes."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'scratch.db'}"
    await _ensure_pg_database(PG_SCRATCH)
    url = postgres_url(PG_SCRATCH)
    database = create_database(url)
    try:
        await _drop_all(database)
    finally:
        await database.dispose()
    return url


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "alert_log_path": "alert.log",
        "costs_csv_path": "costs.csv",
        # The sampler ticks once at start; tests call monitor.tick() themselves.
        "sample_interval_ms": 3_600_000,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]  # pydantic-settings' init-only argument


@dataclass
class StatementCounter:
    """Counts SQL statements sent on an engine (an SQLAlchemy event listener)."""

    statements: list[str] = field(default_factory=list)

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if (
            not statement.lstrip()
            .upper()
            .startswith(("BEGIN", "PRAGMA", "COMMIT", "ROLLBACK"))
        ):
            self.statements.append(statement)

    @property
    def reads(self) -> list[str]:
        return [
            s
            for s in self.statements
            if s.lstrip().upper().startswith(("SELECT", "WITH"))
        ]

    def reset(self) -> None:
        self.statements.clear()

    def observe(self, statement: str, _parameters: Any, _duration_s: float) -> None:
        """The same count for the statements the reader runs (db/reader.py)."""
        self(None, None, statement)

    def listen(self, database: Database) -> None:
        """Count every statement of `database`: the engine's and the reader's."""
        event.listen(database.engine.sync_engine, "before_cursor_execute", self)
        database.observe(self.observe)


@dataclass
class Api:
    """The real app under its lifespan, with a gql client over httpx.ASGITransport."""

    app: Starlette
    http: httpx.AsyncClient
    client: Client
    session: Any
    counter: StatementCounter

    async def execute(self, document: Any, **variables: Any) -> dict[str, Any]:
        request = GraphQLRequest(document, variable_values=variables or None)
        result: dict[str, Any] = await self.session.execute(request)
        return result

    async def post(
        self, query: str, variables: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Raw POST, for responses that carry errors (gql raises on those)."""
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    @property
    def services(self) -> Any:
        return self.app.state.services


@pytest.fixture
async def make_api() -> AsyncIterator[Any]:
    stack: list[Any] = []

    async def factory(database_url: str, **overrides: Any) -> Api:
        from app import create_app

        if overrides.get("environment", "development") != "development":
            # Staging and production start only at head: as `make migrate` would.
            database = create_database(database_url)
            try:
                await upgrade(database)
            finally:
                await database.dispose()
        app = create_app(make_settings(database_url, **overrides))
        manager = LifespanManager(app)
        await manager.__aenter__()
        stack.append(manager)
        counter = StatementCounter()
        counter.listen(app.state.services.database)
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        )
        stack.append(http)
        transport = HTTPXAsyncTransport(
            url="http://127.0.0.1/graphql", transport=httpx.ASGITransport(app=app)
        )
        client = Client(transport=transport, fetch_schema_from_transport=False)
        session = await client.connect_async()
        stack.append(client)
        return Api(app=app, http=http, client=client, session=session, counter=counter)

    yield factory
    for item in reversed(stack):
        if isinstance(item, LifespanManager):
            await item.__aexit__(None, None, None)
        elif isinstance(item, Client):
            await item.close_async()
        else:
            await item.aclose()


@pytest.fixture
async def seeded_api(make_api: Any, seeded_url: str) -> Api:
    api: Api = await make_api(seeded_url)
    return api


@pytest.fixture
async def api(make_api: Any, scratch_url: str) -> Api:
    api: Api = await make_api(scratch_url)
    return api


@pytest.fixture
async def database(scratch_url: str) -> AsyncIterator[Database]:
    """The scratch database with its tables and one grade-9 student, DB_STUDENT,
    for tests below the API (keys, authentication)."""
    database = await database_with_student(scratch_url, DB_STUDENT, "Db Student")
    yield database
    await database.dispose()


@pytest.fixture
def rows_in(api: Api) -> Any:
    """Counts rows in a table of the scratch database (proof that nothing was written)."""

    async def count(table: str) -> int:
        async with api.services.database.sessions() as session:
            return int(
                (
                    await session.execute(text(f"SELECT count(*) FROM {table}"))
                ).scalar_one()
            )

    return count


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """alert.log, costs.csv and any default SQLite file land in the test's tmp dir."""
    monkeypatch.chdir(tmp_path)
    yield


# --- fixtures shared by the modules of one area -------------------------------------


@pytest.fixture
def offline_database(tmp_path: Path) -> Database:
    """For rules that never reach the database (JWTs, anonymous): no tables at all,
    so a lookup would fail loudly."""
    return create_database(f"sqlite+aiosqlite:///{tmp_path / 'never.db'}")


@pytest.fixture
async def two_students(api: Any) -> tuple[str, str]:
    first = await create_student(api, studentId="G00001")
    second = await create_student(api, studentId="G00002")
    return first["studentId"], second["studentId"]


@pytest.fixture
async def grade(api: Any, two_students: tuple[str, str]) -> dict[str, Any]:
    return await add_grade(
        api,
        "G00001",
        subject="Math",
        score=40.0,
        maxScore=50.0,
        recordedAt="2025-10-01T09:00:00Z",
    )


@pytest.fixture(scope="session")
async def data(seeded_url: str) -> Data:
    """Every student and grade of the seeded database, read straight through SQL."""
    return await read_data(seeded_url)


@pytest.fixture
async def levels(seeded_api: Any) -> dict[str, int]:
    """student_id -> grade level of the seeded database."""
    rows = await sql(seeded_api, "SELECT student_id, grade_level FROM students")
    return {student_id: level for student_id, level in rows}


@pytest.fixture
async def school(api: Any) -> dict[str, str]:
    """Three students with one grade each; the grade id of each student."""
    grade_ids = {}
    for student_id, level in SCHOOL:
        created, errors = await run(
            api,
            ADMIN,
            STUDENT_CREATE,
            input={
                "studentId": student_id,
                "name": student_id.title(),
                "email": f"{student_id.lower()}@school.example",
                "gradeLevel": level,
            },
        )
        assert errors == [], errors
        assert created == {"studentCreate": {"__typename": "StudentCreateSuccess"}}
        added, errors = await run(api, ADMIN, GRADE_ADD, id=student_id)
        assert added == {"gradeAdd": {"__typename": "GradeAddSuccess"}}, errors
        ((grade_id,),) = await sql(
            api, "SELECT id FROM grades WHERE student_id = :s", s=student_id
        )
        grade_ids[student_id] = str(grade_id)
    return grade_ids


@pytest.fixture
async def cluster_database_url() -> AsyncIterator[str]:
    """An empty PostgreSQL database of this test's own, for app processes that share
    it (tests/factories/cluster.py); dropped afterwards."""
    skip_without_postgres()
    name = f"gradepulse_cluster_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    await _ensure_pg_database(name)
    yield postgres_url(name)
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def make_meter(scratch_url: str, tmp_path: Path) -> AsyncIterator[MakeMeter]:
    """Cost meters on the scratch database (tests/factories/costs.py)."""
    async with meters(scratch_url, tmp_path) as factory:
        yield factory
