"""Mutation roots and their result unions: a Success member and the error types."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import strawberry

from db.errors import DomainError
from resolvers import grades, students
from schema.common import ctx
from schema.errors import (
    ConflictError,
    Error,
    IdempotencyKeyReusedError,
    InvalidInputError,
    InvalidRowsError,
    NotFoundError,
    error_result,
)
from schema.grades import Grade, GradeAddInput, GradeUpdateInput
from schema.students import Student, StudentCreateInput, StudentUpdateInput

T = TypeVar("T")


async def attempt(call: Awaitable[T], success: Callable[[T], Any]) -> Any:
    """Run a resolver; an expected failure becomes its error type in the union."""
    try:
        return success(await call)
    except DomainError as exc:
        return error_result(exc)


def _set(input_obj: object, names: dict[str, str]) -> dict[str, Any]:
    """The fields a client set on an update input, keyed by column name."""
    return {
        column: getattr(input_obj, attr)
        for attr, column in names.items()
        if getattr(input_obj, attr) is not strawberry.UNSET
    }


@strawberry.type(description="The student was created.")
class StudentCreateSuccess:
    student: Student = strawberry.field(description="The new student.")


@strawberry.type(description="The student was updated.")
class StudentUpdateSuccess:
    student: Student = strawberry.field(description="The student as it is now.")


@strawberry.type(description="The student was deleted.")
class StudentDeleteSuccess:
    student: Student = strawberry.field(description="The student as it was.")


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


StudentCreateResult = Annotated[
    StudentCreateSuccess | InvalidInputError | ConflictError,
    strawberry.union("StudentCreateResult", description="Result of studentCreate."),
]
StudentUpdateResult = Annotated[
    StudentUpdateSuccess | InvalidInputError | ConflictError | NotFoundError,
    strawberry.union("StudentUpdateResult", description="Result of studentUpdate."),
]
StudentDeleteResult = Annotated[
    StudentDeleteSuccess | NotFoundError | ConflictError,
    strawberry.union("StudentDeleteResult", description="Result of studentDelete."),
]
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

_STUDENT_FIELDS = {
    "student_id": "student_id",
    "name": "name",
    "email": "email",
    "grade_level": "grade_level",
}
_GRADE_FIELDS = {
    "student_id": "student_id",
    "subject": "subject",
    "score": "score",
    "max_score": "max_score",
    "recorded_at": "recorded_at",
}


@strawberry.type(description="Writes. Expected failures come back as typed results.")
class Mutation:
    @strawberry.mutation(description="Create a student.")
    async def student_create(
        self, info: strawberry.Info, input: StudentCreateInput
    ) -> StudentCreateResult:
        call = students.create_student(
            ctx(info),
            student_id=input.student_id,
            name=input.name,
            email=input.email,
            grade_level=input.grade_level,
        )
        return await attempt(
            call, lambda r: StudentCreateSuccess(student=Student.from_model(r))
        )

    @strawberry.mutation(description="Change a student's fields.")
    async def student_update(
        self, info: strawberry.Info, student_id: str, input: StudentUpdateInput
    ) -> StudentUpdateResult:
        call = students.update_student(
            ctx(info), student_id, _set(input, _STUDENT_FIELDS)
        )
        return await attempt(
            call, lambda r: StudentUpdateSuccess(student=Student.from_model(r))
        )

    @strawberry.mutation(
        description="Delete a student; refused with ConflictError while they have grades, "
        "unless cascade is true."
    )
    async def student_delete(
        self,
        info: strawberry.Info,
        student_id: str,
        cascade: Annotated[
            bool, strawberry.argument(description="Delete the student's grades too.")
        ] = False,
    ) -> StudentDeleteResult:
        call = students.delete_student(ctx(info), student_id, cascade=cascade)
        return await attempt(
            call, lambda r: StudentDeleteSuccess(student=Student.from_model(r))
        )

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
        self, info: strawberry.Info, id: strawberry.ID, input: GradeUpdateInput
    ) -> GradeUpdateResult:
        call = grades.update_grade(ctx(info), str(id), _set(input, _GRADE_FIELDS))
        return await attempt(
            call, lambda r: GradeUpdateSuccess(grade=Grade.from_model(r))
        )

    @strawberry.mutation(description="Delete a grade.")
    async def grade_delete(
        self, info: strawberry.Info, id: strawberry.ID
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


__all__ = ["Error", "Mutation"]
