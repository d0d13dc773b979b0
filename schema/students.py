"""Students: Student and its analytics, inputs, StudentQuery and StudentMutation."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated

import strawberry

from db.records import StudentRecord
from resolvers import analytics, grades, students
from resolvers.nodes import STUDENT, global_id
from resolvers.pagination import Page
from schema.common import (
    After,
    First,
    GradeLevel,
    Node,
    OrderDirection,
    PageInfo,
    ctx,
    edges,
    set_fields,
)
from schema.errors import ConflictError, InvalidInputError, NotFoundError, attempt
from schema.figures import figure
from schema.grades import Grade

STUDENT_FIELDS = ("student_id", "name", "email", "grade_level")


# A student's analytics live beside Student, which exposes them: schema/analytics.py
# (whose atRiskStudents lists students) imports them from here.
@strawberry.type(description="Statistics of one subject's grades, as percentages.")
class SubjectStats:
    subject: str = strawberry.field(description="The subject.")
    count: int = strawberry.field(description="How many grades.")
    average: float = strawberry.field(description="Mean percentage.")
    min: float = strawberry.field(description="Lowest percentage.")
    max: float = strawberry.field(description="Highest percentage.")
    _latest: strawberry.Private[float]
    _of_class: strawberry.Private[bool]

    @strawberry.field(
        description="The most recent grade's percentage. In class analytics it is "
        "one student's grade: FORBIDDEN (and null) for students."
    )
    def latest(self, info: strawberry.Info) -> float | None:
        if self._of_class:
            return analytics.class_latest(ctx(info), self._latest)
        return self._latest

    @classmethod
    def from_model(
        cls, row: analytics.SubjectStats, *, of_class: bool = False
    ) -> SubjectStats:
        return cls(
            subject=row.subject,
            count=row.count,
            average=figure(row.average),
            min=figure(row.min),
            max=figure(row.max),
            _latest=figure(row.latest),
            _of_class=of_class,
        )


@strawberry.type(description="One student's analytics.")
class StudentAnalytics:
    _value: strawberry.Private[analytics.StudentAnalytics]

    @strawberry.field(description="How many grades the student has.")
    def grade_count(self) -> int:
        return self._value.stats.grade_count

    @strawberry.field(description="Mean percentage of all grades; null without grades.")
    def average(self) -> float | None:
        return figure(self._value.stats.average)

    @strawberry.field(
        description="Letter of the average: A >= 90, B >= 80, C >= 70, D >= 60, F."
    )
    def letter(self) -> str | None:
        return self._value.letter

    @strawberry.field(
        description="Mean over subjects of each subject average's grade points (4.0 scale)."
    )
    def gpa(self) -> float | None:
        return figure(self._value.stats.gpa)

    @strawberry.field(
        description="Least-squares slope of percentage against time, points per 30 days; "
        "null with fewer than 3 grades."
    )
    def trend_per_month(self) -> float | None:
        return figure(self._value.stats.trend_per_month)

    @strawberry.field(
        description="Mid-rank percentile of the average among the students of the same "
        "grade level: 100 * (below + 0.5 * ties) / count."
    )
    async def percentile(self, info: strawberry.Info) -> float | None:
        return figure(await analytics.percentile_of(ctx(info), self._value.student))

    @strawberry.field(
        description="Average below AT_RISK_AVERAGE or trend below AT_RISK_TREND."
    )
    def at_risk(self) -> bool:
        return self._value.at_risk

    @strawberry.field(description="Why the student is at risk; empty when not.")
    def risk_reasons(self) -> list[str]:
        return self._value.risk_reasons

    @strawberry.field(description="Statistics per subject, by subject name.")
    def subjects(self) -> list[SubjectStats]:
        return [SubjectStats.from_model(s) for s in self._value.stats.subjects]


@strawberry.type(
    description="A student. Admins read every student, teachers the students of "
    "their grade levels, students only themselves."
)
class Student(Node):
    student_id: str = strawberry.field(
        description="The student's public id, e.g. S00001 (changes with "
        "studentUpdate; `id` does not)."
    )
    name: str = strawberry.field(description="Full name.")
    email: str = strawberry.field(description="Email address (stored lower-case).")
    grade_level: int = strawberry.field(description="Grade level, 1 to 12.")
    created_at: datetime = strawberry.field(
        description="When the record was created (UTC)."
    )
    _record: strawberry.Private[StudentRecord]

    @classmethod
    def from_model(cls, row: StudentRecord) -> Student:
        return cls(
            student_id=row.student_id,
            name=row.name,
            email=row.email,
            grade_level=row.grade_level,
            created_at=row.created_at,
            _record=row,
        )

    @strawberry.field(
        description="The student's global id (Relay): opaque and stable, also when "
        "studentId changes; `node(id:)` reads the student back."
    )
    def id(self) -> strawberry.ID:
        return strawberry.ID(global_id(STUDENT, self._record.id))

    @strawberry.field(description="All of the student's grades, oldest first.")
    def grades(
        self,
        info: strawberry.Info,
        subject: Annotated[
            str | None, strawberry.argument(description="Only this subject's grades.")
        ] = None,
    ) -> list[Grade]:
        # GradeRecord has every attribute Grade reads (id becomes a string through
        # the ID scalar), so the records go out as they are: no per-grade object.
        # The loader's future is returned as it is; the executor awaits it.
        context = ctx(info)
        students.require_readable(context, self._record)
        records = grades.grades_of_student(context, self.student_id, subject)
        return records  # type: ignore[return-value]  # a future of records, read as Grade

    @strawberry.field(description="The student's analytics.")
    async def analytics(self, info: strawberry.Info) -> StudentAnalytics:
        value = await analytics.analytics_of(ctx(info), self._record)
        return StudentAnalytics(_value=value)


@strawberry.enum(description="What to sort students by.")
class StudentOrderField(Enum):
    STUDENT_ID = "student_id"
    NAME = "name"
    GRADE_LEVEL = "grade_level"
    CREATED_AT = "created_at"


@strawberry.type(description="An edge in a student connection.")
class StudentEdge:
    cursor: str = strawberry.field(description="Opaque position of this student.")
    node: Student = strawberry.field(description="The student.")


@strawberry.type(description="A page of students.")
class StudentConnection:
    edges: list[StudentEdge] = strawberry.field(
        description="The students on this page."
    )
    page_info: PageInfo = strawberry.field(description="Paging state.")
    _page: strawberry.Private[Page[StudentRecord]]

    @strawberry.field(description="How many students match the filters, on all pages.")
    async def total_count(self) -> int:
        return await self._page.count()

    @classmethod
    def from_page(cls, page: Page[StudentRecord]) -> StudentConnection:
        return cls(
            edges=edges(page, StudentEdge, Student.from_model),
            page_info=PageInfo.of(page),
            _page=page,
        )


@strawberry.input(description="A new student.")
class StudentCreateInput:
    student_id: str = strawberry.field(
        description="Public id, unique, 1 to 64 characters."
    )
    name: str = strawberry.field(description="Full name, 1 to 200 characters.")
    email: str = strawberry.field(description="Email address, unique.")
    grade_level: int = strawberry.field(description="Grade level, 1 to 12.")


@strawberry.input(description="Changes to a student; fields left out stay as they are.")
class StudentUpdateInput:
    student_id: str | None = strawberry.field(
        default=strawberry.UNSET, description="New public id (grades follow)."
    )
    name: str | None = strawberry.field(
        default=strawberry.UNSET, description="Full name."
    )
    email: str | None = strawberry.field(default=strawberry.UNSET, description="Email.")
    grade_level: int | None = strawberry.field(
        default=strawberry.UNSET, description="Grade level, 1 to 12."
    )


@strawberry.type(description="The student was created.")
class StudentCreateSuccess:
    student: Student = strawberry.field(description="The new student.")


@strawberry.type(description="The student was updated.")
class StudentUpdateSuccess:
    student: Student = strawberry.field(description="The student as it is now.")


@strawberry.type(description="The student was deleted.")
class StudentDeleteSuccess:
    student: Student = strawberry.field(description="The student as it was.")


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


@strawberry.type
class StudentQuery:
    @strawberry.field(
        description="One student; null when absent. FORBIDDEN (and null) for a "
        "student the viewer may not read: a student asking for anyone else (whether "
        "or not that id exists), a teacher for a student outside their levels."
    )
    async def student(self, info: strawberry.Info, student_id: str) -> Student | None:
        row = await students.get_student(ctx(info), student_id)
        return Student.from_model(row) if row else None

    @strawberry.field(
        description="Students, filtered, sorted and paged; only those the viewer "
        "may read (a teacher: their grade levels; a student: themselves), never "
        "FORBIDDEN. totalCount counts the same students."
    )
    async def students(
        self,
        info: strawberry.Info,
        first: First = 20,
        after: After = None,
        grade_level: GradeLevel = None,
        search: Annotated[
            str | None,
            strawberry.argument(
                description="Case-insensitive match on name, studentId or email "
                "(at most 254 characters: no field is longer)."
            ),
        ] = None,
        order_by: Annotated[
            StudentOrderField, strawberry.argument(description="Sort key.")
        ] = StudentOrderField.STUDENT_ID,
        direction: Annotated[
            OrderDirection, strawberry.argument(description="Sort direction.")
        ] = OrderDirection.ASC,
    ) -> StudentConnection:
        page = await students.list_students(
            ctx(info),
            first=first,
            after=after,
            grade_level=grade_level,
            search=search,
            order_by=order_by.value,
            descending=direction is OrderDirection.DESC,
        )
        return StudentConnection.from_page(page)


@strawberry.type
class StudentMutation:
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
            ctx(info), student_id, set_fields(input, STUDENT_FIELDS)
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
