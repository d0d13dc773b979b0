"""Monitoring through the real app: extensions.cost, /metrics, request ids, health,
the monitoring queries and costSummaryWrite."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.factories import free_port

STUDENTS = "query Roster { students(first: 5) { edges { node { studentId grades { score } } } } }"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_cost_extension_prices_the_statements_the_operation_ran(seeded_api):
    seeded_api.counter.reset()

    body = await seeded_api.post(STUDENTS)

    statements = len(seeded_api.counter.statements)
    assert statements == 2
    assert body["extensions"]["cost"] == {
        "dbQueries": statements,
        "apiRequests": 1,
        "dbCost": round(statements * 0.0001, 6),
        "apiCost": 0.00001,
        "totalCost": round(statements * 0.0001 + 0.00001, 6),
    }


async def test_cost_extension_counts_writes_too(api):
    api.counter.reset()
    body = await api.post(
        'mutation { studentCreate(input: {studentId: "C1", name: "Cy", '
        'email: "cy@school.example", gradeLevel: 3}) { __typename } }'
    )

    statements = len(api.counter.statements)
    assert body["extensions"]["cost"]["dbQueries"] == statements
    assert statements >= 3  # two uniqueness checks and the insert


async def test_metrics_endpoint_counts_requests_and_operations(seeded_api):
    for _ in range(3):
        await seeded_api.post(STUDENTS)
    await seeded_api.post("{ helo }")

    response = await seeded_api.http.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    assert found[("http_requests_total", (("method", "POST"), ("status", "200")))] == 4
    assert (
        found[
            (
                "graphql_operation_duration_seconds_count",
                (("operation", "Roster"), ("operation_type", "query")),
            )
        ]
        == 3
    )
    assert found[("db_queries_total", ())] >= 6
    assert (
        "graphql_resolver_duration_seconds_count",
        (("field", "Query.students"),),
    ) in found
    assert ("process_resident_memory_bytes", ()) in found
    assert ("cost_dollars_total", (("kind", "total"),)) in found
    firing = {
        dict(labels)["rule"] for (name, labels) in found if name == "alerts_firing"
    }
    assert firing == {
        "high_response_time",
        "low_cache_hit_rate",
        "high_memory",
        "high_error_rate",
        "high_cost",
    }
    assert ("cache_hits_total", (("cache", "students"),)) in found


async def test_operation_labels_are_bounded(api):
    for n in range(55):
        await api.post(f"query Op{n} {{ __typename }}")

    found = samples((await api.http.get("/metrics")).text)
    names = {
        dict(labels)["operation"]
        for (name, labels) in found
        if name == "graphql_operation_duration_seconds_count"
    }
    assert len(names) == 51
    assert (
        found[
            (
                "graphql_operation_duration_seconds_count",
                (("operation", "other"), ("operation_type", "query")),
            )
        ]
        == 5
    )


async def test_request_id_is_echoed_and_server_timing_added(api):
    response = await api.http.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"X-Request-ID": "abc-1"}
    )
    generated = await api.http.get("/health/live")

    assert response.headers["x-request-id"] == "abc-1"
    assert response.headers["server-timing"].startswith("app;dur=")
    assert len(generated.headers["x-request-id"]) == 32


async def test_metrics_query_reflects_the_requests(seeded_api):
    # The cost meter is the database's: earlier tests on it have spent already.
    before = await seeded_api.post("{ metrics { totalCost } }")
    spent = before["data"]["metrics"]["totalCost"] + 0.00001  # that query
    for _ in range(4):
        await seeded_api.post(STUDENTS)

    body = await seeded_api.post(
        "{ metrics { environment requestsTotal requestsPerMinute errorRate "
        "responseTimeMs { avg p50 p95 p99 } dbQueriesTotal memoryMb cacheHits "
        "cacheMisses totalCost currentPeriodCost activeSubscriptions } }"
    )

    metrics = body["data"]["metrics"]
    assert metrics["environment"] == "development"
    assert metrics["requestsTotal"] == 5  # this query is still running
    assert metrics["requestsPerMinute"] == 5
    assert metrics["errorRate"] == 0.0
    assert 0 < metrics["responseTimeMs"]["p50"] <= metrics["responseTimeMs"]["p99"]
    assert metrics["dbQueriesTotal"] >= 8
    assert metrics["memoryMb"] > 10
    assert metrics["activeSubscriptions"] == 0
    assert metrics["totalCost"] == pytest.approx(
        spent + 4 * (2 * 0.0001 + 0.00001), abs=1e-6
    )


@pytest.mark.parametrize(("query_plans", "grade_steps"), [(True, 1), (False, 5)])
async def test_slowest_resolvers_lists_timed_fields(
    make_api, seeded_url, query_plans, grade_steps
):
    """A compiled plan times each step once (the grades of the page's 5 students
    in one step); the general executor times each call."""
    api = await make_api(seeded_url, query_plans=query_plans)
    await api.post(STUDENTS)

    body = await api.post("{ slowestResolvers(first: 5) { field count avgMs p95Ms } }")

    fields = {row["field"]: row for row in body["data"]["slowestResolvers"]}
    assert fields["Query.students"]["count"] == 1
    assert fields["Student.grades"]["count"] == grade_steps
    assert fields["Student.grades"]["avgMs"] > 0
    assert "Grade.score" not in fields  # trivial attribute resolvers are not timed


async def test_cost_summary_write_appends_a_row(api):
    for _ in range(3):
        await api.post("{ __typename }")

    body = await api.post(
        "mutation { costSummaryWrite { __typename ... on CostSummaryWriteSuccess "
        "{ row { timestamp environment dbQueries apiRequests dbCost apiCost totalCost } } } }"
    )

    row = body["data"]["costSummaryWrite"]["row"]
    assert row["apiRequests"] == 3
    assert row["dbQueries"] == 0
    assert row["apiCost"] == 0.00003
    lines = Path("costs.csv").read_text().splitlines()
    assert (
        lines[0]
        == "timestamp,environment,db_queries,api_requests,db_cost,api_cost,total_cost"
    )
    assert lines[1].endswith(",development,0,3,0.000000,0.000030,0.000030")
    assert lines[1].startswith(row["timestamp"].removesuffix("Z"))


async def test_cost_summary_write_reports_an_unwritable_file(
    make_api, scratch_url, tmp_path
):
    (tmp_path / "blocked").mkdir()
    api = await make_api(scratch_url, costs_csv_path=str(tmp_path / "blocked"))
    await api.post("{ __typename }")

    body = await api.post(
        "mutation { costSummaryWrite { __typename ... on SinkUnavailableError { message } } }"
    )
    health = await api.http.get("/health")

    assert body["data"]["costSummaryWrite"]["__typename"] == "SinkUnavailableError"
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert health.json()["checks"]["costsCsv"]["status"] == "failing"
    assert health.json()["checks"]["costsCsv"]["failures"] == 1
    assert (await api.http.get("/health/ready")).status_code == 200


async def test_forced_alert_reaches_alert_log_and_the_alerts_query(
    make_api, scratch_url
):
    # Only the rule under test may fire (the test process itself is large).
    api = await make_api(scratch_url, alert_response_time_ms=0, alert_memory_mb=100_000)
    for _ in range(3):
        await api.post("{ __typename }")

    api.app.state.monitor.tick()
    body = await api.post("{ alerts(last: 5) { rule state message values threshold } }")

    events = body["data"]["alerts"]
    assert [(e["rule"], e["state"]) for e in events] == [
        ("high_response_time", "FIRING")
    ]
    assert events[0]["threshold"] == 0
    lines = Path("alert.log").read_text().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith(" - ALERT: " + events[0]["message"])
    assert events[0]["message"].endswith("ms (threshold: 0ms)")


async def test_health_reports_version_checks_and_uptime(api):
    health = (await api.http.get("/health")).json()

    assert health["status"] == "ok"
    assert health["version"] == "0.1.0"
    assert set(health["checks"]) == {"database", "alertLog", "costsCsv"}
    assert health["uptimeSeconds"] >= 0
    assert health["cluster"] == {
        "workers": [health["worker"]["id"]],
        "redis": "unconfigured",
    }


async def test_health_reports_a_redis_that_answers(make_api, scratch_url, redis_url):
    api = await make_api(scratch_url, redis_url=redis_url)

    health = (await api.http.get("/health")).json()

    assert health["status"] == "ok"
    assert health["cluster"]["redis"] == "ok"
    assert health["worker"]["id"] in health["cluster"]["workers"]


async def test_a_redis_that_is_down_degrades_health_but_not_readiness(
    make_api, scratch_url
):
    # Nothing listens on that port (no TEST_REDIS_URL needed).
    api = await make_api(scratch_url, redis_url=f"redis://127.0.0.1:{free_port()}/0")

    health = await api.http.get("/health")
    ready = await api.http.get("/health/ready")

    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert health.json()["cluster"] == {
        "workers": [health.json()["worker"]["id"]],
        "redis": "down",
    }
    assert health.json()["checks"]["database"]["status"] == "ok"
    assert ready.status_code == 200
    assert ready.json()["status"] == "ok"


async def test_bad_alert_rules_stop_start_up(scratch_url):
    from app import create_app
    from settings import SettingsError
    from tests.conftest import make_settings

    with pytest.raises(SettingsError, match=r"^invalid settings: ALERT_RULES: "):
        create_app(make_settings(scratch_url, alert_rules='[{"id": "nope"}]'))


def test_operator_files_default_to_the_working_directory(monkeypatch):
    from settings import Settings

    for name in ("ALERT_LOG_PATH", "COSTS_CSV_PATH"):
        monkeypatch.delenv(name, raising=False)

    settings = Settings(_env_file=None)  # type: ignore[call-arg]  # pydantic-settings' init-only argument

    assert (settings.alert_log_path, settings.costs_csv_path) == (
        "alert.log",
        "costs.csv",
    )


async def test_costs_counted_before_a_restart_still_count(scratch_url):
    import httpx
    from asgi_lifespan import LifespanManager

    from app import create_app
    from tests.conftest import make_settings

    async def serve(requests: int, close: bool) -> dict | None:
        app = create_app(make_settings(scratch_url))
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://127.0.0.1"
            ) as http:
                for _ in range(requests):
                    await http.post("/graphql", json={"query": "{ __typename }"})
                if not close:
                    return None
                response = await http.post(
                    "/graphql",
                    json={
                        "query": "mutation { costSummaryWrite { ... on "
                        "CostSummaryWriteSuccess { row { apiRequests apiCost } } } }"
                    },
                )
                return response.json()["data"]["costSummaryWrite"]["row"]

    await serve(2, close=False)  # shutdown saves the open period
    row = await serve(1, close=True)

    # 2 before the restart and 1 after it; the mutation itself is counted when it
    # finishes, in the period it opened.
    assert row == {"apiRequests": 3, "apiCost": 0.00003}
    lines = Path("costs.csv").read_text().splitlines()
    assert len(lines) == 2
    assert lines[1].split(",")[2:] == ["0", "3", "0.000000", "0.000030", "0.000030"]


async def test_a_more_frequent_operation_takes_over_a_label(api):
    for n in range(50):
        await api.post(f"query Op{n} {{ __typename }}")
    for _ in range(3):
        await api.post("query Hot { __typename }")

    found = samples((await api.http.get("/metrics")).text)
    counts = {
        dict(labels)["operation"]: value
        for (name, labels), value in found.items()
        if name == "graphql_operation_duration_seconds_count"
    }
    assert len(counts) == 51  # 50 names and 'other'
    assert counts["Hot"] == 2  # its first run counted as 'other'
    assert counts["other"] == 1
    assert sum(1 for name in counts if name.startswith("Op")) == 49
