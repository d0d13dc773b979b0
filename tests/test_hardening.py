"""Production hardening: masked unexpected errors (queries and subscriptions alike),
GraphiQL off, and refused settings."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from settings import SettingsError, load_settings
from tests.asgi_ws import AsgiWebSocket
from tests.factories import TEST_JWT_SECRET, bearer_header, jwt_token


async def test_production_masks_unexpected_errors_with_the_request_id(
    make_api, scratch_url, monkeypatch
):
    from resolvers import grades

    async def broken(ctx):
        raise RuntimeError("password=hunter2 at row 7")

    monkeypatch.setattr(grades, "list_subjects", broken)
    api = await make_api(
        scratch_url, environment="production", jwt_secret=TEST_JWT_SECRET
    )

    response = await api.http.post(
        "/graphql",
        json={"query": "{ subjects }"},
        headers={**bearer_header(jwt_token()), "X-Request-ID": "req-prod-1"},
    )

    error = response.json()["errors"][0]
    assert error["message"] == "Unexpected error."
    assert error["extensions"] == {
        "code": "INTERNAL_SERVER_ERROR",
        "requestId": "req-prod-1",
    }
    assert "hunter2" not in response.text


async def test_production_keeps_coded_errors_as_they_are(make_api, scratch_url):
    api = await make_api(
        scratch_url, environment="production", jwt_secret=TEST_JWT_SECRET
    )

    response = await api.http.post(
        "/graphql",
        json={"query": "{ students(first: 0) { totalCount } }"},
        headers=bearer_header(jwt_token()),
    )

    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "first" in error["message"]


async def test_production_masks_unexpected_errors_in_subscriptions(
    make_api, scratch_url, monkeypatch
):
    from resolvers import live

    async def broken(ctx, interval_ms):
        raise RuntimeError("secret detail from the sampler")
        yield  # pragma: no cover - makes this an async generator

    monkeypatch.setattr(live, "metrics", broken)

    @contextmanager
    def broken_feed(ctx, interval_ms):
        raise RuntimeError("secret detail from the sampler")
        yield  # pragma: no cover - makes this a generator

    # The shared path (server/fanout.py) starts with the feed; failing, it hands
    # the subscription to the general path, which meets the broken stream.
    monkeypatch.setattr(live, "metrics_feed", broken_feed)
    api = await make_api(
        scratch_url, environment="production", jwt_secret=TEST_JWT_SECRET
    )

    async with AsgiWebSocket(api.app) as ws:
        await ws.send_json(
            {"type": "connection_init", "payload": bearer_header(jwt_token())}
        )
        assert (await ws.receive_json())["type"] == "connection_ack"
        await ws.send_json(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": "subscription { metrics { uptimeSeconds } }"},
            }
        )
        message = await ws.receive_json()

    assert message["id"] == "1"
    payload = message["payload"]
    errors = payload if message["type"] == "error" else payload["errors"]
    assert errors[0]["message"] == "Unexpected error."
    assert errors[0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "secret detail" not in str(message)


async def test_graphiql_and_introspection_are_off_in_production(make_api, scratch_url):
    api = await make_api(
        scratch_url, environment="production", jwt_secret=TEST_JWT_SECRET
    )

    page = await api.http.get(
        "/graphql", headers={"Accept": "text/html", **bearer_header(jwt_token())}
    )
    introspection = await api.http.post(
        "/graphql",
        json={"query": "{ __schema { queryType { name } } }"},
        headers=bearer_header(jwt_token()),
    )

    assert "text/html" not in page.headers["content-type"]
    assert "data" not in introspection.json()  # refused before execution
    error = introspection.json()["errors"][0]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert error["message"] == (
        "GraphQL introspection has been disabled, but the requested query contained "
        "the field '__schema'."
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"environment": "staging", "auth_required": False},
            "invalid settings: AUTH_REQUIRED: AUTH_REQUIRED may not be false in "
            "staging",
        ),
        (
            {"environment": "production", "jwt_secret": "short"},
            "invalid settings: JWT_SECRET: JWT_SECRET must be at least 32 characters",
        ),
        (
            {"max_cost": 20_000},
            "invalid settings: RATE_LIMIT_STUDENT: RATE_LIMIT_STUDENT must be at "
            "least MAX_COST (20000), or the costliest query could never run",
        ),
    ],
)
def test_insecure_settings_are_refused(overrides, message):
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None, **overrides)

    assert str(refused.value) == message


@pytest.mark.parametrize(
    ("environment", "auth", "introspection", "graphiql"),
    [
        ("development", False, True, True),
        ("staging", True, True, True),
        ("production", True, False, False),
    ],
)
def test_profiles_default_auth_introspection_and_graphiql(
    environment, auth, introspection, graphiql
):
    settings = load_settings(_env_file=None, environment=environment)

    assert settings.requires_auth is auth
    assert settings.introspection is introspection
    assert settings.graphiql is graphiql
    assert settings.trusted_host_list == ["127.0.0.1", "localhost"]
    assert (settings.max_depth, settings.max_aliases, settings.max_tokens) == (
        10,
        15,
        2000,
    )
    assert (settings.max_directives, settings.max_document_chars) == (50, 15_000)
    assert (settings.max_body_bytes, settings.max_cost) == (1_048_576, 5000)
    assert (settings.operation_timeout_s, settings.batching_enabled) == (5.0, False)
    assert settings.max_batch_operations == 10
    assert (
        settings.rate_limit_student,
        settings.rate_limit_teacher,
        settings.rate_limit_admin,
    ) == (10_000, 50_000, 200_000)
