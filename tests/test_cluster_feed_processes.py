"""The cluster's feed across two `python app.py` processes on one PostgreSQL database
and one Redis: grade events written through one reach subscribers of the other once,
in order, and the metrics of either count the requests of both."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.factories import TRANSPORT_WS
from tests.factories.cluster import cluster

pytestmark = pytest.mark.cluster

WAIT_S = 15.0  # a bound on every wait on a busy machine
STUDENT = """mutation { studentCreate(input: {studentId: "P00001", name: "Pat Doe",
  email: "pat@school.example", gradeLevel: 8}) { __typename } }"""
GRADE_ADD = """mutation Add($score: Float!) {
  gradeAdd(input: {studentId: "P00001", subject: "Math", score: $score}) {
    __typename } }"""
GRADE_EVENTS = """subscription { gradeEvents(studentId: "P00001") {
  studentId gradeLevel grades { subject score } } }"""
METRICS = "{ metrics { requestsTotal workers degraded } }"


asked: dict[int, int] = {}  # operations sent to each app (by port)


def graphql(app: Any, query: str, variables: dict[str, Any] | None = None) -> Any:
    response = app.post(query, variables)
    asked[app.port] = asked.get(app.port, 0) + 1
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


async def test_grade_events_and_metrics_cross_processes(
    tmp_path: Path, cluster_database_url: str, redis_url: str, redis_prefix: str
):
    with cluster(
        tmp_path,
        2,
        database_url=cluster_database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
    ) as apps:
        a, b = apps[0], apps[1]
        assert graphql(b, STUDENT)["studentCreate"]["__typename"] == (
            "StudentCreateSuccess"
        )
        async with connect(a.ws_url, subprotocols=[TRANSPORT_WS]) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            await ws.send(
                json.dumps(
                    {"id": "1", "type": "subscribe", "payload": {"query": GRADE_EVENTS}}
                )
            )
            # The subscription has started once A counts it.
            deadline = time.monotonic() + WAIT_S
            while (
                graphql(a, "{ metrics { activeSubscriptions } }")["metrics"][
                    "activeSubscriptions"
                ]
                < 1
            ):
                assert time.monotonic() < deadline, "the subscription did not start"
                await asyncio.sleep(0.05)

            for score in (10.0, 20.0, 30.0):
                result = await asyncio.to_thread(
                    graphql, b, GRADE_ADD, {"score": score}
                )
                assert result["gradeAdd"]["__typename"] == "GradeAddSuccess"
            received = []
            while len(received) < 3:
                frame = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
                if frame["type"] == "next":
                    received.append(frame["payload"]["data"]["gradeEvents"])
            with pytest.raises(TimeoutError):
                extra = await asyncio.wait_for(ws.recv(), 1.0)
                raise AssertionError(f"an event too many: {extra}")

        # B has served 4 operations (the student and 3 grades): A's figures count
        # them beside A's own once B's next sample is in; the query asking is not
        # yet counted when it answers.
        deadline = time.monotonic() + WAIT_S
        while True:
            own = asked[a.port]
            metrics = graphql(a, METRICS)["metrics"]
            if metrics["requestsTotal"] == own + 4 and metrics["workers"] == 2:
                break
            assert time.monotonic() < deadline, (metrics, own)
            await asyncio.sleep(0.1)
        b_metrics = graphql(b, METRICS)["metrics"]

    assert received == [
        {
            "studentId": "P00001",
            "gradeLevel": 8,
            "grades": [{"subject": "Math", "score": score}],
        }
        for score in (10.0, 20.0, 30.0)
    ]
    assert metrics["degraded"] is False
    assert (b_metrics["workers"], b_metrics["degraded"]) == (2, False)
