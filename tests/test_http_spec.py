"""GraphQL over HTTP: media types, status codes, request shapes, body and batch limits,
timeouts, trusted hosts, CORS and the /metrics guard."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from tests.asgi_ws import AsgiWebSocket
from tests.factories import TEST_JWT_SECRET, bearer_header, jwt_token, post

# The HTTP and WebSocket layers: the same on either backend (conftest.py).
pytestmark = pytest.mark.sqlite_only

GRAPHQL_RESPONSE = "application/graphql-response+json"
SUBJECTS = ["Art", "English", "History", "Math", "Science"]
ADD_STUDENT = """mutation { studentCreate(input: {studentId: "H1", name: "Hal",
  email: "hal@example.org", gradeLevel: 9}) { __typename } }"""


def code_of(body: dict) -> str:
    return body["errors"][0]["extensions"]["code"]


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("application/*", "application/json"),
        ("application/json", "application/json"),
        (GRAPHQL_RESPONSE, f"{GRAPHQL_RESPONSE}; charset=utf-8"),
        (
            f"application/json;q=0.5, {GRAPHQL_RESPONSE}",
            f"{GRAPHQL_RESPONSE}; charset=utf-8",
        ),
        (f"{GRAPHQL_RESPONSE};q=0.2, application/json", "application/json"),
    ],
)
async def test_content_negotiation_picks_the_preferred_media_type(
    seeded_api, accept, media_type
):
    response = await post(seeded_api, {"query": "{ subjects }"}, accept=accept)

    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.json()["data"] == {"subjects": SUBJECTS}


async def test_an_unacceptable_accept_header_is_406(api):
    response = await post(api, {"query": "{ __typename }"}, accept="text/plain")

    assert response.status_code == 406
    assert code_of(response.json()) == "BAD_USER_INPUT"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"query": "{ students {"}, "GRAPHQL_PARSE_FAILED"),
        ({"query": "{ helo }"}, "GRAPHQL_VALIDATION_FAILED"),
        (
            {
                "query": "query($n: Int!) { students(first: $n) { totalCount } }",
                "variables": {"n": "ten"},
            },
            "BAD_USER_INPUT",
        ),
        ({"query": "{ " + "a: __typename " * 16 + "}"}, "TOO_MANY_ALIASES"),
        (
            {
                "query": "{ "
                + " ".join(
                    f"{alias}: students(first: 100) {{ edges {{ node {{ grades "
                    "{ subject } } } }"
                    for alias in "abc"
                )
                + " }"
            },
            "QUERY_TOO_COSTLY",
        ),
    ],
)
async def test_request_errors_are_400_without_data_under_graphql_response_json(
    api, body, code
):
    strict = await post(api, body, accept=GRAPHQL_RESPONSE)
    legacy = await post(api, body, accept="application/json")

    assert strict.status_code == 400
    assert "data" not in strict.json()
    assert code_of(strict.json()) == code
    assert legacy.status_code == 200
    assert "data" not in legacy.json()
    assert code_of(legacy.json()) == code


async def test_a_field_error_is_200_with_data_under_graphql_response_json(api):
    response = await post(
        api, {"query": "{ students(first: 0) { totalCount } }"}, accept=GRAPHQL_RESPONSE
    )

    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None
    assert body["errors"][0]["path"] == ["students"]
    assert code_of(body) == "BAD_USER_INPUT"


async def test_get_answers_queries(seeded_api):
    response = await seeded_api.http.get(
        "/graphql",
        params={
            "query": "query Named($first: Int!) { students(first: $first) "
            "{ totalCount } }",
            "variables": json.dumps({"first": 1}),
            "operationName": "Named",
        },
    )

    assert response.status_code == 200
    assert response.json()["data"] == {"students": {"totalCount": 120}}


@pytest.mark.parametrize("environment", ["development", "production"])
async def test_a_mutation_over_get_is_405_with_allow_post(
    make_api, scratch_url, environment
):
    api = await make_api(
        scratch_url, environment=environment, jwt_secret=TEST_JWT_SECRET
    )

    response = await api.http.get(
        "/graphql", params={"query": ADD_STUDENT}, headers=bearer_header(jwt_token())
    )

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert code_of(response.json()) == "BAD_USER_INPUT"
    assert response.headers["RateLimit-Policy"] == '"default";q=200000;w=60'
    assert response.headers["RateLimit"] == '"default";r=200000;t=0'
    created = await post(
        api,
        {"query": "{ students { totalCount } }"},
        headers=bearer_header(jwt_token()),
    )
    assert created.json()["data"] == {"students": {"totalCount": 0}}


@pytest.mark.parametrize("method", ["HEAD", "PUT", "DELETE", "PATCH"])
async def test_other_methods_are_405_with_allow(api, method):
    response = await api.http.request(method, "/graphql")

    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/graphql"],
)
async def test_other_content_types_are_415(api, content_type):
    response = await api.http.post(
        "/graphql",
        content=b'{"query": "{ __typename }"}',
        headers={"content-type": content_type},
    )

    assert response.status_code == 415
    assert response.headers["content-type"] == "application/json"
    assert code_of(response.json()) == "BAD_USER_INPUT"


async def test_a_json_body_in_another_charset_is_415(api):
    response = await api.http.post(
        "/graphql",
        content=b'{"query": "{ __typename }"}',
        headers={"content-type": "application/json; charset=latin-1"},
    )

    assert response.status_code == 415


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"query": ', "the request body is not valid JSON"),
        (b"not json at all", "the request body is not valid JSON"),
        (b"{}", "the request has no `query`"),
        (b'{"query": null}', "the request has no `query`"),
        (b'{"query": 42}', "`query` must be a string"),
        (
            b'{"query": "{ __typename }", "variables": [1]}',
            "`variables` must be an object or null",
        ),
        (
            b'{"query": "{ __typename }", "operationName": 3}',
            "`operationName` must be a string or null",
        ),
        (b'"{ __typename }"', "the request must be a JSON object"),
    ],
)
async def test_malformed_requests_are_400_with_a_coded_json_body(api, content, message):
    response = await api.http.post(
        "/graphql", content=content, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    body = response.json()
    assert body["errors"][0]["message"] == message
    assert code_of(body) == "BAD_USER_INPUT"
    assert (
        body["errors"][0]["extensions"]["requestId"] == response.headers["x-request-id"]
    )


async def test_a_body_over_the_limit_is_413(make_api, scratch_url):
    api = await make_api(scratch_url, max_body_bytes=100)
    content = json.dumps({"query": "{ __typename }", "variables": {"pad": "x" * 200}})

    response = await api.http.post(
        "/graphql", content=content, headers={"content-type": "application/json"}
    )

    assert response.status_code == 413
    extensions = response.json()["errors"][0]["extensions"]
    assert extensions["code"] == "BODY_TOO_LARGE"
    assert extensions["limit"] == 100
    assert extensions["actual"] == len(content.encode())


async def test_a_chunked_body_over_the_limit_is_413_without_reading_it_all(
    make_api, scratch_url
):
    api = await make_api(scratch_url, max_body_bytes=100)
    sent = []

    async def chunks():
        for _ in range(50):
            sent.append(1)
            yield b" " * 64

    response = await api.http.post(
        "/graphql", content=chunks(), headers={"content-type": "application/json"}
    )

    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["limit"] == 100
    assert response.json()["errors"][0]["extensions"]["actual"] == 128


async def test_a_chunked_upload_over_the_limit_is_413(make_api, scratch_url):
    api = await make_api(scratch_url, max_upload_bytes=1000)
    boundary = "gpboundary"
    operations = json.dumps(
        {
            "query": "mutation($f: Upload!) { gradesImport(file: $f) { __typename } }",
            "variables": {"f": None},
        }
    )
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="operations"\r\n\r\n'
        f"{operations}\r\n--{boundary}\r\nContent-Disposition: form-data; "
        f'name="map"\r\n\r\n{{"0": ["variables.f"]}}\r\n--{boundary}\r\n'
        'Content-Disposition: form-data; name="0"; filename="g.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()

    async def chunks():
        yield head
        for _ in range(100):  # 6,400 bytes of file, no Content-Length
            yield b"S1,Math,50,100,\n" * 4

    response = await api.http.post(
        "/graphql",
        content=chunks(),
        headers={
            "content-type": f"multipart/form-data; boundary={boundary}",
            "X-GradePulse-Upload": "1",
        },
    )

    assert response.status_code == 413
    extensions = response.json()["errors"][0]["extensions"]
    assert (extensions["code"], extensions["limit"]) == ("BODY_TOO_LARGE", 1000)
    assert extensions["actual"] > 1000


async def test_a_body_within_the_limit_is_served(make_api, scratch_url):
    api = await make_api(scratch_url, max_body_bytes=100)

    response = await post(api, {"query": "{ __typename }"})

    assert response.status_code == 200
    assert response.json()["data"] == {"__typename": "Query"}


async def test_batches_are_refused_while_batching_is_off(api):
    response = await post(api, [{"query": "{ __typename }"}])

    assert response.status_code == 400
    assert (
        "batched operations are switched off" in response.json()["errors"][0]["message"]
    )


async def test_batches_run_each_operation_when_batching_is_on(make_api, seeded_url):
    api = await make_api(seeded_url, batching_enabled=True, max_batch_operations=3)

    response = await post(
        api,
        [{"query": "{ subjects }"}, {"query": "{ helo }"}, {"query": "{ __typename }"}],
    )

    assert response.status_code == 200
    first, second, third = response.json()
    assert first["data"] == {"subjects": SUBJECTS}
    assert code_of(second) == "GRAPHQL_VALIDATION_FAILED"
    assert third["data"] == {"__typename": "Query"}


async def test_a_refused_element_of_a_batch_keeps_the_others_results(
    make_api, scratch_url
):
    api = await make_api(scratch_url, batching_enabled=True)

    response = await post(
        api,
        [
            {"query": ADD_STUDENT},
            {"query": "{ students { totalCount } }"},
            {"query": "subscription { metrics { uptimeSeconds } }"},
        ],
    )

    assert response.status_code == 200
    added, counted, refused = response.json()
    # The budget after the last element that was costed.
    assert response.headers["RateLimit"].startswith('"default";r=1999')
    assert added["data"] == {"studentCreate": {"__typename": "StudentCreateSuccess"}}
    assert "WebSocket" in refused["errors"][0]["message"]
    assert "data" not in refused
    assert counted["data"] == {"students": {"totalCount": 1}}


async def test_a_batch_over_the_limit_is_batch_too_large(make_api, scratch_url):
    api = await make_api(scratch_url, batching_enabled=True, max_batch_operations=2)

    response = await post(api, [{"query": "{ __typename }"}] * 3)

    assert response.status_code == 400
    extensions = response.json()["errors"][0]["extensions"]
    assert (extensions["code"], extensions["limit"], extensions["actual"]) == (
        "BATCH_TOO_LARGE",
        2,
        3,
    )


async def test_a_subscription_over_http_is_refused(api):
    response = await post(api, {"query": "subscription { metrics { uptimeSeconds } }"})

    assert response.status_code == 400
    assert "WebSocket" in response.json()["errors"][0]["message"]


async def test_a_slow_operation_times_out_and_others_keep_being_served(
    make_api, seeded_url, monkeypatch
):
    from resolvers import grades

    # 1 s: room for the other request to be answered first on a busy 2-core CI.
    api = await make_api(seeded_url, operation_timeout_s=1.0)
    running = asyncio.Event()
    released = asyncio.Event()  # never set: only the operation timeout ends it

    async def slow(ctx):
        running.set()
        await asyncio.wait_for(released.wait(), 30)
        return []

    monkeypatch.setattr(grades, "list_subjects", slow)
    slow_request = asyncio.create_task(post(api, {"query": "{ subjects }"}))
    await asyncio.wait_for(running.wait(), 10)
    started = time.perf_counter()
    other = await asyncio.wait_for(
        post(api, {"query": "{ students(first: 1) { totalCount } }"}), 10
    )
    elapsed = time.perf_counter() - started
    answered_first = not slow_request.done()
    response = await asyncio.wait_for(slow_request, 10)

    assert other.json()["data"] == {"students": {"totalCount": 120}}
    # Served while the slow one was still running, not behind it.
    assert answered_first
    assert elapsed < 1.0, elapsed
    body = response.json()
    assert response.status_code == 200
    assert "data" not in body  # stopped: nothing of it is returned
    extensions = body["errors"][0]["extensions"]
    assert extensions["code"] == "OPERATION_TIMEOUT"
    assert extensions["limit"] == 1.0
    assert 1.0 <= extensions["actual"] < 2.0
    assert body["extensions"]["rateLimit"]["cost"] == 0  # { subjects } is free


async def test_missing_credentials_are_401_when_auth_is_required(make_api, scratch_url):
    api = await make_api(scratch_url, auth_required=True, jwt_secret="s" * 32)

    for accept in ("application/json", GRAPHQL_RESPONSE):
        response = await post(api, {"query": "{ __typename }"}, accept=accept)

        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert code_of(response.json()) == "UNAUTHENTICATED"
        assert "data" not in response.json()


async def test_repeated_bad_credentials_are_429_before_any_lookup(
    make_api, scratch_url
):
    api = await make_api(scratch_url, auth_required=True, jwt_secret="s" * 32)
    bad = {"Authorization": "Bearer gp_" + "x" * 43}

    refusals = [
        (await post(api, {"query": "{ __typename }"}, headers=bad)).status_code
        for _ in range(30)
    ]
    api.counter.reset()
    limited = [
        await post(api, {"query": "{ __typename }"}, headers=bad) for _ in range(5)
    ]

    assert refusals == [401] * 30
    assert [response.status_code for response in limited] == [429] * 5
    assert int(limited[0].headers["Retry-After"]) >= 1
    assert code_of(limited[0].json()) == "RATE_LIMITED"
    # The key was not looked up: the live keys' prefixes were read once (a key
    # with a live prefix is looked up all the same), and none since.
    assert api.counter.statements == [
        "SELECT api_keys.prefix \nFROM api_keys \nWHERE api_keys.revoked_at IS NULL"
    ]


async def test_a_database_outage_while_authenticating_is_503(
    make_api, scratch_url, monkeypatch
):
    from sqlalchemy.exc import OperationalError

    from resolvers import auth

    api = await make_api(scratch_url, auth_required=True, jwt_secret="s" * 32)

    async def unreachable(session, digest):
        raise OperationalError("SELECT", {}, ConnectionRefusedError())

    monkeypatch.setattr(auth, "find_active_key", unreachable)
    response = await post(
        api,
        {"query": "{ __typename }"},
        headers={"Authorization": "Bearer gp_" + "k" * 43},
    )

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert code_of(response.json()) == "DB_UNAVAILABLE"


async def test_anonymous_callers_off_loopback_are_401_in_development(
    make_api, scratch_url
):
    api = await make_api(scratch_url)
    remote = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api.app, client=("10.1.2.3", 4000)),
        base_url="http://127.0.0.1",
    )
    async with remote:
        refused = await remote.post("/graphql", json={"query": "{ __typename }"})
    local = await post(api, {"query": "{ __typename }"})

    assert refused.status_code == 401
    assert code_of(refused.json()) == "UNAUTHENTICATED"
    assert local.json()["data"] == {"__typename": "Query"}


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.nip.io"])
async def test_untrusted_host_headers_are_refused(api, host):
    response = await api.http.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"Host": host}
    )

    assert response.status_code == 400
    assert "data" not in response.text


@pytest.mark.parametrize(
    "hosts", [("127.0.0.1", "evil.example"), ("127.0.0.1", "127.0.0.1")]
)
async def test_two_host_headers_are_refused(api, hosts):
    """RFC 9112: a request with more than one Host line is 400, whichever they are
    (a proxy may have routed on the other one)."""
    response = await api.http.post(
        "/graphql",
        json={"query": "{ __typename }"},
        headers=[("Host", host) for host in hosts],
    )

    assert response.status_code == 400
    assert response.text == "Invalid host header"


async def test_untrusted_host_headers_are_refused_on_websockets(api):
    with pytest.raises(ConnectionError, match="handshake refused"):
        async with AsgiWebSocket(api.app, host="evil.example"):
            pass

    async with AsgiWebSocket(api.app) as ws:  # the same handshake, trusted host
        await ws.send_json({"type": "connection_init", "payload": {}})
        assert (await ws.receive_json())["type"] == "connection_ack"


async def test_trusted_hosts_are_configurable(make_api, scratch_url):
    api = await make_api(scratch_url, trusted_hosts="grades.example.org")

    allowed = await api.http.post(
        "/graphql",
        json={"query": "{ __typename }"},
        headers={"Host": "grades.example.org"},
    )
    refused = await post(api, {"query": "{ __typename }"})

    assert allowed.status_code == 200
    assert refused.status_code == 400


async def test_cors_allows_only_the_listed_origins(make_api, scratch_url):
    api = await make_api(scratch_url, cors_origins="https://app.example.org")
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }

    allowed = await api.http.options(
        "/graphql", headers={"Origin": "https://app.example.org", **preflight}
    )
    other = await api.http.options(
        "/graphql", headers={"Origin": "https://evil.example", **preflight}
    )
    simple = await post(
        api, {"query": "{ __typename }"}, headers={"Origin": "https://app.example.org"}
    )

    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.org"
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers
    assert simple.headers["access-control-allow-origin"] == "https://app.example.org"
    assert "RateLimit" in simple.headers["access-control-expose-headers"]


async def test_no_cors_headers_without_an_allow_list(api):
    response = await post(
        api, {"query": "{ __typename }"}, headers={"Origin": "https://app.example.org"}
    )

    assert "access-control-allow-origin" not in response.headers


def _remote(api, host: str = "10.9.8.7") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api.app, client=(host, 5000)),
        base_url="http://127.0.0.1",
    )


async def test_metrics_are_answered_to_loopback_clients_only(api):
    local = await api.http.get("/metrics")
    async with _remote(api) as remote:
        refused = await remote.get("/metrics")

    assert local.status_code == 200
    assert "http_requests_total" in local.text
    assert refused.status_code == 403
    assert "http_requests_total" not in refused.text


async def test_metrics_token_admits_remote_scrapers(make_api, scratch_url):
    api = await make_api(scratch_url, metrics_token="scrape-secret")

    async with _remote(api) as remote:
        allowed = await remote.get(
            "/metrics", headers={"Authorization": "Bearer scrape-secret"}
        )
        wrong = await remote.get("/metrics", headers={"Authorization": "Bearer nope"})
        missing = await remote.get("/metrics")

    assert allowed.status_code == 200
    assert "http_requests_total" in allowed.text
    assert (wrong.status_code, missing.status_code) == (401, 401)
    assert "http_requests_total" not in wrong.text
