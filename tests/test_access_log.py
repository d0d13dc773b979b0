"""The access log (monitoring/middleware.py): one JSON line per HTTP request with
exactly the documented fields, no query string and no credentials; ACCESS_LOG=false
silences it."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator

import pytest

from monitoring import middleware
from monitoring.middleware import ACCESS_BATCH_LINES, ACCESS_FLUSH_S, AccessLines
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


class Stream:
    """A stream that counts its writes."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass


async def test_the_apps_own_handler_writes_lines_in_batches(
    make_api, scratch_url, monkeypatch
):
    """With only AccessLines listening (the default), the lines of many requests
    go out in one write, in order, at most ACCESS_FLUSH_S after the first."""
    api = await make_api(scratch_url)
    # Long enough for five requests on a slow machine.
    monkeypatch.setattr(middleware, "ACCESS_FLUSH_S", 1.0)
    logger = logging.getLogger("gradepulse.access")
    stream = Stream()
    handler = AccessLines(stream)
    monkeypatch.setattr(logger, "handlers", [handler])
    ids = [f"req-batch-{i}" for i in range(5)]

    for request_id in ids:
        response = await api.http.post(
            "/graphql",
            json={"query": "{ __typename }"},
            headers={"X-Request-ID": request_id},
        )
        assert response.status_code == 200
    assert stream.writes == []  # still waiting, together
    for _ in range(40):  # written within 1 s (bounded wait)
        if stream.writes:
            break
        await asyncio.sleep(0.05)

    [written] = stream.writes
    lines = written.splitlines()
    assert [json.loads(line)["requestId"] for line in lines] == ids
    assert written.endswith("\n")


async def test_a_full_batch_and_a_flush_write_at_once() -> None:
    stream = Stream()
    handler = AccessLines(stream)
    for i in range(ACCESS_BATCH_LINES):
        handler.write(f"line {i}")
    assert len(stream.writes) == 1
    assert stream.writes[0].count("\n") == ACCESS_BATCH_LINES
    handler.write("last")
    handler.flush()  # logging.shutdown() flushes every handler at exit
    assert stream.writes[1:] == ["last\n"]
    await asyncio.sleep(ACCESS_FLUSH_S * 2)  # the cancelled timer writes nothing
    assert len(stream.writes) == 2


def test_outside_the_event_loop_a_line_is_written_at_once() -> None:
    stream = Stream()
    handler = AccessLines(stream)
    logger = logging.getLogger("gradepulse.access.test")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("plain %s", "record")
    finally:
        logger.removeHandler(handler)
    assert stream.writes == ["plain record\n"]
