"""Subscription fan-out: `metrics` subscribers of the same document, variables and
viewer role form a group; each sampler tick is executed once per group (its
compiled plan over the snapshot), encoded once, and the same bytes go to every
member that is due, framed with its operation id and its own extensions.

A subscription joins a group only when everything the general path would check
passes here first, with the same functions: the document gate (limits, validation,
cost, one rate charge), the operator role, the interval, the subscription slot. Any
refusal hands the operation to the general path (Strawberry's stream), with the
charge already made (`Context.precharged`), which then words the error exactly as
it always does. Each member keeps its own pacing (resolvers.live.due_after) and
gets only the newest due frame when it reads slowly, as the general path's
latest-only queue does; the group's work per tick does not grow with its members
beyond setting a frame each.

A member counts in the subscription signals as the general path's subscriptions
do: active while it runs, each frame it sends, each frame a newer one replaced
before it went out (superseded), and per tick the time from the snapshot's
publication to the group's last send of it (the fan-out histogram). Its
operation's fields are counted once, when it joins."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
)

from monitoring.monitor import METRICS, Monitor
from monitoring.subscriptions import SUPERSEDED, SubscriptionSignals
from resolvers import live
from resolvers.context import Context
from resolvers.errors import ClientError
from server.execution import Fallback
from server.gate import rate_limit_extension
from server.pipeline import Pipeline, Plans, named, selected
from server.plan import FieldPlan, NotPlanned, ObjectCompleter, Run, attributes_only
from server.usage import count_once

log = logging.getLogger("gradepulse.fanout")
SHARED_FIELDS = frozenset({"metrics"})
NOT_SHARED = "not_shared"
Send = Callable[[str], Awaitable[None]]


@dataclass(eq=False)
class Shared:
    """A subscription document that can be shared: its root field's plan."""

    document: DocumentNode
    definition: OperationDefinitionNode
    field: FieldPlan
    name: str | None  # the operation's name as the monitor records it


class Tick:
    """One snapshot on its way to a group's due members: when it was published,
    how many members have yet to send or lose it, and the latest send. When the
    last has, the fan-out histogram observes publication to latest send."""

    __slots__ = ("at", "last", "signals", "waiting")

    def __init__(self, signals: SubscriptionSignals, at: float, waiting: int) -> None:
        self.signals = signals
        self.at = at
        self.waiting = waiting
        self.last: float | None = None

    def done(self, sent: bool) -> None:
        if sent:
            self.last = time.perf_counter()
        self.waiting -= 1
        if self.waiting == 0 and self.last is not None:
            self.signals.fanned_out(self.last - self.at)


@dataclass(eq=False)
class Member:
    """One subscriber of a group: where its frames go and when it is due next."""

    prefix: str
    suffix: str
    interval_ms: int
    due: float = float("-inf")
    frame: str | None = None
    tick: Tick | None = None  # the frame's
    switch: bool = False  # the group could not run a tick: go the general way
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def lose_frame(self) -> None:
        """The waiting frame will not go out: its tick stops waiting for it."""
        self.frame = None
        if self.tick is not None:
            self.tick.done(False)
            self.tick = None


class Group:
    """The members of one (document, variables, role): one bus queue, one plan run
    and one encoding per tick."""

    def __init__(self, hub: FanOut, key: Any, shared: Shared) -> None:
        self.hub = hub
        self.key = key
        self.shared = shared
        self.members: list[Member] = []
        self.task: asyncio.Task[None] | None = None

    def join(self, member: Member) -> None:
        self.members.append(member)
        if self.task is None:
            self.task = asyncio.create_task(self._run())

    def leave(self, member: Member) -> None:
        with contextlib.suppress(ValueError):
            self.members.remove(member)
        if not self.members:
            self.hub.groups.pop(self.key, None)
            if self.task is not None:
                self.task.cancel()

    async def _run(self) -> None:
        monitor = self.hub.monitor
        tick_s = monitor.interval_s
        response_name = self.shared.field.response_name
        completer = self.shared.field.completer
        assert isinstance(completer, ObjectCompleter)
        plan = completer.plan
        signals = monitor.registry.subscriptions
        name = self.shared.field.field_name
        queue = monitor.bus.subscribe(METRICS, live.LATEST_ONLY)
        # A snapshot the group itself missed: none of its members gets it.
        queue.on_drop = lambda: signals.drop(name, SUPERSEDED, len(self.members))
        try:
            while True:
                snapshot, published = await queue.get_timed()
                at = snapshot.at.timestamp()
                due = []
                for member in self.members:
                    following = live.due_after(
                        at, member.due, member.interval_ms, tick_s
                    )
                    if following is not None:
                        member.due = following
                        due.append(member)
                if not due:
                    continue
                try:
                    (data,) = plan.build([snapshot], Run(None, None, None))
                    body = orjson.dumps({response_name: data}).decode()
                except Exception as error:
                    if not isinstance(error, Fallback):
                        log.warning(
                            "a shared tick went the general way: %s",
                            type(error).__name__,
                        )
                    for member in due:
                        member.switch = True
                        member.wake.set()
                    continue
                tick = Tick(signals, published, len(due))
                for member in due:
                    if member.frame is not None:  # still unsent: this one replaces it
                        signals.drop(name, SUPERSEDED)
                        member.lose_frame()
                    member.frame = member.prefix + body + member.suffix
                    member.tick = tick
                    member.wake.set()
        finally:
            queue.close()


class FanOut:
    """The groups of one worker, for the schema's planned path."""

    def __init__(self, pipeline: Pipeline, monitor: Monitor) -> None:
        self.pipeline = pipeline
        self.monitor = monitor
        self.groups: dict[Any, Group] = {}
        self.plans = Plans(self._compile)

    def _compile(
        self, document: DocumentNode, name: str | None
    ) -> tuple[Shared | str, OperationDefinitionNode | None]:
        definition = selected(document, name)
        if definition is None or definition.operation is not OperationType.SUBSCRIPTION:
            return NOT_SHARED, None
        try:
            plan = self.pipeline.planner.root_field(document, definition)
        except NotPlanned:
            return NOT_SHARED, None
        if plan.field_name not in SHARED_FIELDS or not attributes_only(plan.completer):
            return NOT_SHARED, None
        return Shared(document, definition, plan, named(definition, name)), definition

    async def serve(
        self,
        context: Context,
        operation_id: str,
        query: Any,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        send: Send,
        legacy: bool,
    ) -> Context | None:
        """Run the subscription in its group until it is cancelled: None. Or the
        context (with the charge made, if any) on which the general path must run
        it: refused by a check, or not shareable."""
        operation = context.for_operation()
        ready = self.pipeline.check(query, operation_name, variables, self.plans)
        if isinstance(ready, str):
            return operation
        shared: Shared = ready.plan
        plan = shared.field
        try:
            arguments = plan.arguments
            if arguments is None:
                assert plan.convert is not None
                arguments = plan.convert(ready.variables)
        except GraphQLError:
            return operation
        interval_ms = arguments.get("interval_ms", 1000)
        usage = self.pipeline.usage
        limiter = operation.services.rate_limiter
        rate = None
        if limiter is not None:
            rate = operation.rate = await limiter.charge(
                operation.viewer, operation.client_host, ready.cost
            )
            operation.precharged = rate
            if not rate.allowed:
                return operation
        try:
            with live.metrics_feed(operation, interval_ms):
                operation.precharged = None
                if usage is not None:  # admitted (the general path would count it)
                    count_once(usage, ready.fields, operation)
                member = _member(operation_id, legacy, interval_ms, self.monitor, rate)
                return await self._stream(operation, shared, variables, member, send)
        except Exception as error:
            # Refused (role, interval, too many subscriptions), or failed: the
            # general path answers, with the charge already made, and words the
            # error as it always does (masked when unexpected).
            if not isinstance(error, ClientError):
                log.warning(
                    "a shared subscription went the general way: %s",
                    type(error).__name__,
                )
            operation.precharged = rate
            return operation

    async def _stream(
        self,
        operation: Context,
        shared: Shared,
        variables: dict[str, Any] | None,
        member: Member,
        send: Send,
    ) -> Context | None:
        key = (
            shared.document.loc.source.body if shared.document.loc else id(shared),
            shared.name,
            orjson.dumps(variables or {}, option=orjson.OPT_SORT_KEYS),
            operation.viewer.role,
        )
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = Group(self, key, shared)
        group.join(member)
        signals = self.monitor.registry.subscriptions
        name = shared.field.field_name
        started = time.perf_counter()
        try:
            while True:
                await member.wake.wait()
                member.wake.clear()
                if member.switch:
                    # The general path takes over with the same charge.
                    operation.precharged = operation.rate
                    return operation
                frame, member.frame = member.frame, None
                tick, member.tick = member.tick, None
                if frame is not None:
                    try:
                        await send(frame)
                    except BaseException:
                        if tick is not None:
                            tick.done(False)
                        raise
                    if tick is not None:
                        tick.done(True)
                    signals.sent(name)
        finally:
            member.lose_frame()
            group.leave(member)
            if not member.switch:
                self.monitor.record_operation(
                    operation_type="subscription",
                    operation=shared.name,
                    duration_s=time.perf_counter() - started,
                    failed=False,
                    over_http=False,
                    db_queries=0,
                )


def _member(
    operation_id: str, legacy: bool, interval_ms: int, monitor: Monitor, rate: Any
) -> Member:
    """The frame around a group's data, as Strawberry's handlers send it: the id
    and type, then the payload's data, then its extensions (the price of the
    events, which run no statement and are no API request, and the charge)."""
    quoted = orjson.dumps(operation_id).decode()
    prefix = (
        f'{{"type":"data","id":{quoted},"payload":{{"data":'
        if legacy
        else f'{{"id":{quoted},"type":"next","payload":{{"data":'
    )
    extensions: dict[str, Any] = {"cost": monitor.price(0, 0)}
    if rate is not None:
        extensions["rateLimit"] = rate_limit_extension(rate)
    suffix = ',"extensions":' + orjson.dumps(extensions).decode() + "}}"
    return Member(prefix, suffix, interval_ms)
