"""Grades: types, inputs, GradeQuery, GradeMutation and GradeSubscription."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

import strawberry

from db.records import GradeRecord
from resolvers import grades, live
from resolvers.nodes import GRADE, global_id
from resolvers.pagination import Page
from schema.common import (
    After,
    First,
    GradeLevel,
    Node,
    PageInfo,
    RecordedBefore,
    RecordedSince,
    Subject,
    ctx,
    edges,
    mapped,
    set_fields,
)
from schema.errors import (
    IdempotencyKeyReusedError,
    InvalidInputError,
    InvalidRowsError,
    NotFoundError,
    attempt,
)

GRADE_FIELDS = ("student_id", "subject", "score", "max_score", "recorded_at")
GradeIdArgument = Annotated[
    strawberry.ID,
    strawberry.argument(
        description="The grade's global id (Grade.id). Its number (Grade.gradeId) "
        "is still accepted: that form is deprecated and goes in a later release "
        "(README: Schema policy)."
    ),
]


@strawberry.type(description="One recorded grade.")
class Grade(Node):
    # Student.grades returns the records themselves (db.records.GradeRecord, which
    # has every attribute read here), so the fields read attributes both have.
    grade_id: int = strawberry.field(
        description="The grade's number (what `id` held before global ids)."
    )
    student_id: str = strawberry.field(description="The student's public id.")
    subject: str = strawberry.field(description="The subject, e.g. Math.")
    score: float = strawberry.field(description="Points scored, 0 to maxScore.")
    max_score: float = strawberry.field(description="Points possible (above 0).")
    percentage: float = strawberry.field(description="100 * score / maxScore.")
    recorded_at: datetime = strawberry.field(description="When it was recorded (UTC).")

    @strawberry.field(
        description="The grade's global id (Relay): opaque and stable; `node(id:)` "
        "reads the grade back, gradeUpdate and gradeDelete take it."
    )
    def id(self) -> strawberry.ID:
        return strawberry.ID(global_id(GRADE, self.grade_id))

    @classmethod
    def from_model(cls, row: GradeRecord) -> Grade:
        return cls(
            grade_id=row.id,
            student_id=row.student_id,
            subject=row.subject,
            score=row.score,
            max_score=row.max_score,
            percentage=row.percentage,
            recorded_at=row.recorded_at,
        )


@strawberry.type(description="An edge in a grade connection.")
class GradeEdge:
    cursor: str = strawberry.field(description="Opaque position of this grade.")
    node: Grade = strawberry.field(description="The grade.")


@strawberry.type(description="A page of grades, oldest first.")
class GradeConnection:
    edges: list[GradeEdge] = strawberry.field(description="The grades on this page.")
    page_info: PageInfo = strawberry.field(description="Paging state.")
    _page: strawberry.Private[Page[GradeRecord]]

    @strawberry.field(description="How many grades match the filters, on all pages.")
    async def total_count(self) -> int:
        return await self._page.count()

    @classmethod
    def from_page(cls, page: Page[GradeRecord]) -> GradeConnection:
        return cls(
            edges=edges(page, GradeEdge, Grade.from_model),
            page_info=PageInfo.of(page),
            _page=page,
        )


@strawberry.input(description="A new grade.")
class GradeAddInput:
    student_id: str = strawberry.field(description="The student's public id.")
    subject: str = strawberry.field(description="The subject (1 to 64 characters).")
    score: float = strawberry.field(description="Points scored, 0 to maxScore.")
    max_score: float = strawberry.field(
        default=100.0, description="Points possible, above 0; 100 when left out."
    )
    recorded_at: datetime | None = strawberry.field(
        default=None, description="When it was recorded (UTC); now when left out."
    )


@strawberry.input(description="Changes to a grade; fields left out stay as they are.")
class GradeUpdateInput:
    student_id: str | None = strawberry.field(
        default=strawberry.UNSET, description="Move the grade to this student."
    )
    subject: str | None = strawberry.field(
        default=strawberry.UNSET, description="Subject."
    )
    score: float | None = strawberry.field(
        default=strawberry.UNSET, description="Score."
    )
    max_score: float | None = strawberry.field(
        default=strawberry.UNSET, description="Points possible."
    )
    recorded_at: datetime | None = strawberry.field(
        default=strawberry.UNSET, description="When it was recorded (UTC)."
    )


@strawberry.type(description="The grade was added.")
class GradeAddSuccess:
    grade: Grade = strawberry.field(description="The new grade.")


@strawberry.type(description="The grade was updated.")
class GradeUpdateSuccess:
    grade: Grade = strawberry.field(description="The grade as it is now.")


@strawberry.type(description="The grade was deleted.")
class GradeDeleteSuccess:
    grade: Grade = strawberry.field(description="The grade as it was.")


@strawberry.type(description="Every row was inserted in one transaction.")
class GradesAddSuccess:
    inserted: int = strawberry.field(description="How many grades were inserted.")
    replayed: bool = strawberry.field(
        description="True when this is the stored result of an earlier request with "
        "the same idempotency key and payload (nothing was written again)."
    )


GradeAddResult = Annotated[
    GradeAddSuccess | InvalidInputError | NotFoundError,
    strawberry.union("GradeAddResult", description="Result of gradeAdd."),
]
GradeUpdateResult = Annotated[
    GradeUpdateSuccess | InvalidInputError | NotFoundError,
    strawberry.union("GradeUpdateResult", description="Result of gradeUpdate."),
]
GradeDeleteResult = Annotated[
    GradeDeleteSuccess | NotFoundError,
    strawberry.union("GradeDeleteResult", description="Result of gradeDelete."),
]
GradesAddResult = Annotated[
    GradesAddSuccess | InvalidRowsError | IdempotencyKeyReusedError,
    strawberry.union("GradesAddResult", description="Result of gradesAdd."),
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


@strawberry.type
class GradeQuery:
    @strawberry.field(
        description="Grades, filtered and paged, oldest first; only grades of "
        "students the viewer may read. With studentId of a student the viewer may "
        "not read: FORBIDDEN and null."
    )
    async def grades(
        self,
        info: strawberry.Info,
        student_id: Annotated[
            str | None, strawberry.argument(description="Only this student's grades.")
        ] = None,
        subject: Subject = None,
        recorded_since: RecordedSince = None,
        recorded_before: RecordedBefore = None,
        first: First = 20,
        after: After = None,
    ) -> GradeConnection | None:
        page = await grades.list_grades(
            ctx(info),
            student_id=student_id,
            subject=subject,
            recorded_since=recorded_since,
            recorded_before=recorded_before,
            first=first,
            after=after,
        )
        return GradeConnection.from_page(page)

    @strawberry.field(description="Every subject that has grades, alphabetically.")
    async def subjects(self, info: strawberry.Info) -> list[str]:
        return await grades.list_subjects(ctx(info))


@strawberry.type
class GradeMutation:
    @strawberry.mutation(description="Add one grade.")
    async def grade_add(
        self, info: strawberry.Info, input: GradeAddInput
    ) -> GradeAddResult:
        call = grades.add_grade(
            ctx(info),
            student_id=input.student_id,
            subject=input.subject,
            score=input.score,
            max_score=input.max_score,
            recorded_at=input.recorded_at,
        )
        return await attempt(call, lambda r: GradeAddSuccess(grade=Grade.from_model(r)))

    @strawberry.mutation(description="Change a grade's fields.")
    async def grade_update(
        self, info: strawberry.Info, id: GradeIdArgument, input: GradeUpdateInput
    ) -> GradeUpdateResult:
        call = grades.update_grade(ctx(info), str(id), set_fields(input, GRADE_FIELDS))
        return await attempt(
            call, lambda r: GradeUpdateSuccess(grade=Grade.from_model(r))
        )

    @strawberry.mutation(description="Delete a grade.")
    async def grade_delete(
        self, info: strawberry.Info, id: GradeIdArgument
    ) -> GradeDeleteResult:
        call = grades.delete_grade(ctx(info), str(id))
        return await attempt(
            call, lambda r: GradeDeleteSuccess(grade=Grade.from_model(r))
        )

    @strawberry.mutation(
        description="Add many grades, all or nothing, in one transaction. With an "
        "idempotency key, a retry with the same payload replays the first result."
    )
    async def grades_add(
        self,
        info: strawberry.Info,
        input: list[GradeAddInput],
        idempotency_key: Annotated[
            str | None,
            strawberry.argument(description="Client-chosen key, kept at least 24 h."),
        ] = None,
    ) -> GradesAddResult:
        rows = [
            grades.GradeRow(
                student_id=row.student_id,
                subject=row.subject,
                score=row.score,
                max_score=row.max_score,
                recorded_at=row.recorded_at,
            )
            for row in input
        ]
        call = grades.add_grades(ctx(info), rows, idempotency_key)
        return await attempt(
            call, lambda r: GradesAddSuccess(inserted=r.inserted, replayed=r.replayed)
        )


@strawberry.type
class GradeSubscription:
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
        grade_level: GradeLevel = None,
    ) -> AsyncIterator[GradeEvent]:
        await live.check_grade_events(
            ctx(info), student_id=student_id, grade_level=grade_level
        )
        events = live.grade_events(
            ctx(info), student_id=student_id, grade_level=grade_level
        )
        return mapped(events, GradeEvent.from_model)
