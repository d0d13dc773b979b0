"""Live streams for subscriptions: metrics, alerts, costs and grade events.

Plain async generators, context first. Each subscription reads its own bounded queue
on the monitor's bus, so a slow client never delays the sampler or the others:
metrics and costs keep only the newest item; alerts and grade writes are never dropped
silently: a client that falls more than BACKLOG items behind is closed with 1013 (try
again later) as soon as it does, and graphql-ws clients reconnect on that code.

Each stream counts itself in the monitor's subscription signals under its root
field: while it runs, each event it sends, each event it drops (and why), and the
time from an item's publication to its send."""

from __future__ import annotations

import asyncio
import time
from collections.abc import (
    AsyncGenerator,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import aclosing, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from db import students as db_students
from db.records import GradeRecord
from db.students import Locked
from monitoring.bus import Codec, Subscription
from monitoring.monitor import ALERTS, COSTS, METRICS, Monitor
from monitoring.snapshot import AlertEvent, MetricsSnapshot
from monitoring.subscriptions import (
    OVERFLOW,
    SLOW_CLIENT_CLOSED,
    SUPERSEDED,
    SubscriptionSignals,
)
from resolvers import audit
from resolvers.context import Context
from resolvers.errors import (
    BadUserInput,
    Forbidden,
    SubscriberTooSlow,
    TooManySubscriptions,
)
from resolvers.students import check_readable_id, get_student
from resolvers.viewer import Viewer

T = TypeVar("T")

GRADES = "grades"
IMPORTS = "imports"  # an import job changed: the payload is its id
MIN_INTERVAL_MS = 1_000
MAX_INTERVAL_MS = 60_000
LATEST_ONLY = 1  # metrics and costs: a slow client gets the newest snapshot
BACKLOG = 256  # alerts or grade writes a client may fall behind by
TRY_AGAIN_LATER = 1013
# The subscription root fields, as the signals label them.
METRICS_FIELD = "metrics"
COSTS_FIELD = "costs"
ALERTS_FIELD = "alerts"
GRADE_EVENTS_FIELD = "gradeEvents"
IMPORT_PROGRESS_FIELD = "importProgress"


@dataclass(frozen=True, slots=True)
class GradeEvent:
    """One student's new (or changed) grades from one write: the write's number in
    the student's commit order, and when the write before it was numbered (seconds
    since the epoch; None: no write before). resolvers.ordering puts them in order."""

    student_id: str
    grade_level: int
    grades: tuple[GradeRecord, ...]
    seq: int | None = None
    prev_at: float | None = None


def check_interval(interval_ms: int) -> None:
    if not MIN_INTERVAL_MS <= interval_ms <= MAX_INTERVAL_MS:
        raise BadUserInput(
            f"intervalMs must be between {MIN_INTERVAL_MS} and {MAX_INTERVAL_MS}, "
            f"got {interval_ms}",
            argument="intervalMs",
        )


def check_operator(ctx: Context) -> None:
    """Monitoring streams are for admins and teachers: refused before they start."""
    ctx.viewer.require("admin", "teacher")


async def check_grade_events(
    ctx: Context, *, student_id: str | None, grade_level: int | None
) -> None:
    """Refuse, before the stream starts, arguments that name only what the viewer
    may not read: another student, or a grade level outside a teacher's levels.
    Whatever the arguments, each event is filtered again (`_may_see`)."""
    viewer = ctx.viewer
    levels = viewer.readable_levels
    if grade_level is not None and levels is not None and grade_level not in levels:
        raise Forbidden(f"you may not read grade level {grade_level}")
    if grade_level is not None and viewer.role == "student":
        # A student reads one level: their own (refused like a teacher's other
        # levels, not left open with nothing ever coming).
        own = await get_student(ctx, viewer.student_id) if viewer.student_id else None
        if own is None or own.grade_level != grade_level:
            raise Forbidden(f"you may not read grade level {grade_level}")
    if student_id is not None:
        await check_readable_id(ctx, student_id)


@contextmanager
def metrics_feed(ctx: Context, interval_ms: int) -> Iterator[Monitor]:
    """What a `metrics` subscription checks and holds while it runs (its slot): for
    `metrics` below, and for a server that sends the events of many subscribers of
    the same document at once (server/fanout.py)."""
    check_interval(interval_ms)
    monitor = _operator_monitor(ctx)
    with _slot(ctx, monitor, METRICS_FIELD):
        yield monitor


def due_after(at: float, due: float, interval_ms: int, tick_s: float) -> float | None:
    """Pacing: the next due time when a tick at `at` is sent, None when it is not:
    the first tick at or after each interval, with half a sampler tick of slack, so
    that a tick landing a hair before its due time is not held back a whole tick."""
    if at >= due - tick_s / 2:
        return at + interval_ms / 1000
    return None


async def metrics(
    ctx: Context, interval_ms: int = 1000
) -> AsyncGenerator[MetricsSnapshot, None]:
    """The snapshot of the first sampler tick at or after each interval."""
    with (
        metrics_feed(ctx, interval_ms) as monitor,
        _queue(monitor, METRICS, LATEST_ONLY, METRICS_FIELD) as queue,
    ):
        signals = monitor.registry.subscriptions
        ticks = _paced(
            queue, interval_ms, monitor.interval_s, lambda s: s.at.timestamp()
        )
        async with aclosing(ticks) as paced:
            async for snapshot, at in paced:
                yield snapshot
                _sent(signals, METRICS_FIELD, at)


async def costs(ctx: Context, interval_ms: int = 1000) -> AsyncGenerator[Any, None]:
    """The cost meter's snapshot (totals and open period), paced like metrics."""
    check_interval(interval_ms)
    monitor = _operator_monitor(ctx)
    clock = asyncio.get_running_loop().time
    signals = monitor.registry.subscriptions
    with (
        _slot(ctx, monitor, COSTS_FIELD),
        _queue(monitor, COSTS, LATEST_ONLY, COSTS_FIELD) as queue,
    ):
        ticks = _paced(queue, interval_ms, monitor.interval_s, lambda _: clock())
        async with aclosing(ticks) as paced:
            async for (snapshot, _rows), at in paced:
                yield snapshot
                _sent(signals, COSTS_FIELD, at)


async def alerts(ctx: Context) -> AsyncGenerator[AlertEvent, None]:
    """Every firing and resolution, in order."""
    monitor = _operator_monitor(ctx)
    signals = monitor.registry.subscriptions
    with (
        _slot(ctx, monitor, ALERTS_FIELD),
        _backlog(ctx, monitor, ALERTS, "alerts", ALERTS_FIELD) as queue,
    ):
        while True:
            event, at = await queue.get_timed()
            if queue.dropped:
                signals.drop(ALERTS_FIELD, SLOW_CLIENT_CLOSED)  # this one too
                await _fell_behind(ctx, "alerts")
            yield event
            _sent(signals, ALERTS_FIELD, at)


async def grade_events(
    ctx: Context, *, student_id: str | None = None, grade_level: int | None = None
) -> AsyncGenerator[GradeEvent, None]:
    """One event per student per write, optionally only one student or grade level."""
    monitor = _require_monitor(ctx)
    viewer = ctx.viewer
    operation = audit.operation_name(ctx, "subscription:gradeEvents")
    signals = monitor.registry.subscriptions
    with (
        _slot(ctx, monitor, GRADE_EVENTS_FIELD),
        _backlog(ctx, monitor, GRADES, "grade events", GRADE_EVENTS_FIELD) as queue,
    ):
        monitor.listener_started()  # the other workers publish their writes now
        while True:
            write: tuple[GradeEvent, ...]
            write, at = await queue.get_timed()
            if queue.dropped:
                signals.drop(GRADE_EVENTS_FIELD, SLOW_CLIENT_CLOSED)  # this one too
                await _fell_behind(ctx, "grade events")
            sent = 0
            for event in write:
                if student_id is not None and event.student_id != student_id:
                    continue
                if grade_level is not None and event.grade_level != grade_level:
                    continue
                if not _may_see(viewer, event):
                    continue
                # The subscription's context lives as long as the subscription: nested
                # fields of this event must not read what an earlier event's loaders
                # cached.
                ctx.refresh_loaders()
                # The event carries the student's grades: its audit record commits
                # first, or the stream ends with DB_UNAVAILABLE instead.
                await audit.record_read(ctx, [event.student_id], operation)
                yield event
                sent += 1
            if sent:
                # One publication: from it to the send of its last event here.
                signals.sent(GRADE_EVENTS_FIELD, sent)
                signals.fanned_out(time.perf_counter() - at)


def wants_grade_events(ctx: Context) -> bool:
    """Whether anyone listens: a gradeEvents subscriber here or, with a bus shared by
    workers, on another live worker (each worker's sample counts its subscribers, and
    a first subscriber is announced at once). Only then does a write number its
    students' events (`db.students.lock_for_write(sequenced=...)`), return its rows
    and publish them."""
    monitor = ctx.services.monitor
    return monitor is not None and monitor.listening()


async def lock_students(
    ctx: Context,
    session: AsyncSession,
    student_ids: Iterable[str],
    *,
    with_events: Iterable[str] | None = None,
) -> dict[str, Locked]:
    """The first statement of a grade write: lock the students it touches (those
    that exist come back, with their levels) and, while anyone listens, number the
    events of those in `with_events` (default: all of them)."""
    wanted = set(student_ids)
    numbered = wanted if with_events is None else set(with_events)
    return await db_students.lock_for_write(
        session,
        wanted,
        sequenced=numbered if wants_grade_events(ctx) else (),
        now=time.time(),
    )


def levels_of(locked: Mapping[str, Locked]) -> dict[str, int]:
    return {student: row.grade_level for student, row in locked.items()}


def publish_grades(
    ctx: Context, records: Sequence[GradeRecord], locked: Mapping[str, Locked]
) -> None:
    """After a write has committed: one bus item per write, one event per student
    the write numbered (`locked`, from `lock_for_write`); nothing when it numbered
    none (nobody listened)."""
    monitor = ctx.services.monitor
    if monitor is None or not records:
        return
    by_student: dict[str, list[GradeRecord]] = {}
    for record in records:
        row = locked.get(record.student_id)
        if row is not None and row.seq is not None:
            by_student.setdefault(record.student_id, []).append(record)
    if not by_student:
        return
    monitor.bus.publish(
        GRADES,
        tuple(
            GradeEvent(
                student,
                locked[student].grade_level,
                tuple(grades),
                locked[student].seq,
                locked[student].prev_at,
            )
            for student, grades in by_student.items()
        ),
    )


def _encode_write(write: tuple[GradeEvent, ...]) -> list[Any]:
    # Datetimes as ISO 8601 with their offset (or none, as they were): exact.
    return [
        [
            event.student_id,
            event.grade_level,
            [
                [
                    g.id,
                    g.subject,
                    float(g.score),
                    float(g.max_score),
                    g.recorded_at.isoformat(),
                ]
                for g in event.grades
            ],
            event.seq,
            event.prev_at,
        ]
        for event in write
    ]


def _decode_write(data: Any) -> tuple[GradeEvent, ...]:
    return tuple(_decode_event(*event) for event in data)


def _decode_event(
    student_id: str,
    level: int,
    grades: list[Any],
    seq: int | None = None,  # absent from a worker that does not number events
    prev_at: float | None = None,
) -> GradeEvent:
    stamp = datetime.fromisoformat
    return GradeEvent(
        student_id,
        int(level),
        tuple(
            GradeRecord(
                int(id_),
                student_id,
                subject,
                float(score),
                float(max_score),
                stamp(recorded_at),
            )
            for id_, subject, score, max_score, recorded_at in grades
        ),
        None if seq is None else int(seq),
        None if prev_at is None else float(prev_at),
    )


def _job_id(data: Any) -> str:
    if not isinstance(data, str):
        raise ValueError("an import job id is a string")
    return data


# The topics of this layer that cross workers with a shared bus (app.py adds them
# to the monitor's): grade writes, and import jobs that changed (their id).
CODECS: dict[str, Codec] = {
    GRADES: Codec(_encode_write, _decode_write),
    IMPORTS: Codec(_job_id, _job_id),
}


@contextmanager
def counted(ctx: Context, field: str) -> Iterator[SubscriptionSignals]:
    """Count a subscription that reads no bus topic (importProgress) like the rest,
    under its root field; its events are counted with the signals it gives."""
    monitor = _require_monitor(ctx)
    with _slot(ctx, monitor, field):
        yield monitor.registry.subscriptions


def _require_monitor(ctx: Context) -> Monitor:
    if ctx.services.monitor is None:
        raise RuntimeError("subscriptions need the monitor's bus")
    return ctx.services.monitor


def _operator_monitor(ctx: Context) -> Monitor:
    ctx.viewer.require("admin", "teacher")
    return _require_monitor(ctx)


def _may_see(viewer: Viewer, event: GradeEvent) -> bool:
    return viewer.may_read(event.student_id, event.grade_level)


@contextmanager
def _slot(ctx: Context, monitor: Monitor, field: str) -> Iterator[None]:
    """Count the subscription (under its root field) while it runs; refuse it
    beyond the limits. The check and the claim happen without an await in between,
    so they cannot race."""
    limits = ctx.services.limits
    registry = monitor.registry
    if ctx.connection.subscriptions >= limits.max_subscriptions_per_connection:
        raise TooManySubscriptions(
            f"at most {limits.max_subscriptions_per_connection} subscriptions "
            "per connection",
            limit=limits.max_subscriptions_per_connection,
        )
    if registry.active_subscriptions >= limits.max_subscriptions:
        raise TooManySubscriptions(
            f"the server is serving its limit of {limits.max_subscriptions} "
            "subscriptions; try again later",
            limit=limits.max_subscriptions,
        )
    # One caller (a key, a token's sub, an anonymous address) over many
    # connections must not take every slot of the server.
    identity = ctx.viewer.identity
    held = ctx.services.subscribers
    if held.get(identity, 0) >= limits.max_subscriptions_per_identity:
        raise TooManySubscriptions(
            f"at most {limits.max_subscriptions_per_identity} subscriptions per "
            "caller on a server",
            limit=limits.max_subscriptions_per_identity,
        )
    ctx.connection.subscriptions += 1
    held[identity] = held.get(identity, 0) + 1
    registry.subscription_started(field)
    try:
        yield
    finally:
        ctx.connection.subscriptions -= 1
        if (left := held[identity] - 1) > 0:
            held[identity] = left
        else:
            del held[identity]
        registry.subscription_ended(field)


@contextmanager
def _queue(
    monitor: Monitor, topic: str, maxsize: int, field: str
) -> Iterator[Subscription]:
    """The stream's queue on the monitor's bus; an item it drops is counted: a
    latest-only queue's as superseded, a backlog's as an overflow."""
    subscription = monitor.bus.subscribe(topic, maxsize)
    signals = monitor.registry.subscriptions
    reason = SUPERSEDED if maxsize == LATEST_ONLY else OVERFLOW
    subscription.on_drop = lambda: signals.drop(field, reason)
    try:
        yield subscription
    finally:
        subscription.close()


@contextmanager
def _backlog(
    ctx: Context, monitor: Monitor, topic: str, what: str, field: str
) -> Iterator[Subscription]:
    """A queue of BACKLOG items that closes the connection with 1013 the moment it
    must drop one: the stream would see that at its next read, but a client that
    reads nothing keeps its stream waiting on a send, never reading again. What
    it still holds when the stream ends then never goes out."""
    with _queue(monitor, topic, BACKLOG, field) as queue:
        queue.on_overflow = lambda: _close_behind(ctx, what)
        try:
            yield queue
        finally:
            if queue.dropped and (left := len(queue)):
                monitor.registry.subscriptions.drop(field, SLOW_CLIENT_CLOSED, left)


def _close_behind(ctx: Context, what: str) -> None:
    ctx.connection.close_soon(TRY_AGAIN_LATER, f"fell behind on {what}")


async def _paced(
    queue: Subscription,
    interval_ms: int,
    tick_s: float,
    when: Callable[[Any], float],
) -> AsyncGenerator[tuple[Any, float], None]:
    """The first item at or after each interval (due_after), with when it
    arrived (time.perf_counter())."""
    due = float("-inf")
    while True:
        item, at = await queue.get_timed()
        following = due_after(when(item), due, interval_ms, tick_s)
        if following is not None:
            due = following
            yield item, at


def _sent(signals: SubscriptionSignals, field: str, at: float) -> None:
    """An item that arrived at `at` went to the subscriber (the stream resumes
    once its event was sent)."""
    signals.sent(field)
    signals.fanned_out(time.perf_counter() - at)


async def _fell_behind(ctx: Context, what: str) -> NoReturn:
    reason = f"fell behind on {what}"
    closing = ctx.connection.close_soon(TRY_AGAIN_LATER, reason)
    if closing is not None:
        # Shielded: this stream ending must not cancel the close it started.
        await asyncio.shield(closing)
    raise SubscriberTooSlow(f"{reason}; subscribe again")
