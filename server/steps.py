"""Plan steps of their own for the fields where one statement per level, selecting
only the columns the selection reads, beats calling the resolver per object.

`Student.grades` under a page of students: the general executor calls the resolver
once per student (a DataLoader future each), builds a record of six columns per
grade (datetimes parsed) and completes every field of every grade. Its step here
runs one statement for the whole level with the columns the selection reads and
builds each grade's output dict straight from the row."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from resolvers import grades
from resolvers.grades import GRADE_ROW_COLUMNS, percentage
from server.execution import Fallback
from server.plan import (
    Batch,
    FieldPlan,
    ObjectPlan,
    Planner,
    ReadyCompleter,
    StepFactory,
    leaf_expression,
)

# Grade's fields as the rows give them: (columns read, expression over them).
_GRADE_FIELDS: dict[str, tuple[tuple[str, ...], str]] = {
    "id": (("id",), "{id}"),
    "student_id": (("student_id",), "{student_id}"),
    "subject": (("subject",), "{subject}"),
    "score": (("score",), "{score}"),
    "max_score": (("max_score",), "{max_score}"),
    "recorded_at": (("recorded_at",), "{recorded_at}"),
    "percentage": (("score", "max_score"), "percentage({score}, {max_score})"),
}


def _grades_step(
    planner: Planner, plan: FieldPlan, grade_plan: ObjectPlan | None
) -> Batch | None:
    """The step for `Student.grades` when every selected Grade field is a column or
    computed from columns; None (the resolver runs) otherwise."""
    if grade_plan is None or grade_plan.nested or grade_plan.steps:
        return None
    columns: list[str] = []
    for _, field_plan in grade_plan.order:
        if field_plan is None:
            continue
        known = _GRADE_FIELDS.get(field_plan.attribute or "")
        if known is None:
            return None
        columns.extend(c for c in known[0] if c not in columns)
    if not all(c in GRADE_ROW_COLUMNS for c in columns):
        return None
    # Row index of each column: the statement selects the student id first.
    index = {name: f"r[{i + 1}]" for i, name in enumerate(columns)}
    namespace: dict[str, Any] = {"percentage": percentage}
    entries: list[str] = []
    core_type = planner.core.get_type(grade_plan.type_name)
    for position, (response_name, field_plan) in enumerate(grade_plan.order):
        if field_plan is None:
            entries.append(f"{response_name!r}: {grade_plan.type_name!r}")
            continue
        assert field_plan.attribute is not None
        accessor = _GRADE_FIELDS[field_plan.attribute][1].format(**index)
        field_type = core_type.fields[field_plan.field_name].type  # type: ignore[union-attr]
        expression = leaf_expression(accessor, field_type, f"c{position}", namespace)
        if expression is None:
            return None
        entries.append(f"{response_name!r}: {expression}")
    build = _compile_rows(entries, namespace)
    selected = tuple(columns)
    plan.completer = ReadyCompleter()

    async def batch(
        context: Any, students: list[Any], arguments: dict[str, Any]
    ) -> list[Any]:
        records = [student._record for student in students]
        rows = await grades.grade_rows_of_students(
            context, records, arguments.get("subject"), selected
        )
        empty: list[Any] = []
        return [build(rows.get(record.student_id, empty)) for record in records]

    return batch


def _compile_rows(
    entries: list[str], namespace: dict[str, Any]
) -> Callable[[list[Any]], list[dict[str, Any]]]:
    """`build(rows)`: the output dict of each row. The source holds GraphQL response
    names (identifiers) and column positions only; values never reach it."""
    namespace["Fallback"] = Fallback
    source = f"def build(rows):\n    return [{{{', '.join(entries)}}} for r in rows]\n"
    exec(compile(source, "<gradepulse grade rows>", "exec"), namespace)
    build: Callable[[list[Any]], list[dict[str, Any]]] = namespace["build"]
    return build


STEPS: Mapping[str, StepFactory] = {"Student.grades": _grades_step}
