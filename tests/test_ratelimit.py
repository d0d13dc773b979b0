"""Rate budgets: the token bucket on an injected clock, and through the real app (HTTP
and WebSocket), where every response reports its points in extensions.rateLimit."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import pytest

from monitoring.monitor import METRICS
from resolvers.ratelimit import MemoryRateStore, RateLimiter, RateState
from resolvers.viewer import Viewer
from tests.asgi_ws import AsgiWebSocket
from tests.factories import (
    Clock,
    budgeted_api,
    post,
    rate_limit,
    refusal,
    wait_until,
    ws_init,
    ws_start,
)

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
PAGE = "{ students(first: 10) { edges { node { studentId } } } }"  # 1 + 10 * 2 points
PAGE_COST = 21


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, UTC)


def iso(seconds: float) -> str:
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the bucket ---------------------------------------------------------------------


async def test_a_charge_leaves_the_rest_and_refills_continuously():
    clock = Clock(T0)
    store = MemoryRateStore(clock=clock)  # capacity 60: one point per second

    first = await store.take("key:1", 60, 10)
    clock.now += 4
    later = await store.take("key:1", 60, 0)

    assert first == RateState(
        cost=10,
        limit=60,
        remaining=50,
        reset_at=at(10),
        allowed=True,
        retry_after_s=0,
        full_in_s=10,
    )
    assert later == RateState(
        cost=0,
        limit=60,
        remaining=54,
        reset_at=at(10),
        allowed=True,
        retry_after_s=0,
        full_in_s=6,
    )


async def test_over_budget_is_refused_without_charging():
    clock = Clock(T0)
    store = MemoryRateStore(clock=clock)
    await store.take("key:1", 60, 55)

    refused = await store.take("key:1", 60, 30)
    clock.now += 25
    allowed = await store.take("key:1", 60, 30)

    assert refused == RateState(
        cost=30,
        limit=60,
        remaining=5,
        reset_at=at(55),
        allowed=False,
        retry_after_s=25,
        full_in_s=55,
    )
    assert allowed.allowed and allowed.remaining == 0
    assert allowed.reset_at == at(25 + 60)


async def test_cost_equal_to_what_remains_is_allowed():
    store = MemoryRateStore(clock=Clock(T0))
    await store.take("key:1", 60, 40)

    state = await store.take("key:1", 60, 20)

    assert state.allowed and state.remaining == 0


async def test_free_operations_pass_an_empty_bucket_and_charge_nothing():
    clock = Clock(T0)
    store = MemoryRateStore(clock=clock)
    await store.take("key:1", 60, 60)

    empty = await store.take("key:1", 60, 0)
    one = await store.take("key:1", 60, 1)

    assert empty == RateState(
        cost=0,
        limit=60,
        remaining=0,
        reset_at=at(60),
        allowed=True,
        retry_after_s=0,
        full_in_s=60,
    )
    assert not one.allowed and one.retry_after_s == 1
    assert len(store) == 1


async def test_reset_at_is_rounded_up_to_the_second():
    clock = Clock(T0 + 0.5)
    store = MemoryRateStore(clock=clock)

    state = await store.take("key:1", 120, 3)  # two points a second: full in 1.5 s

    assert state.reset_at == at(2)
    assert state.remaining == 117


async def test_identities_have_their_own_buckets():
    store = MemoryRateStore(clock=Clock(T0))

    await store.take("key:1", 60, 50)
    other = await store.take("key:2", 60, 50)

    assert other.allowed and other.remaining == 10


async def test_full_buckets_are_dropped():
    clock = Clock(T0)
    store = MemoryRateStore(clock=clock)

    await store.take("ip:10.0.0.1", 60, 0)  # free: no bucket at all
    await store.take("key:1", 60, 30)
    clock.now += 29
    await store.take("key:2", 60, 60)
    held = len(store)
    clock.now += 1  # key:1 is full again (30 points at one a second)
    later = len(store)
    clock.now += 59  # key:2 is full again
    last = len(store)

    assert (held, later, last) == (2, 1, 0)


async def test_memory_is_bounded_by_max_identities():
    clock = Clock(T0)
    store = MemoryRateStore(clock=clock, max_identities=3)

    for number in range(5):
        await store.take(f"ip:10.0.0.{number}", 60, 60)
        clock.now += 1
    forgotten = await store.take("ip:10.0.0.0", 60, 0)
    kept = await store.take("ip:10.0.0.4", 60, 0)

    assert len(store) == 3
    assert forgotten.remaining == 60  # the least recently charged starts afresh
    assert kept.remaining == 1


async def test_the_limiter_keys_and_sizes_buckets_by_viewer():
    clock = Clock(T0)
    limiter = RateLimiter(
        MemoryRateStore(clock=clock), student=100, teacher=200, admin=300
    )
    anonymous = Viewer(identity="ip:127.0.0.1", role="admin", anonymous=True)
    student = Viewer(
        identity="user:s1", role="student", student_id="S00001", anonymous=False
    )
    teacher = Viewer(identity="key:7", role="teacher", anonymous=False)

    assert RateLimiter.identity(anonymous, "10.1.2.3") == "ip:10.1.2.3"
    assert RateLimiter.identity(Viewer(), None) == "ip:unknown"
    assert RateLimiter.identity(teacher, "10.1.2.3") == "key:7"
    assert (await limiter.charge(student, "10.1.2.3", 40)).limit == 100
    assert (await limiter.charge(teacher, "10.1.2.3", 40)).remaining == 160
    assert (await limiter.charge(anonymous, "10.1.2.3", 40)).remaining == 260
    assert (await limiter.charge(student, "10.9.9.9", 40)).remaining == 20


# --- through the app ----------------------------------------------------------------


async def test_every_response_reports_its_points(make_api, seeded_url):
    api, clock = await budgeted_api(make_api, seeded_url)

    first = (await post(api, PAGE)).json()
    second = (await post(api, PAGE)).json()
    free = (await post(api, "{ __typename }")).json()

    assert len(first["data"]["students"]["edges"]) == 10
    assert rate_limit(first) == {
        "cost": 21,
        "limit": 50,
        "remaining": 29,
        "resetAt": iso(26),  # 21 points at 50/60 a second: 25.2 s
    }
    assert rate_limit(second) == {
        "cost": 21,
        "limit": 50,
        "remaining": 8,
        "resetAt": iso(51),  # 42 points: 50.4 s
    }
    assert rate_limit(free) == {
        "cost": 0,
        "limit": 50,
        "remaining": 8,
        "resetAt": iso(51),
    }
    # extensions.cost stays the dollar cost of the monitoring issue.
    assert set(first["extensions"]["cost"]) >= {"dbQueries", "totalCost"}


CREATE = (
    'mutation { studentCreate(input: {studentId: "LONG", name: "Long List", '
    'email: "long@school.example", gradeLevel: 9}) { __typename } }'
)
ADD = "mutation($rows: [GradeAddInput!]!) { gradesAdd(input: $rows) { __typename } }"
IMPORT = "mutation($csv: String!) { gradesImport(csv: $csv) { __typename } }"
LONG_LIST = '{ student(studentId: "LONG") { grades { score } } }'


async def test_writes_are_charged_for_what_they_carry(make_api, scratch_url):
    """A 5,000-row gradesAdd cost 1 point, a 20,000-row import 2."""
    api, clock = await budgeted_api(make_api, scratch_url, capacity=5000)
    await post(api, CREATE)
    rows = [{"studentId": "LONG", "subject": "Math", "score": 70.0}] * 95
    header = "student_id,subject,score\n"
    small = header + "LONG,Math,70\n"
    large = header + "LONG,Math,70\n" * 800  # 10,425 bytes

    added = (await post(api, ADD, {"rows": rows})).json()
    imported = [
        (await post(api, IMPORT, {"csv": csv})).json() for csv in (small, large)
    ]

    assert added["data"] == {"gradesAdd": {"__typename": "GradesAddSuccess"}}
    assert rate_limit(added)["cost"] == 1 + 10  # the result, and 95 rows at 10 a point
    assert [body["data"]["gradesImport"]["__typename"] for body in imported] == [
        "GradesImportSuccess"
    ] * 2
    small_cost, large_cost = (rate_limit(body)["cost"] for body in imported)
    assert large_cost - small_cost == 3 - 1  # a point per 4 KiB of CSV
    assert len(large.encode()) == 10_425


@pytest.mark.parametrize("planned", [True, False])
async def test_a_list_longer_than_its_estimate_is_charged_what_it_held(
    make_api, scratch_url, planned
):
    """Student.grades counts 20 before it runs; 95 grades are charged 95."""
    api, clock = await budgeted_api(make_api, scratch_url, capacity=5000)
    await post(api, CREATE)
    rows = [{"studentId": "LONG", "subject": "Math", "score": 70.0}] * 95
    await post(api, ADD, {"rows": rows})
    before = rate_limit((await post(api, "{ __typename }")).json())["remaining"]
    # @include sends the operation down the general path.
    query = (
        LONG_LIST
        if planned
        else LONG_LIST.replace("grades", "grades @include(if: true)")
    )

    body = (await post(api, query)).json()
    after = rate_limit((await post(api, "{ __typename }")).json())["remaining"]

    assert len(body["data"]["student"]["grades"]) == 95
    assert rate_limit(body)["cost"] == 1 + 95  # the student and each grade
    assert rate_limit(body)["remaining"] == after == before - 96


async def test_what_a_list_held_beyond_its_estimate_is_a_debt(make_api, scratch_url):
    """The post-charge may leave the budget below 0: the caller's next operations
    wait until it has refilled past their cost (a floor at 0 let them go on)."""
    api, clock = await budgeted_api(make_api, scratch_url, capacity=100)
    await post(api, CREATE)  # 1 point
    rows = [{"studentId": "LONG", "subject": "Math", "score": 70.0}] * 95
    await post(api, ADD, {"rows": rows})  # 11 points: 88 left

    answered = (await post(api, LONG_LIST)).json()  # 21 before, 96 after: -8
    refused = await post(api, LONG_LIST)
    clock.now += 18  # 29 points at 100 a minute: 17.4 s
    again = await post(api, LONG_LIST)

    assert len(answered["data"]["student"]["grades"]) == 95
    assert rate_limit(answered)["remaining"] == 0  # a debt shows as 0
    assert refused.status_code == 429
    assert refusal(refused.json())["retryAfter"] == 18
    assert again.status_code == 200


async def test_spent_budget_is_rate_limited_without_data(make_api, seeded_url):
    api, clock = await budgeted_api(make_api, seeded_url)
    await post(api, PAGE)
    await post(api, PAGE)

    api.counter.reset()
    response = await api.http.post("/graphql", json={"query": PAGE})
    statements = list(api.counter.statements)
    free = (await post(api, "{ __typename }")).json()
    clock.now += 16  # 8 + 16 * 50/60 = 21.3 points
    again = (await post(api, PAGE)).json()

    body = response.json()
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "16"
    assert statements == []
    assert refusal(body) == {
        "code": "RATE_LIMITED",
        "limit": 50,
        "remaining": 8,
        "retryAfter": 16,  # (21 - 8) / (50 / 60) = 15.6 s
    }
    assert "rate limit of 50 points per minute" in body["errors"][0]["message"]
    assert rate_limit(body) == {
        "cost": 21,
        "limit": 50,
        "remaining": 8,
        "resetAt": iso(51),
    }
    assert free["data"] == {"__typename": "Query"}
    assert rate_limit(free)["remaining"] == 8
    assert len(again["data"]["students"]["edges"]) == 10
    assert rate_limit(again) == {
        "cost": 21,
        "limit": 50,
        "remaining": 0,
        "resetAt": iso(16 + 60),
    }


async def test_each_client_address_has_its_own_budget(make_api, seeded_url):
    api, clock = await budgeted_api(make_api, seeded_url)
    await post(api, PAGE)
    await post(api, PAGE)
    other = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api.app, client=("127.0.0.2", 40000)),
        base_url="http://127.0.0.1",
    )

    async with other:
        response = await other.post("/graphql", json={"query": PAGE})

    assert rate_limit(response.json())["remaining"] == 29


async def test_refused_documents_are_not_charged(make_api, seeded_url):
    api, clock = await budgeted_api(make_api, seeded_url)

    unparsable = (await post(api, "{ students {")).json()
    invalid = (await post(api, "{ studnts }")).json()
    costly = (
        await post(api, "{ students(first: 100) { edges { node { studentId } } } }")
    ).json()
    page = (await post(api, PAGE)).json()

    # Every response shows the budget; a refused document is charged nothing.
    untouched = {"cost": 0, "limit": 50, "remaining": 50, "resetAt": iso(0)}
    assert rate_limit(unparsable) == untouched
    assert rate_limit(invalid) == untouched
    assert costly["errors"][0]["extensions"]["code"] == "QUERY_TOO_COSTLY"
    assert rate_limit(costly) == untouched
    assert rate_limit(page)["remaining"] == 29


async def test_websocket_operations_share_the_budget(make_api, seeded_url):
    api, clock = await budgeted_api(make_api, seeded_url)
    await post(api, PAGE)

    async with AsgiWebSocket(api.app) as ws:
        await ws_init(ws)
        await ws_start(ws, "1", PAGE)
        first = await ws.receive_json()
        assert await ws.receive_json() == {"id": "1", "type": "complete"}
        api.counter.reset()
        await ws_start(ws, "2", PAGE)
        refused = await ws.receive_json()
        statements = list(api.counter.statements)

    assert first["type"] == "next"
    assert len(first["payload"]["data"]["students"]["edges"]) == 10
    assert first["payload"]["extensions"]["rateLimit"] == {
        "cost": 21,
        "limit": 50,
        "remaining": 8,
        "resetAt": iso(51),
    }
    assert refused["id"] == "2" and refused["type"] == "error"
    assert refusal({"errors": refused["payload"]}) == {
        "code": "RATE_LIMITED",
        "limit": 50,
        "remaining": 8,
        "retryAfter": 16,
    }
    assert statements == []


async def test_a_subscription_is_charged_once_not_per_event(make_api, seeded_url):
    api, clock = await budgeted_api(make_api, seeded_url)
    subscription = "subscription { metrics(intervalMs: 1000) { at responseTimeMs { p50 } } }"  # 2 points
    events = []

    async with AsgiWebSocket(api.app) as ws:
        await ws_init(ws)
        await ws_start(ws, "m", subscription)
        bus = api.app.state.monitor.bus
        await wait_until(lambda: bus.subscribers(METRICS) == 1)  # before any tick
        for _ in range(2):
            api.app.state.monitor.tick()
            events.append(await ws.receive_json())
            await asyncio.sleep(1.0)  # events are paced a second apart
        after = (await post(api, "{ __typename }")).json()

    assert [event["type"] for event in events] == ["next", "next"]
    assert [event["payload"]["extensions"]["rateLimit"] for event in events] == [
        {"cost": 2, "limit": 50, "remaining": 48, "resetAt": iso(3)}
    ] * 2
    assert rate_limit(after)["remaining"] == 48


async def test_http_responses_carry_the_ratelimit_headers(make_api, seeded_url):
    api, clock = await budgeted_api(make_api, seeded_url)

    first = await api.http.post("/graphql", json={"query": PAGE})
    await api.http.post("/graphql", json={"query": PAGE})
    refused = await api.http.post("/graphql", json={"query": PAGE})
    malformed = await api.http.post(
        "/graphql", content=b"{", headers={"content-type": "application/json"}
    )

    assert first.headers["RateLimit-Policy"] == '"default";q=50;w=60'
    assert first.headers["RateLimit"] == '"default";r=29;t=26'
    assert refused.status_code == 429
    assert refused.headers["RateLimit"] == '"default";r=8;t=51'
    assert refused.headers["Retry-After"] == "16"
    # refused before any operation ran: the budget is shown, nothing is charged
    assert malformed.status_code == 400
    assert malformed.headers["RateLimit"] == '"default";r=8;t=51'


async def test_rate_limited_is_429_under_graphql_response_json(make_api, seeded_url):
    api, clock = await budgeted_api(make_api, seeded_url)
    await post(api, PAGE)
    await post(api, PAGE)

    response = await api.http.post(
        "/graphql",
        json={"query": PAGE},
        headers={"Accept": "application/graphql-response+json"},
    )

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "16"
    assert "data" not in response.json()
    assert refusal(response.json())["code"] == "RATE_LIMITED"
