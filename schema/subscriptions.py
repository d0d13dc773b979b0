"""The Subscription root: live metrics, alerts, costs and grade events."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from typing import Annotated, Any, TypeVar

import strawberry

from resolvers import live
from schema.common import ctx
from schema.grades import Grade
from schema.monitoring import AlertEvent, CostSnapshot, MetricsSnapshot

OPERATORS = " Admins and teachers only: FORBIDDEN for students."

T = TypeVar("T")
R = TypeVar("R")

IntervalMs = Annotated[
    int,
    strawberry.argument(
        description="Milliseconds between two items, 1000 to 60000; each goes out at "
        "the first sampler tick at or after its time."
    ),
]


@strawberry.type(description="One student's new or changed grades from one write.")
class GradeEvent:
    student_id: str = strawberry.field(description="The student's public id.")
    grade_level: int = strawberry.field(description="The student's grade level.")
    grades: list[Grade] = strawberry.field(
        description="The grades this write added or changed for the student."
    )

    @classmethod
    def from_model(cls, event: live.GradeEvent) -> GradeEvent:
        return cls(
            student_id=event.student_id,
            grade_level=event.grade_level,
            grades=[Grade.from_model(grade) for grade in event.grades],
        )


async def _mapped(
    source: AsyncGenerator[T, None], convert: Callable[[T], R]
) -> AsyncGenerator[R, None]:
    async with aclosing(source) as items:
        async for item in items:
            yield convert(item)


def _shared(convert: Callable[[T], R]) -> Callable[[T], R]:
    """Convert each published value once, not once per subscriber: the monitor hands
    the same immutable snapshot to every subscription."""
    last: list[Any] = [None, None]

    def convert_once(item: T) -> R:
        if last[0] is not item:
            last[1] = convert(item)
            last[0] = item
        result: R = last[1]
        return result

    return convert_once


_metrics_type = _shared(MetricsSnapshot.from_model)
_costs_type = _shared(CostSnapshot.from_model)


@strawberry.type(
    description="Live streams over WebSocket (graphql-transport-ws or graphql-ws)."
)
class Subscription:
    # Plain functions that check their arguments before the stream starts, so that
    # bad input is refused with an error message rather than a failed first event.
    @strawberry.subscription(
        description="Metrics snapshots, one per interval." + OPERATORS
    )
    def metrics(
        self, info: strawberry.Info, interval_ms: IntervalMs = 1000
    ) -> AsyncIterator[MetricsSnapshot]:
        live.check_operator(ctx(info))
        live.check_interval(interval_ms)
        return _mapped(live.metrics(ctx(info), interval_ms), _metrics_type)

    @strawberry.subscription(
        description="Every alert firing and resolution as it happens." + OPERATORS
    )
    def alerts(self, info: strawberry.Info) -> AsyncIterator[AlertEvent]:
        live.check_operator(ctx(info))
        return _mapped(live.alerts(ctx(info)), AlertEvent.from_model)

    @strawberry.subscription(
        description="Running costs and the open period, one per interval." + OPERATORS
    )
    def costs(
        self, info: strawberry.Info, interval_ms: IntervalMs = 1000
    ) -> AsyncIterator[CostSnapshot]:
        live.check_operator(ctx(info))
        live.check_interval(interval_ms)
        return _mapped(live.costs(ctx(info), interval_ms), _costs_type)

    @strawberry.subscription(
        description="One event per student per grade write (gradeAdd, gradesAdd, "
        "gradeUpdate, gradesImport), carrying that student's new grades. Each viewer "
        "gets only the students they may read (admins: all; teachers: their grade "
        "levels; students: themselves). A studentId or gradeLevel argument that "
        "names only what the viewer may not read (another student; a level outside "
        "a teacher's) is refused with FORBIDDEN before the stream starts."
    )
    async def grade_events(
        self,
        info: strawberry.Info,
        student_id: Annotated[
            str | None, strawberry.argument(description="Only this student.")
        ] = None,
        grade_level: Annotated[
            int | None, strawberry.argument(description="Only this grade level.")
        ] = None,
    ) -> AsyncIterator[GradeEvent]:
        await live.check_grade_events(
            ctx(info), student_id=student_id, grade_level=grade_level
        )
        events = live.grade_events(
            ctx(info), student_id=student_id, grade_level=grade_level
        )
        return _mapped(events, GradeEvent.from_model)
