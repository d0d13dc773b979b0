"""Plan steps of their own for the fields where one statement per level, selecting
only the columns the selection reads, beats calling the resolver per object.

`Student.grades` under a page of students: the general executor calls the resolver
once per student (a DataLoader future each), builds a record of six columns per
grade (datetimes parsed) and completes every field of every grade. Its step here
runs one statement for the whole level (every `grades` field of the level, aliases
included, as the DataLoader batches them) with the columns the selections read, and
builds each grade's output dict straight from the row."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from resolvers import grades
from resolvers.grades import GRADE_ROW_COLUMNS, percentage
from resolvers.nodes import GRADE, global_id
from server.plan import (
    Batch,
    FieldPlan,
    ObjectPlan,
    Planner,
    ReadyCompleter,
    StepFactory,
    compile_dicts,
    leaf_expression,
)

# Grade's fields as the rows give them: (columns read, expression over them), by
# attribute (basic fields) or, for the fields with a resolver, "Grade.<field>".
_GRADE_FIELDS: dict[str, tuple[tuple[str, ...], str]] = {
    "Grade.id": (("id",), "global_id(GRADE, {id})"),
    "grade_id": (("id",), "{id}"),
    "student_id": (("student_id",), "{student_id}"),
    "subject": (("subject",), "{subject}"),
    "score": (("score",), "{score}"),
    "max_score": (("max_score",), "{max_score}"),
    "recorded_at": (("recorded_at",), "{recorded_at}"),
    "percentage": (("score", "max_score"), "percentage({score}, {max_score})"),
}
Build = Callable[[list[Any]], list[dict[str, Any]]]


class GradeRows:
    """One `grades` field's selection: the columns it reads and, per column order
    of a statement, the generated code building its output from the rows."""

    def __init__(
        self, columns: tuple[str, ...], entries: list[tuple[str, str | None, Any]]
    ) -> None:
        self.columns = columns
        # (response name, _GRADE_FIELDS key or None for __typename, field type)
        self.entries = entries
        self._builds: dict[tuple[str, ...], Build] = {}

    def build_for(self, selected: tuple[str, ...]) -> Build:
        build = self._builds.get(selected)
        if build is None:
            build = self._builds[selected] = self._compile(selected)
        return build

    def _compile(self, selected: tuple[str, ...]) -> Build:
        # The statement selects the student id first, then `selected`.
        index = {name: f"r[{i + 1}]" for i, name in enumerate(selected)}
        namespace: dict[str, Any] = {
            "percentage": percentage,
            "global_id": global_id,
            "GRADE": GRADE,
        }
        entries: list[tuple[str, str]] = []
        for position, (response_name, attribute, field_type) in enumerate(self.entries):
            if attribute is None:
                entries.append((response_name, "'Grade'"))
                continue
            accessor = _GRADE_FIELDS[attribute][1].format(**index)
            expression = leaf_expression(
                accessor, field_type, f"c{position}", namespace
            )
            assert expression is not None  # checked by _grades_step
            entries.append((response_name, expression))
        return compile_dicts(entries, namespace, item="r")


def _grades_step(
    planner: Planner, plan: FieldPlan, grade_plan: ObjectPlan | None
) -> tuple[Batch, GradeRows] | None:
    """The step for `Student.grades` when every selected Grade field is a column or
    computed from columns; None (the resolver runs) otherwise."""
    if grade_plan is None or grade_plan.nested:
        return None
    if any(step.timing_name not in _GRADE_FIELDS for step in grade_plan.steps):
        return None  # a resolver this step cannot compute from columns
    core_type = planner.core.get_type(grade_plan.type_name)
    columns: list[str] = []
    entries: list[tuple[str, str | None, Any]] = []
    for response_name, field_plan in grade_plan.order:
        if field_plan is None:
            entries.append((response_name, None, None))
            continue
        key = field_plan.attribute or field_plan.timing_name
        known = _GRADE_FIELDS.get(key)
        field_type = core_type.fields[field_plan.field_name].type  # type: ignore[union-attr]
        if known is None or leaf_expression("v", field_type, "c", {}) is None:
            return None
        columns.extend(c for c in known[0] if c not in columns)
        entries.append((response_name, key, field_type))
    if not set(columns) <= GRADE_ROW_COLUMNS:
        return None
    plan.completer = ReadyCompleter()
    return _grades_batch, GradeRows(tuple(columns), entries)


async def _grades_batch(
    context: Any, requests: list[tuple[Any, list[Any], dict[str, Any]]]
) -> list[list[Any]]:
    """Every `grades` field of a level in one statement: the union of their
    students and columns, all subjects when any field asks for all."""
    records: dict[str, Any] = {}
    columns: list[str] = []
    subjects: set[str | None] = set()
    for selection, students, arguments in requests:
        for student in students:
            record = student._record
            records.setdefault(record.student_id, record)
        columns.extend(c for c in selection.columns if c not in columns)
        subjects.add(arguments.get("subject"))
    if "subject" not in columns and len(subjects) > 1:
        columns.append("subject")  # to share the rows out by subject
    selected = tuple(columns)
    only = None if None in subjects else sorted(subjects)  # type: ignore[type-var]
    rows = await grades.grade_rows_of_students(
        context, list(records.values()), only, selected
    )
    at = selected.index("subject") + 1 if "subject" in selected else -1
    empty: list[Any] = []
    results = []
    for selection, students, arguments in requests:
        build = selection.build_for(selected)
        subject = arguments.get("subject")
        values = []
        for student in students:
            mine = rows.get(student._record.student_id, empty)
            if subject is not None and (only is None or len(only) > 1):
                mine = [row for row in mine if row[at] == subject]
            values.append(build(mine))
        results.append(values)
    return results


STEPS: Mapping[str, StepFactory] = {"Student.grades": _grades_step}
