"""The access log (monitoring/middleware.py): one JSON line per HTTP request with
exactly the documented fields, no query string and no credentials; ACCESS_LOG=false
silences it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from tests.factories import TEST_JWT_SECRET, bearer_header, jwt_token

FIELDS = {"requestId", "method", "path", "operation", "status", "durationMs"}


@pytest.fixture
def access_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Records of gradepulse.access, which the app keeps from propagating to the root
    logger where caplog listens."""
    logger = logging.getLogger("gradepulse.access")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Each record once (caplog may also hear it through the root logger)."""
    records = {id(r): r for r in caplog.records if r.name == "gradepulse.access"}
    return [record.getMessage() for record in records.values()]


async def test_each_request_writes_one_json_line_without_query_string_or_token(
    make_api, scratch_url, access_log
):
    api = await make_api(scratch_url, jwt_secret=TEST_JWT_SECRET)
    token = jwt_token()

    response = await api.http.post(
        "/graphql?token=query-string-secret",
        json={"query": "query Students { students { totalCount } }"},
        headers={"X-Request-ID": "req-access-1", **bearer_header(token)},
    )

    assert response.json()["data"] == {"students": {"totalCount": 0}}
    [line] = access_lines(access_log)
    entry = json.loads(line)
    assert set(entry) == FIELDS
    duration = entry.pop("durationMs")
    assert entry == {
        "requestId": "req-access-1",
        "method": "POST",
        "path": "/graphql",
        "operation": "Students",
        "status": 200,
    }
    assert isinstance(duration, float) and duration >= 0
    for secret in ("query-string-secret", "token=", token, "Bearer"):
        assert secret not in line


async def test_refused_requests_are_logged_with_their_status(
    make_api, scratch_url, access_log
):
    api = await make_api(scratch_url, auth_required=True, jwt_secret=TEST_JWT_SECRET)

    response = await api.http.get("/graphql?query={__typename}&key=gp_leaky")

    assert response.status_code == 401
    [line] = access_lines(access_log)
    entry = json.loads(line)
    assert (entry["method"], entry["path"], entry["status"]) == (
        "GET",
        "/graphql",
        401,
    )
    assert entry["requestId"] == response.headers["x-request-id"]
    assert "gp_leaky" not in line and "__typename" not in line


async def test_access_log_false_writes_no_line(make_api, scratch_url, access_log):
    api = await make_api(scratch_url, access_log=False)

    response = await api.http.post("/graphql", json={"query": "{ __typename }"})

    assert response.json()["data"] == {"__typename": "Query"}
    assert access_lines(access_log) == []
