"""Subscription fan-out (server/fanout.py): `metrics` subscribers of one document,
variables and role share one execution and one encoding per tick, and get what the
general path would have sent them."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from itertools import pairwise
from typing import Any

import pytest
from starlette.routing import WebSocketRoute

from server.execution import Fallback
from server.fanout import FanOut
from tests.asgi_ws import AsgiWebSocket

pytestmark = pytest.mark.timeout(60)
METRICS = "subscription { metrics(intervalMs: 1000) { at requestsTotal workers } }"
SLOW = "subscription($ms: Int!) { metrics(intervalMs: $ms) { at } }"
WAIT_S = 5.0


def fanout_of(app: Any) -> FanOut:
    for route in app.routes:
        if isinstance(route, WebSocketRoute) and route.path == "/graphql":
            fanout: FanOut = route.app.websocket.fanout
            return fanout
    raise AssertionError("no /graphql WebSocket route")


async def until(check: Any, timeout: float = WAIT_S) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


class Subscriber:
    """One connection with one subscription ("1"), either protocol."""

    def __init__(self, app: Any, protocol: str = "graphql-transport-ws") -> None:
        self.ws = AsgiWebSocket(app, subprotocol=protocol)
        self.legacy = protocol == "graphql-ws"

    async def start(self, query: str, **variables: Any) -> Subscriber:
        await self.ws.__aenter__()
        await self.ws.send_json({"type": "connection_init", "payload": {}})
        assert (await self.ws.receive_json())["type"] == "connection_ack"
        await self.ws.send_json(
            {
                "id": "1",
                "type": "start" if self.legacy else "subscribe",
                "payload": {"query": query, "variables": variables or None},
            }
        )
        return self

    async def raw(self) -> str:
        """The next frame as sent (pings and keep-alives left out)."""
        while True:
            event = await self.ws._next(WAIT_S)
            text = event.get("text")
            assert text is not None, event
            if json.loads(text).get("type") not in ("ping", "ka"):
                return str(text)

    async def stop(self) -> None:
        await self.ws.__aexit__(None, None, None)


async def test_subscribers_of_one_document_share_one_execution(api: Any) -> None:
    app = api.app
    fanout = fanout_of(app)
    monitor = app.state.monitor
    registry = monitor.registry
    subscribers = [
        await Subscriber(app, protocol).start(METRICS)
        for protocol in ("graphql-transport-ws", "graphql-ws", "graphql-transport-ws")
    ]
    other = await Subscriber(app).start(SLOW, ms=5000)
    await until(lambda: registry.active_subscriptions == 4)
    groups = list(fanout.groups.values())
    assert sorted(len(g.members) for g in groups) == [1, 3]
    builds = 0
    plan = next(g for g in groups if len(g.members) == 3).shared.field.completer.plan
    build = plan.build

    def counted(objects: Any, run: Any) -> Any:
        nonlocal builds
        builds += 1
        return build(objects, run)

    plan.build = counted  # type: ignore[method-assign]
    try:
        snapshot = monitor.tick()
        frames = [await s.raw() for s in subscribers]
    finally:
        plan.build = build  # type: ignore[method-assign]
    assert builds == 1  # one execution for the three members
    at = snapshot.at.isoformat().replace("+00:00", "Z")
    for subscriber, frame in zip(subscribers, frames, strict=True):
        message = json.loads(frame)
        kind = "data" if subscriber.legacy else "next"
        assert message["type"] == kind and message["id"] == "1"
        assert message["payload"]["data"] == {
            "metrics": {
                "at": at,
                "requestsTotal": snapshot.requests_total,
                "workers": 1,
            }
        }
        assert message["payload"]["extensions"]["cost"] == {
            "dbQueries": 0,
            "apiRequests": 0,
            "dbCost": 0.0,
            "apiCost": 0.0,
            "totalCost": 0.0,
        }
        assert message["payload"]["extensions"]["rateLimit"]["cost"] == 1
    # The same data bytes in each frame: encoded once.
    bodies = {f[f.index('"data":') : f.index(',"extensions"')] for f in frames}
    assert len(bodies) == 1
    for subscriber in [*subscribers, other]:
        await subscriber.stop()
    await until(lambda: registry.active_subscriptions == 0 and not fanout.groups)


async def test_a_frame_is_what_the_general_path_sends(api: Any) -> None:
    """One subscriber in a group, one on Strawberry's general path, the same tick:
    the same frame, but for the budget's remaining points (two charges)."""
    app = api.app
    fanout = fanout_of(app)
    view = next(r.app.websocket for r in app.routes if isinstance(r, WebSocketRoute))
    shared = await Subscriber(app).start(METRICS)
    await until(lambda: len(fanout.groups) == 1)
    view.fanout = None
    try:
        general = await Subscriber(app).start(METRICS)
        await until(lambda: app.state.monitor.registry.active_subscriptions == 2)
    finally:
        view.fanout = fanout
    app.state.monitor.tick()
    first, second = json.loads(await shared.raw()), json.loads(await general.raw())
    # The two were charged a moment apart: the budget after each differs (its
    # reset time too, when a second boundary fell between them).
    resets = []
    for message in (first, second):
        budget = message["payload"]["extensions"]["rateLimit"]
        budget.pop("remaining")
        resets.append(datetime.fromisoformat(budget.pop("resetAt")))
    assert first == second
    assert abs((resets[0] - resets[1]).total_seconds()) <= 1
    await shared.stop()
    await general.stop()


async def test_each_member_keeps_its_own_pace(make_api: Any, scratch_url: str) -> None:
    """The first tick after subscribing at once, then the first at or after each
    interval: per member, as the general path paces each subscriber."""
    api = await make_api(scratch_url, sample_interval_ms=200)
    app = api.app
    every = await Subscriber(app).start(SLOW, ms=1000)
    slow = await Subscriber(app).start(SLOW, ms=60000)
    await slow.raw()
    first = json.loads(await every.raw())
    ats = [first["payload"]["data"]["metrics"]["at"]]
    for _ in range(2):
        ats.append(json.loads(await every.raw())["payload"]["data"]["metrics"]["at"])
    gaps = [
        (
            datetime.fromisoformat(b[:-1]) - datetime.fromisoformat(a[:-1])
        ).total_seconds()
        for a, b in pairwise(ats)
    ]
    assert all(0.85 <= gap <= 1.25 for gap in gaps), gaps
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(slow.raw(), 0.3)
    await every.stop()
    await slow.stop()


async def test_refusals_go_the_general_way_charged_once(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = api.services.rate_limiter
    charges: list[int] = []
    charge = limiter.charge

    async def counting(viewer: Any, client: Any, cost: int) -> Any:
        charges.append(cost)
        return await charge(viewer, client, cost)

    monkeypatch.setattr(limiter, "charge", counting)
    for protocol in ("graphql-transport-ws", "graphql-ws"):
        charges.clear()
        refused = await Subscriber(api.app, protocol).start(SLOW, ms=10)
        message = json.loads(await refused.raw())
        # The general path's refusal: an `error` message in either protocol.
        assert message["type"] == "error", message
        payload = message["payload"]
        errors = payload if isinstance(payload, list) else [payload]
        assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT"
        assert "intervalMs must be between 1000 and 60000" in errors[0]["message"]
        assert charges == [1]
        await refused.stop()
    assert not fanout_of(api.app).groups


async def test_a_tick_the_plan_cannot_run_goes_the_general_way(api: Any) -> None:
    app = api.app
    fanout = fanout_of(app)
    subscriber = await Subscriber(app).start(METRICS)
    await until(lambda: len(fanout.groups) == 1)
    (group,) = fanout.groups.values()
    plan = group.shared.field.completer.plan

    def refuse(objects: Any, run: Any) -> Any:
        raise Fallback

    plan.build = refuse  # type: ignore[method-assign]
    try:
        app.state.monitor.tick()
        # The member leaves its group; the general path sends the next ticks.
        await until(lambda: not fanout.groups)
        await until(lambda: app.state.monitor.registry.active_subscriptions == 1)
        snapshot = app.state.monitor.tick()
        message = json.loads(await subscriber.raw())
    finally:
        del plan.build
    assert message["payload"]["data"]["metrics"]["requestsTotal"] == (
        snapshot.requests_total
    )
    await subscriber.stop()
