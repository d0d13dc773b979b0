"""The /dashboard page in a real headless Chromium against a live server: nothing
leaves 127.0.0.1, the figures move within 3 s under load, and the page reconnects
by itself after the server restarts on the same port. A screenshot is saved in the
test's temporary folder."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gql import Client, gql
from gql.transport.websockets import WebsocketsTransport
from graphql import parse, validate

from monitoring.dashboard import DashboardPage, dashboard_documents, render_dashboard
from server.gate import graphql_schema
from tests.browser import Browser, chromium_path
from tests.factories import (
    TEST_JWT_SECRET,
    TRANSPORT_WS,
    free_port,
    jwt_token,
    wait_until_up,
)

ROOT = Path(__file__).resolve().parents[1]
QUERIES = (
    '{ student(studentId: "S00007") { name analytics { average letter } } }',
    "{ students(first: 10, gradeLevel: 9) { edges { node { studentId grades "
    "{ score } } } } }",
    "{ classAnalytics { count } }",
)
FIGURES = (
    "requestsPerMinute",
    "responseAvg",
    "responseP95",
    "errorRate",
    "cacheHitRate",
    "memoryMb",
    "dbQueriesPerMinute",
    "activeSubscriptions",
    "totalCost",
    "periodCost",
)
READ_FIGURES = (
    "Object.fromEntries([...document.querySelectorAll('[data-metric]')]"
    ".map(e => [e.dataset.metric, e.textContent]))"
)
LIVE = "document.querySelector('#status').dataset.state === 'live'"
LEVELS = (
    "(() => { const l = window.gradePulseDashboard.level; return ["
    "l(399, 500, 'above'), l(400, 500, 'above'), l(500, 500, 'above'),"
    "l(501, 500, 'above'), l(85, 70, 'below'), l(84, 70, 'below'),"
    "l(69.9, 70, 'below'), l(null, 70, 'below')]; })()"
)
HIGH_COST_FIRING = (
    'document.querySelector(\'.alert[data-rule="high_cost"]'
    '[data-state="FIRING"]\') !== null'
)
ACTIVE_SUBSCRIPTIONS_AT_LEAST_3 = (
    "Number(document.querySelector('[data-metric=\"activeSubscriptions\"]')"
    ".textContent) >= 3"
)


class Server:
    """python app.py on one fixed port, stopped and started again at will."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{workdir / 'dashboard.db'}",
            "PYTHONPATH": str(ROOT),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "SAMPLE_INTERVAL_MS": "200",
            "ENVIRONMENT": "development",
            # Low enough that the load below (dollars per hour) fires high_cost on
            # any machine, high enough that the page's own query ($0.00001 in the
            # 2 s window: $0.018/h) does not.
            "ALERT_COST_PER_HOUR": "0.1",
            # high_cost waits for a full window of spending: 2 s, not 10 minutes.
            "ALERT_COST_WINDOW_S": "2",
            # The page names its documents by hash (trusted); the tests' own
            # clients send theirs whole (run, counted as untrusted).
            "PERSISTED_OPERATIONS": "audit",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def seed(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "db.seed", "--students", "50"]
            + ["--grades-per-student", "4"],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py")],
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until_up(self.port, self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)
        self.process = None


class Load:
    """A background thread posting GraphQL queries until stopped; connection errors
    (while the server restarts) are counted and waited out."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/graphql"
        self.ok = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            n = 0
            while not self._stop.is_set():
                try:
                    response = client.post(
                        self.url, json={"query": QUERIES[n % len(QUERIES)]}
                    )
                    response.raise_for_status()
                    self.ok += 1
                except httpx.HTTPError:
                    self.failed += 1
                    time.sleep(0.1)
                n += 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    chromium_path()
    live = Server(tmp_path_factory.mktemp("dashboard"))
    live.seed()
    live.start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def page(server: Server) -> Iterator[Browser]:
    browser = Browser()
    try:
        browser.goto(f"http://127.0.0.1:{server.port}/dashboard")
        browser.wait_for(LIVE)
        yield browser
    finally:
        browser.close()


def figures(page: Browser) -> dict[str, str]:
    values: dict[str, str] = page.evaluate(READ_FIGURES)
    return values


def number(text: str) -> float:
    return float(text.replace(",", "").replace("$", ""))


def wait_for_change(
    page: Browser, names: tuple[str, ...], before: dict[str, str], timeout: float
) -> float:
    """Seconds until every figure in `names` differs from `before`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        now = figures(page)
        if all(now[name] != before[name] for name in names):
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{names} did not change within {timeout} s: {figures(page)}")


def test_dashboard_loads_with_nothing_leaving_loopback(
    page: Browser, server: Server
) -> None:
    origin = f"http://127.0.0.1:{server.port}/"
    page.wait_for("Number(document.body.dataset.updates) >= 2")
    # the page's own three subscriptions: metrics, costs and alerts
    page.wait_for(ACTIVE_SUBSCRIPTIONS_AT_LEAST_3)

    shown = figures(page)
    ws_url = page.evaluate("window.gradePulseDashboard.wsUrl")
    violations = page.evaluate("window.gradePulseDashboard.violations")
    resources = page.evaluate(
        "performance.getEntriesByType('resource').map(e => e.name)"
    )
    config = json.loads(
        page.evaluate("document.getElementById('dashboard-config').textContent")
    )
    response_note = page.evaluate(
        "document.querySelector('[data-sub=\"responseAvg\"]').textContent"
    )
    requests = list(page.requests)

    outside = [
        url
        for url in [*requests, *resources]
        if not url.startswith((origin, "data:", "blob:", "about:"))
    ]
    assert outside == []
    assert ws_url == f"ws://127.0.0.1:{server.port}/graphql"
    assert violations == []
    assert f"{origin}static/dashboard/chart.umd.min.js" in requests
    assert f"{origin}graphql" in requests  # the alerts(last: 20) query
    # development profile: 500 ms and 300 MB; the rule defaults 70% and 5%
    assert config["environment"] == "development"
    assert config["thresholds"] == {
        "high_response_time": 500.0,
        "low_cache_hit_rate": 70.0,
        "high_memory": 300.0,
        "high_error_rate": 5.0,
        "high_cost": 0.1,
    }
    assert response_note == "alert > 500 ms"
    assert page.evaluate(LEVELS) == [
        "green",  # 399 ms against 500: more than 20% below
        "yellow",  # 400 ms: within 20%
        "yellow",  # 500 ms: at the threshold, not beyond
        "red",  # 501 ms: beyond
        "green",  # 85% cache hits against 70: more than 20% above
        "yellow",  # 84%: within 20%
        "red",  # 69.9%: beyond (below)
        "none",  # no value yet
    ]
    assert shown["environment"] == "development"
    assert number(shown["memoryMb"]) > 0
    # No REDIS_URL: this worker is the whole cluster.
    assert page.evaluate("document.querySelector('#workers').textContent") == (
        "1 worker"
    )
    assert page.evaluate("document.querySelector('#workers').dataset.degraded") == (
        "false"
    )


def test_figures_change_within_3_s_under_load(
    page: Browser, server: Server, tmp_path: Path
) -> None:
    before = figures(page)

    with Load(server.port) as load:
        elapsed = wait_for_change(
            page, ("requestsPerMinute", "dbQueriesPerMinute"), before, timeout=3.0
        )
        # high_cost (threshold $0.01/h) fires: the alert arrives on `alerts`
        page.wait_for(HIGH_COST_FIRING, timeout=10)
        time.sleep(5)  # a few seconds of chart lines for the screenshot
        after = figures(page)
        levels = page.evaluate(
            "Object.fromEntries([...document.querySelectorAll('[data-card]')]"
            ".map(e => [e.dataset.card, e.dataset.level]))"
        )
        page.screenshot(tmp_path / "dashboard.png")

    assert elapsed <= 3.0
    assert load.ok > 0
    assert number(after["requestsPerMinute"]) > number(before["requestsPerMinute"])
    assert number(after["responseAvg"]) > 0
    assert number(after["responseP95"]) >= number(after["responseAvg"]) * 0.5
    assert set(levels) == set(FIGURES)
    # far below 500 ms and 300 MB: green; figures without a rule stay uncoloured
    assert levels["responseAvg"] == "green"
    assert levels["memoryMb"] == "green"
    assert levels["requestsPerMinute"] == "none"
    assert levels["totalCost"] == levels["periodCost"] == "red"
    assert int(page.evaluate("document.querySelector('#firing').dataset.count")) >= 1
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000


def high_cost_fired(port: int) -> bool:
    response = httpx.post(
        f"http://127.0.0.1:{port}/graphql",
        json={"query": "{ alerts(last: 20) { rule state } }"},
        timeout=5,
    )
    events = response.json()["data"]["alerts"]
    return {"rule": "high_cost", "state": "FIRING"} in events


def test_a_new_page_lists_earlier_alerts(server: Server) -> None:
    # given a high_cost alert fired before the page exists (the subscription will
    # not repeat it: only the alerts(last: 20) query can show it)
    deadline = time.monotonic() + 15
    with Load(server.port):
        while not high_cost_fired(server.port):
            assert time.monotonic() < deadline, "high_cost did not fire"
            time.sleep(0.2)
    browser = Browser()
    try:
        browser.goto(f"http://127.0.0.1:{server.port}/dashboard")
        browser.wait_for(HIGH_COST_FIRING, timeout=10)
        message = browser.evaluate(
            'document.querySelector(\'.alert[data-rule="high_cost"] '
            ".alert-message').textContent"
        )
    finally:
        browser.close()

    assert message.startswith("High cost: $")
    assert message.endswith("/h (threshold: $0.100000/h)")


def test_reconnects_after_server_restart(page: Browser, server: Server) -> None:
    page.wait_for(LIVE)

    server.stop()
    page.wait_for(
        "document.querySelector('#status').dataset.state === 'reconnecting'",
        timeout=10,
    )
    updates_while_down = int(page.evaluate("document.body.dataset.updates"))
    server.start()  # same port
    page.wait_for(LIVE, timeout=20)
    page.wait_for(
        f"Number(document.body.dataset.updates) > {updates_while_down}", timeout=5
    )
    before = figures(page)
    with Load(server.port) as load:
        elapsed = wait_for_change(page, ("requestsPerMinute",), before, timeout=3.0)

    assert elapsed <= 3.0
    assert load.ok > 0
    # resubscribed on the new connection: metrics, costs and alerts again
    page.wait_for(ACTIVE_SUBSCRIPTIONS_AT_LEAST_3, timeout=3)


STATUS = "document.querySelector('#status').dataset.state"
KEY_FORM_SHOWN = "!document.getElementById('key-form').hidden"


def enter_key(page: Browser, key: str) -> None:
    page.evaluate(
        f"(() => {{ document.getElementById('api-key').value = {json.dumps(key)};"
        " document.getElementById('key-form').requestSubmit(); })()"
    )


def test_asks_for_an_api_key_when_the_server_requires_one(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    chromium_path()
    live = Server(tmp_path_factory.mktemp("dashboard-auth"))
    live.env.update({"AUTH_REQUIRED": "true", "JWT_SECRET": TEST_JWT_SECRET})
    live.seed()
    live.start()
    browser = Browser()
    try:
        browser.goto(f"http://127.0.0.1:{live.port}/dashboard")
        browser.wait_for(KEY_FORM_SHOWN, timeout=10)
        assert browser.evaluate(STATUS) == "refused"

        enter_key(browser, "gp_not-a-real-key")
        browser.wait_for(
            KEY_FORM_SHOWN + " && document.getElementById('key-note').textContent"
            ".startsWith('The server refused this key')",
            timeout=10,
        )
        assert browser.evaluate(STATUS) == "refused"

        token = jwt_token("teacher")
        enter_key(browser, token)
        browser.wait_for(LIVE, timeout=10)
        browser.wait_for("Number(document.body.dataset.updates) >= 2", timeout=10)
        assert browser.evaluate("document.getElementById('key-form').hidden") is True
        # kept for this tab only, so that a reload does not ask again
        assert (
            browser.evaluate("window.sessionStorage.getItem('gradepulse.apiKey')")
            == token
        )
    finally:
        browser.close()
        live.stop()


def test_the_page_runs_where_only_trusted_documents_do(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """PERSISTED_OPERATIONS=require: the page names each of its documents by hash
    (the server gives it the hashes), so its query and its three feeds run."""
    chromium_path()
    live = Server(tmp_path_factory.mktemp("trusted"))
    live.env["PERSISTED_OPERATIONS"] = "require"
    live.seed()
    live.start()
    browser = Browser()
    try:
        browser.goto(f"http://127.0.0.1:{live.port}/dashboard")
        browser.wait_for(LIVE)
        browser.wait_for("Number(document.body.dataset.updates) >= 2")
        browser.wait_for(ACTIVE_SUBSCRIPTIONS_AT_LEAST_3)
        browser.wait_for(PAGE_QUERY_ANSWERED)
        problems = browser.evaluate(
            "[...window.gradePulseDashboard.state.problems.values()]"
        )
        metrics = httpx.get(f"http://127.0.0.1:{live.port}/metrics", timeout=10).text
        refused = httpx.post(
            f"http://127.0.0.1:{live.port}/graphql",
            json={"query": "{ subjects }"},
            timeout=10,
        ).json()
    finally:
        browser.close()
        live.stop()
    assert problems == []
    counts = {
        outcome: float(value)
        for outcome, value in re.findall(
            r'graphql_persisted_operations_total\{outcome="(\w+)"\} (\S+)', metrics
        )
    }
    # The initial query and the three subscriptions, each by its hash.
    assert counts["trusted"] >= 4
    assert counts["untrusted"] == counts["refused"] == counts["not_found"] == 0
    assert refused["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_REQUIRED"


# Without a browser: the page's configuration and its HTTP answers.


def test_config_is_embedded_as_inert_json() -> None:
    html = render_dashboard(
        environment="</script><script>alert(1)</script>",
        thresholds={"high_memory": 300, "high_error_rate": 7.5},
    )

    embedded = html.split('id="dashboard-config">', 1)[1].split("</script>", 1)[0]
    assert json.loads(embedded) == {
        "environment": "</script><script>alert(1)</script>",
        "thresholds": {"high_memory": 300.0, "high_error_rate": 7.5},
        "graphqlPath": "/graphql",
        "windowSeconds": 300,
        "intervalMs": 1000,
        "authRequired": False,
        "documents": {},
    }
    assert "<script>alert(1)" not in html


async def test_page_answers_get_and_head_only() -> None:
    page = DashboardPage(environment="staging", thresholds={"high_memory": 500.0})
    transport = httpx.ASGITransport(app=page)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://127.0.0.1"
    ) as client:
        got = await client.get("/dashboard")
        head = await client.head("/dashboard")
        post = await client.post("/dashboard")

    assert got.status_code == 200
    assert got.headers["content-type"] == "text/html; charset=utf-8"
    assert "connect-src 'self'" in got.headers["content-security-policy"]
    assert '"environment": "staging"' in got.text
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == str(len(got.content))
    assert (post.status_code, post.headers["allow"]) == (405, "GET, HEAD")


# The cost card shows the server's costPerHour: the figure high_cost compares.

DASHBOARD_JS = ROOT / "static/dashboard/dashboard.js"
COST_CARD_NOTE = "document.querySelector('[data-sub=\"totalCost\"]').textContent"
COSTS_FEED = gql(
    "subscription { costs(intervalMs: 1000) { totalCost costPerHour costWindowFull } }"
)
FEED_WAIT_S = 10
PAGE_QUERY_ANSWERED = (
    "performance.getEntriesByType('resource')"
    ".some(e => e.name.endsWith('/graphql') && e.responseEnd > 0)"
)


async def test_the_pages_documents_read_the_rules_cost_figure(
    make_api: Any, scratch_url: str
) -> None:
    # Without a browser too: the page's own documents against the schema, and its
    # initial query's answer; the card's code takes the figure as it is.
    api = await make_api(scratch_url, alert_cost_window_s=3600)
    documents = dashboard_documents()
    core = graphql_schema(api.app.state.schema)
    source = DASHBOARD_JS.read_text(encoding="utf-8")

    body = await api.post(documents["DashboardInitial"])

    assert "costPerHour costWindowFull" in documents["DashboardCostsFeed"]
    assert sorted(documents) == [
        "DashboardAlertsFeed",
        "DashboardCostsFeed",
        "DashboardInitial",
        "DashboardMetricsFeed",
    ]
    for name, document in documents.items():
        assert validate(core, parse(document)) == [], name
    costs = body["data"]["costs"]
    # an hour's window holds all this young server spent: the figure is the total
    assert (costs["costPerHour"], costs["costWindowFull"]) == (
        costs["totalCost"],
        False,
    )
    assert (
        "state.costRate = { perHour: c.costPerHour, full: Boolean(c.costWindowFull) }"
        in source
    )
    assert 'lvl = level(rate.perHour, T.high_cost, "above");' in source
    assert "costHistory" not in source  # no estimate of the page's own


async def _server_cost_rate(port: int) -> dict[str, Any]:
    transport = WebsocketsTransport(
        url=f"ws://127.0.0.1:{port}/graphql", subprotocols=[TRANSPORT_WS]
    )
    async with Client(
        transport=transport, fetch_schema_from_transport=False
    ) as session:
        async for item in session.subscribe(COSTS_FEED):
            costs: dict[str, Any] = item["costs"]
            return costs
    raise AssertionError("the costs feed ended")


def test_the_cost_card_shows_the_rules_figure(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    chromium_path()
    live = Server(tmp_path_factory.mktemp("dashboard-cost"))
    # An hour's window: the figure stays what was spent while the server idles.
    live.env["ALERT_COST_WINDOW_S"] = "3600"
    live.seed()
    live.start()
    try:
        for query in QUERIES:  # some spending before the page opens
            httpx.post(
                f"http://127.0.0.1:{live.port}/graphql",
                json={"query": query},
                timeout=5,
            ).raise_for_status()
        browser = Browser()
        try:
            browser.goto(f"http://127.0.0.1:{live.port}/dashboard")
            browser.wait_for("Number(document.body.dataset.updates) >= 2")
            # the page's own query (over HTTP, so charged) has been answered
            browser.wait_for(PAGE_QUERY_ANSWERED)
            # read over a subscription, which costs nothing (a query would add)
            costs = asyncio.run(
                asyncio.wait_for(_server_cost_rate(live.port), FEED_WAIT_S)
            )
            expected = (
                f"${costs['costPerHour']:.6f}/h so far (window filling) "
                "· alert > $0.1/h"
            )
            browser.wait_for(f"{COST_CARD_NOTE} === {json.dumps(expected)}", timeout=5)
            level = browser.evaluate(
                "document.querySelector('[data-card=\"totalCost\"]').dataset.level"
            )
        finally:
            browser.close()
    finally:
        live.stop()

    assert costs["costWindowFull"] is False
    assert 0 < costs["costPerHour"] == costs["totalCost"]
    assert level == "none"  # the rule does not judge it yet: nor does the card
