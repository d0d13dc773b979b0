"""HTTP surface: GraphiQL offline, health routes, GET queries, error codes."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import make_settings
from tests.factories import TEST_JWT_SECRET, bearer_header, jwt_token


async def test_graphiql_is_served_with_local_assets_only(api):
    response = await api.http.get("/graphql", headers={"Accept": "text/html"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "graphiql" in page.lower()
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assets = [s for s in sources if s.startswith("/static/")]
    assert len(assets) == 7
    assert [s for s in sources if s.startswith(("http:", "https:", "//"))] == []
    assert "unpkg.com" not in page
    for asset in assets:
        served = await api.http.get(asset)
        assert served.status_code == 200, asset
        assert len(served.content) > 500, asset


async def test_graphiql_is_off_in_production(make_api, scratch_url):
    api = await make_api(
        scratch_url, environment="production", jwt_secret=TEST_JWT_SECRET
    )

    response = await api.http.get(
        "/graphql", headers={"Accept": "text/html", **bearer_header(jwt_token())}
    )

    # An authenticated browser asking for the IDE gets the refusal of a media type
    # the endpoint does not serve, not a page.
    assert response.status_code == 406
    assert response.headers["content-type"] == "application/json"
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"] == (
        "this endpoint answers application/graphql-response+json or "
        "application/json; the Accept header lists neither"
    )
    assert "graphiql" not in response.text.lower()


async def test_health_routes_report_the_database(api):
    health = await api.http.get("/health")
    live = await api.http.get("/health/live")
    ready = await api.http.get("/health/ready")
    db = await api.http.get("/health/db")

    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["environment"] == "development"
    assert health.json()["checks"]["database"]["status"] == "ok"
    assert live.json() == {"status": "ok"}
    assert ready.status_code == 200 and ready.json()["status"] == "ok"
    assert db.json()["status"] == "ok"
    assert db.json()["dialect"] in ("sqlite", "postgresql")


async def test_ready_is_503_when_the_database_is_unreachable(make_api, tmp_path):
    api = await make_api(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    await api.services.database.dispose()
    (tmp_path / "db.sqlite").unlink()
    (tmp_path / "db.sqlite").mkdir()  # a directory where the file was: cannot open

    ready = await api.http.get("/health/ready")

    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"


async def test_get_query_returns_data(seeded_api):
    response = await seeded_api.http.get("/graphql", params={"query": "{ subjects }"})

    assert response.status_code == 200
    assert response.json()["data"] == {
        "subjects": ["Art", "English", "History", "Math", "Science"]
    }


@pytest.mark.parametrize(
    "query",
    [
        '{ student(studentId: "S00001") { grades { score } } }',
        "{ students { totalCount } }",  # the planned path
        "{ students {",  # a request error
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_no_cache_may_keep_an_answer(seeded_api, method, query):
    """Answers depend on the caller's credentials and hold student records: a
    shared proxy must not serve one caller's answer to another."""
    if method == "GET":
        response = await seeded_api.http.get("/graphql", params={"query": query})
    else:
        response = await seeded_api.http.post("/graphql", json={"query": query})

    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("{ students {", "GRAPHQL_PARSE_FAILED"),
        ("{ helo }", "GRAPHQL_VALIDATION_FAILED"),
        ("{ students(first: 0) { totalCount } }", "BAD_USER_INPUT"),
        ('{ students(after: "nope") { totalCount } }', "BAD_USER_INPUT"),
    ],
)
async def test_errors_carry_a_code_and_the_request_id(api, query, code):
    response = await api.http.post(
        "/graphql", json={"query": query}, headers={"X-Request-ID": "req-42"}
    )

    assert response.status_code == 200
    errors = response.json()["errors"]
    assert [e["extensions"]["code"] for e in errors] == [code]
    assert errors[0]["extensions"]["requestId"] == "req-42"


async def test_variable_of_wrong_type_is_bad_user_input(api):
    body = await api.post(
        "query($n: Int!) { students(first: $n) { totalCount } }", {"n": "ten"}
    )

    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_unexpected_errors_are_masked(api, monkeypatch):
    from resolvers import grades

    async def broken(ctx):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(grades, "list_subjects", broken)

    body = await api.post("{ subjects }")

    assert body["errors"][0]["message"] == "Unexpected error."
    assert body["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "secret" not in str(body)


def test_settings_for_tests_do_not_read_dot_env(tmp_path):
    (tmp_path / ".env").write_text("CACHE_SIZE=3\n")

    assert make_settings("sqlite:///x.db").cache_size == 500


async def test_database_outage_is_db_unavailable(make_api, tmp_path):
    api = await make_api(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    await api.services.database.dispose()
    (tmp_path / "db.sqlite").unlink()
    (tmp_path / "db.sqlite").mkdir()

    body = await api.post("{ subjects }")

    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "DB_UNAVAILABLE"
    assert (
        body["errors"][0]["message"]
        == "The database is unavailable; try again shortly."
    )


@pytest.mark.parametrize(
    "query",
    [
        '{ student(studentId: "S\\u0000") { name } }',
        '{ students(search: "a\\u0000") { totalCount } }',
        '{ grades(subject: "M\\u0000") { totalCount } }',
    ],
)
async def test_nul_in_a_read_argument_is_bad_user_input(api, query):
    body = await api.post(query)

    if api.services.database.dialect == "postgresql":  # refuses NUL in text
        assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]
        assert body["errors"][0]["message"] == (
            "An argument holds a value the database cannot use."
        )
    else:  # SQLite stores and compares NUL like any character: nothing matches
        assert "errors" not in body
        assert body["data"] in (
            {"student": None},
            {"students": {"totalCount": 0}},
            {"grades": {"totalCount": 0}},
        )


@pytest.fixture
async def silent_database_url() -> AsyncIterator[str]:
    """A PostgreSQL URL whose server accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"postgresql+asyncpg://gradepulse@127.0.0.1:{port}/silent"
    for writer in held:
        writer.close()
    server.close()
    await asyncio.wait_for(server.wait_closed(), 5)


async def test_ready_answers_within_a_second_when_the_database_hangs(
    silent_database_url,
):
    from app import create_app

    # No lifespan: its CREATE TABLE would wait on the silent server too.
    app = create_app(make_settings(silent_database_url))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://127.0.0.1"
    ) as http:
        started = time.perf_counter()
        ready = await asyncio.wait_for(http.get("/health/ready"), 10)
        elapsed = time.perf_counter() - started
    await asyncio.wait_for(app.state.services.database.dispose(), 10)

    assert ready.status_code == 503
    assert ready.json() == {
        "status": "unavailable",
        "database": {"status": "unavailable", "dialect": "postgresql"},
    }
    # The check gives up after 1 s; the rest is slack for a busy 2-core CI.
    assert 1.0 <= elapsed < 2.0, elapsed
