"""Grade types, the grade connection and the grade inputs."""

from __future__ import annotations

from datetime import datetime

import strawberry

from db.records import GradeRecord
from resolvers.pagination import Page
from schema.common import PageInfo


@strawberry.type(description="One recorded grade.")
class Grade:
    id: strawberry.ID = strawberry.field(description="The grade's id.")
    student_id: str = strawberry.field(description="The student's public id.")
    subject: str = strawberry.field(description="The subject, e.g. Math.")
    score: float = strawberry.field(description="Points scored, 0 to maxScore.")
    max_score: float = strawberry.field(description="Points possible (above 0).")
    percentage: float = strawberry.field(description="100 * score / maxScore.")
    recorded_at: datetime = strawberry.field(description="When it was recorded (UTC).")

    @classmethod
    def from_model(cls, row: GradeRecord) -> Grade:
        return cls(
            id=strawberry.ID(str(row.id)),
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
            edges=[
                GradeEdge(cursor=cursor, node=Grade.from_model(row))
                for row, cursor in zip(page.items, page.cursors, strict=True)
            ],
            page_info=PageInfo(has_next_page=page.has_next, end_cursor=page.end_cursor),
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
