"""Compiled query plans: each cached query document, per operation, becomes a plan
that runs breadth-first instead of graphql-core's general executor.

A plan is a tree of object plans, one per selection of an object type. Running one:
- fields that read an attribute (Strawberry's basic fields) and `__typename` are
  built into each object's dict by generated code, one list comprehension per
  selection and level, never one call per field;
- fields with a resolver are plan steps: for all the objects of a level at once, the
  resolver is called with arguments converted once per request (not once per
  object), and the awaitables of the level are gathered together, so DataLoaders
  batch the level in one statement;
- a few fields have a step of their own that fetches a whole level in one
  statement, selecting only the columns the selection reads, and builds the output
  straight from the rows (server/steps.py);
- each step is timed once under its `Type.field` name.

A plan covers only what it can answer exactly as the general executor would. What it
cannot compile raises NotPlanned (its reason is counted in /metrics); anything
unusual at run time (a resolver's error, a null for a non-null field, a value a
scalar refuses) raises Fallback, and the whole operation is answered by the general
executor instead, which then reports exactly what it always did."""

from __future__ import annotations

import asyncio
import inspect
import keyword
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLLeafType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    is_abstract_type,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
    is_object_type,
)
from graphql.execution.values import get_argument_values
from strawberry.types.arguments import convert_arguments

from server.execution import DEFINITION, INLINE_CHECKS, Fallback, leaf_completer

# Reasons a document is not planned, as /metrics labels them.
MUTATION = "mutation"
SUBSCRIPTION = "subscription"
DIRECTIVES = "directives"
INTROSPECTION = "introspection"
ABSTRACT = "abstract_type"
FIELD_EXTENSION = "field_extension"
UNKNOWN_FIELD = "unknown_field"


class NotPlanned(Exception):
    """The planner does not cover this document: the general executor runs it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PlanInfo:
    """What a resolver called by a plan gets as `info`: the context only. Any other
    attribute raises AttributeError, and the operation falls back."""

    __slots__ = ("context",)

    def __init__(self, context: Any) -> None:
        self.context = context


# A step of its own for a field (server/steps.py). Its factory, given the plan of
# the field's selection, returns the batch function and the field's own state (or
# None: the resolver is called instead). The batch function runs every field of a
# level that shares it at once (aliases, several parents): given the context and
# (state, objects, arguments) for each field, it returns each field's values.
Batch = Callable[
    [Any, list[tuple[Any, list[Any], dict[str, Any]]]], Awaitable[list[list[Any]]]
]
StepFactory = Callable[
    ["Planner", "FieldPlan", "ObjectPlan | None"], tuple[Batch, Any] | None
]


class Run:
    """One execution of a plan: the context, the coerced variables, and the steps
    waiting for the next level."""

    __slots__ = ("context", "info", "pending", "timings", "variables")

    def __init__(self, context: Any, variables: Any, timings: Any) -> None:
        self.context = context
        self.info = PlanInfo(context)
        self.variables = variables
        self.pending: list[tuple[FieldPlan, list[Any], list[dict[str, Any]]]] = []
        self.timings = timings  # record(name, seconds) or None


# --- completers: a value (or a list of values) of one output type ----------------


class Completer(ABC):
    """Completes the values of one field for many objects at once."""

    @abstractmethod
    def many(self, values: list[Any], run: Run) -> list[Any]:
        """The output of each value, in order; Fallback when one cannot be."""


class LeafCompleter(Completer):
    __slots__ = ("one",)

    def __init__(self, leaf: GraphQLLeafType, required: bool) -> None:
        self.one = leaf_completer(leaf, required)

    def many(self, values: list[Any], run: Run) -> list[Any]:
        one = self.one
        return [one(value) for value in values]


class ReadyCompleter(Completer):
    """Values a step built already (the output itself)."""

    def many(self, values: list[Any], run: Run) -> list[Any]:
        return values


class ObjectCompleter(Completer):
    __slots__ = ("plan", "required")

    def __init__(self, plan: ObjectPlan, required: bool) -> None:
        self.plan = plan
        self.required = required

    def many(self, values: list[Any], run: Run) -> list[Any]:
        if None not in values:
            return self.plan.build(values, run)
        if self.required:
            raise Fallback
        present = [value for value in values if value is not None]
        built = iter(self.plan.build(present, run))
        return [None if value is None else next(built) for value in values]


class ListCompleter(Completer):
    """A list per object: the items of all objects are completed as one batch."""

    __slots__ = ("inner", "required")

    def __init__(self, inner: Completer, required: bool) -> None:
        self.inner = inner
        self.required = required

    def many(self, values: list[Any], run: Run) -> list[Any]:
        flat: list[Any] = []
        sizes: list[int] = []
        for value in values:
            if value is None:
                if self.required:
                    raise Fallback
                sizes.append(-1)
                continue
            if not isinstance(value, (list, tuple)):
                raise Fallback  # generators, sets: the general path says what it does
            flat.extend(value)
            sizes.append(len(value))
        done = self.inner.many(flat, run)
        result: list[Any] = []
        start = 0
        for size in sizes:
            if size < 0:
                result.append(None)
            else:
                result.append(done[start : start + size])
                start += size
        return result


# --- plans -------------------------------------------------------------------------


@dataclass(eq=False)
class FieldPlan:
    """One response key of a selection."""

    response_name: str
    field_name: str
    timing_name: str
    completer: Completer | None = None
    # A basic field: the attribute to read; otherwise the resolver and its arguments.
    attribute: str | None = None
    resolver: Any = None
    self_parameter: bool = False
    info_name: str | None = None
    # Arguments converted for the resolver: fixed when the document gives them as
    # literals, otherwise per request from the variables (`convert`).
    arguments: dict[str, Any] | None = None
    convert: Callable[[Any], dict[str, Any]] | None = None
    batch: Batch | None = None
    batch_state: Any = None


@dataclass(eq=False)
class ObjectPlan:
    """The selection of one object type: generated code builds each object's dict,
    the rest is attribute reads of nested objects and steps for the next level."""

    type_name: str
    fields: list[FieldPlan]
    is_type_of: Callable[[Any, Any], bool] | None = None
    build_dicts: Callable[[list[Any]], list[dict[str, Any]]] | None = None
    nested: list[FieldPlan] = field(default_factory=list)
    steps: list[FieldPlan] = field(default_factory=list)
    # Response names in selection order, with their field plans (None: __typename).
    order: list[tuple[str, FieldPlan | None]] = field(default_factory=list)

    def build(self, objects: list[Any], run: Run) -> list[dict[str, Any]]:
        if self.is_type_of is not None:
            for value in objects:
                if not self.is_type_of(value, None):
                    raise Fallback
        assert self.build_dicts is not None
        outs = self.build_dicts(objects)
        for plan in self.nested:
            attribute = plan.attribute
            assert attribute is not None and plan.completer is not None
            try:
                values = [getattr(value, attribute) for value in objects]
            except AttributeError:
                raise Fallback from None
            name = plan.response_name
            for out, done in zip(outs, plan.completer.many(values, run), strict=True):
                out[name] = done
        if self.steps and objects:
            pending = run.pending
            for plan in self.steps:
                pending.append((plan, objects, outs))
        return outs


@dataclass(eq=False)
class OperationPlan:
    """A compiled query operation."""

    root: ObjectPlan
    label: str  # the operation as the audit log names it

    async def execute(
        self, context: Any, variables: Any, timings: Any
    ) -> dict[str, Any]:
        """The data of the operation; `variables`: graphql-core's VariableValues
        (None without variables); `timings`: record(name, seconds) or None."""
        run = Run(context, variables, timings)
        (data,) = self.root.build([None], run)
        while run.pending:
            level, run.pending = run.pending, []
            await _run_level(level, run)
        return data


Pending = tuple[FieldPlan, list[Any], list[dict[str, Any]]]


async def _run_level(level: list[Pending], run: Run) -> None:
    """Every step of one level: fields that share a batch function together (one
    statement for all their objects), the others each on its own."""
    steps: list[Awaitable[None]] = []
    batches: dict[Batch, list[Pending]] = {}
    for entry in level:
        batch = entry[0].batch
        if batch is None:
            steps.append(_run_step(*entry, run))
        else:
            batches.setdefault(batch, []).append(entry)
    for batch, entries in batches.items():
        steps.append(_run_batch(batch, entries, run))
    if len(steps) == 1:
        await steps[0]
    else:
        await asyncio.gather(*steps)


def _arguments(plan: FieldPlan, run: Run) -> dict[str, Any]:
    arguments = plan.arguments
    if arguments is None:
        assert plan.convert is not None
        arguments = plan.convert(run.variables)
    return arguments


async def _run_batch(batch: Batch, entries: list[Pending], run: Run) -> None:
    started = time.perf_counter()
    requests = [
        (plan.batch_state, objects, _arguments(plan, run))
        for plan, objects, _ in entries
    ]
    results = await batch(run.context, requests)
    if run.timings is not None:
        run.timings(entries[0][0].timing_name, time.perf_counter() - started)
    for (plan, _, outs), values in zip(entries, results, strict=True):
        _fill(plan, outs, values, run)


async def _run_step(
    plan: FieldPlan, objects: list[Any], outs: list[dict[str, Any]], run: Run
) -> None:
    started = time.perf_counter()
    values = _call_all(plan, objects, _arguments(plan, run), run.info)
    waiting = [i for i, value in enumerate(values) if inspect.isawaitable(value)]
    if waiting:
        if len(waiting) == 1:
            results: list[Any] = [await values[waiting[0]]]
        else:
            results = await asyncio.gather(*(values[i] for i in waiting))
        for i, result in zip(waiting, results, strict=True):
            values[i] = result
    if run.timings is not None:
        run.timings(plan.timing_name, time.perf_counter() - started)
    _fill(plan, outs, values, run)


def _fill(
    plan: FieldPlan, outs: list[dict[str, Any]], values: list[Any], run: Run
) -> None:
    assert plan.completer is not None
    name = plan.response_name
    for out, done in zip(outs, plan.completer.many(values, run), strict=True):
        out[name] = done


def _call_all(
    plan: FieldPlan, objects: list[Any], arguments: dict[str, Any], info: PlanInfo
) -> list[Any]:
    call = plan.resolver
    kwargs = dict(arguments)
    if plan.info_name is not None:
        kwargs[plan.info_name] = info
    if plan.self_parameter:
        return [call(value, **kwargs) for value in objects]
    return [call(**kwargs) for _ in objects]


class Planner:
    """Compiles operations of one Strawberry schema. `steps` maps "Type.field" to
    a factory of that field's own batch step (server/steps.py)."""

    def __init__(
        self, schema: Any, core: GraphQLSchema, steps: Mapping[str, StepFactory]
    ) -> None:
        self.schema = schema
        self.core = core
        self.steps = dict(steps)
        self.scalar_registry = schema.schema_converter.scalar_registry
        self.config = schema.config

    def _converter(
        self, definition: GraphQLField, node: FieldNode, arguments: list[Any]
    ) -> Callable[[Any], dict[str, Any]]:
        """The resolver's keyword arguments from the coerced variables (graphql-
        core's VariableValues, or None), as Strawberry converts them (input types,
        enums, scalars, Python names)."""
        registry, config = self.scalar_registry, self.config

        def convert(variables: Any) -> dict[str, Any]:
            raw = get_argument_values(definition, node, variables)
            return convert_arguments(
                raw, arguments, scalar_registry=registry, config=config
            )

        return convert

    def compile(
        self, document: DocumentNode, operation: OperationDefinitionNode, label: str
    ) -> OperationPlan:
        if operation.operation is OperationType.MUTATION:
            raise NotPlanned(MUTATION)
        if operation.operation is OperationType.SUBSCRIPTION:
            raise NotPlanned(SUBSCRIPTION)
        fragments = {
            d.name.value: d
            for d in document.definitions
            if isinstance(d, FragmentDefinitionNode)
        }
        root_type = self.core.query_type
        assert root_type is not None
        root = self._object_plan(root_type, [operation.selection_set], fragments)
        return OperationPlan(root, label)

    def root_field(
        self, document: DocumentNode, operation: OperationDefinitionNode
    ) -> FieldPlan:
        """The plan of an operation that selects one field of its root type and
        nothing else (a subscription's field): the field's resolver, arguments and
        the plan of its selection."""
        fragments = {
            d.name.value: d
            for d in document.definitions
            if isinstance(d, FragmentDefinitionNode)
        }
        root_type = self.core.get_root_type(operation.operation)
        if root_type is None:
            raise NotPlanned(UNKNOWN_FIELD)
        root = self._object_plan(root_type, [operation.selection_set], fragments)
        if len(root.order) != 1 or root.order[0][1] is None:
            raise NotPlanned(UNKNOWN_FIELD)
        return root.order[0][1]

    # --- selections --------------------------------------------------------------

    def _collect(
        self,
        object_type: GraphQLObjectType,
        selection_sets: list[SelectionSetNode],
        fragments: dict[str, FragmentDefinitionNode],
    ) -> dict[str, list[FieldNode]]:
        grouped: dict[str, list[FieldNode]] = {}
        visited: set[str] = set()

        def walk(selection_set: SelectionSetNode) -> None:
            for selection in selection_set.selections:
                if selection.directives:
                    raise NotPlanned(DIRECTIVES)
                if isinstance(selection, FieldNode):
                    name = (selection.alias or selection.name).value
                    grouped.setdefault(name, []).append(selection)
                elif isinstance(selection, InlineFragmentNode):
                    condition = selection.type_condition
                    if condition is None or self._applies(
                        condition.name.value, object_type
                    ):
                        walk(selection.selection_set)
                elif isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    if name in visited:
                        continue
                    visited.add(name)
                    fragment = fragments.get(name)
                    if fragment is None:
                        raise NotPlanned(UNKNOWN_FIELD)
                    if fragment.directives:
                        raise NotPlanned(DIRECTIVES)
                    if self._applies(fragment.type_condition.name.value, object_type):
                        walk(fragment.selection_set)

        for selection_set in selection_sets:
            walk(selection_set)
        return grouped

    def _applies(self, condition: str, object_type: GraphQLObjectType) -> bool:
        named = self.core.get_type(condition)
        if named is None:
            raise NotPlanned(UNKNOWN_FIELD)
        if named is object_type:
            return True
        if is_abstract_type(named):
            return self.core.is_sub_type(named, object_type)  # type: ignore[arg-type]
        return False

    def _object_plan(
        self,
        object_type: GraphQLObjectType,
        selection_sets: list[SelectionSetNode],
        fragments: dict[str, FragmentDefinitionNode],
    ) -> ObjectPlan:
        grouped = self._collect(object_type, selection_sets, fragments)
        plans: list[FieldPlan] = []
        entries: list[tuple[str, str]] = []
        namespace: dict[str, Any] = {}
        nested: list[FieldPlan] = []
        steps: list[FieldPlan] = []
        order: list[tuple[str, FieldPlan | None]] = []
        for index, (response_name, nodes) in enumerate(grouped.items()):
            node = nodes[0]
            name = node.name.value
            if not response_name.isidentifier():
                raise NotPlanned(UNKNOWN_FIELD)
            if name == "__typename":
                entries.append((response_name, repr(object_type.name)))
                order.append((response_name, None))
                continue
            if name in ("__schema", "__type"):
                raise NotPlanned(INTROSPECTION)
            definition = object_type.fields.get(name)
            if definition is None:
                raise NotPlanned(UNKNOWN_FIELD)
            plan = self._field_plan(
                object_type, response_name, nodes, definition, fragments
            )
            plans.append(plan)
            order.append((response_name, plan))
            expression = self._inline(plan, definition, index, namespace)
            if expression is not None:
                entries.append((response_name, expression))
                continue
            entries.append((response_name, "None"))
            (nested if plan.attribute is not None else steps).append(plan)
        # Fields that later steps fill start as None.
        build = compile_dicts(entries, namespace)
        return ObjectPlan(
            object_type.name,
            plans,
            is_type_of=object_type.is_type_of,
            build_dicts=build,
            nested=nested,
            steps=steps,
            order=order,
        )

    def _inline(
        self,
        plan: FieldPlan,
        definition: GraphQLField,
        index: int,
        namespace: dict[str, Any],
    ) -> str | None:
        """The generated expression for a basic leaf field; None for the others."""
        if plan.attribute is None:
            return None
        return leaf_expression(
            f"v.{plan.attribute}", definition.type, f"c{index}", namespace
        )

    def _field_plan(
        self,
        object_type: GraphQLObjectType,
        response_name: str,
        nodes: list[FieldNode],
        definition: GraphQLField,
        fragments: dict[str, FragmentDefinitionNode],
    ) -> FieldPlan:
        node = nodes[0]
        name = node.name.value
        strawberry_field = definition.extensions.get(DEFINITION)
        if strawberry_field is None:
            raise NotPlanned(UNKNOWN_FIELD)
        if strawberry_field.extensions or getattr(
            strawberry_field, "permission_classes", None
        ):
            raise NotPlanned(FIELD_EXTENSION)
        plan = FieldPlan(
            response_name=response_name,
            field_name=name,
            timing_name=f"{object_type.name}.{name}",
        )
        resolver = strawberry_field.base_resolver
        if resolver is None:
            python_name = strawberry_field.python_name
            if (
                strawberry_field.default_resolver is not getattr
                or not python_name.isidentifier()
                or keyword.iskeyword(python_name)
            ):
                raise NotPlanned(FIELD_EXTENSION)
            plan.attribute = python_name
        else:
            if resolver.parent_parameter or resolver.root_parameter:
                raise NotPlanned(FIELD_EXTENSION)
            plan.resolver = resolver
            plan.self_parameter = resolver.self_parameter is not None
            info = resolver.info_parameter
            plan.info_name = info.name if info is not None else None
            plan.convert = self._converter(definition, node, resolver.arguments)
            if not _uses_variables(node):
                plan.arguments = plan.convert(None)
        selection_sets = [n.selection_set for n in nodes if n.selection_set]
        object_plan = self._type_completer(
            definition.type, selection_sets, fragments, plan
        )
        factory = self.steps.get(plan.timing_name)
        if factory is not None and plan.resolver is not None:
            step = factory(self, plan, object_plan)
            if step is not None:
                plan.batch, plan.batch_state = step
        return plan

    def _type_completer(
        self,
        output_type: GraphQLOutputType,
        selection_sets: list[SelectionSetNode],
        fragments: dict[str, FragmentDefinitionNode],
        plan: FieldPlan,
    ) -> ObjectPlan | None:
        """Sets plan.completer; returns the innermost object plan, if any."""
        found: list[ObjectPlan] = []

        def completer(of: GraphQLOutputType) -> Completer:
            required = is_non_null_type(of)
            inner = of.of_type if isinstance(of, GraphQLNonNull) else of
            if is_list_type(inner):
                assert isinstance(inner, GraphQLList)
                return ListCompleter(completer(inner.of_type), required)
            if is_leaf_type(inner):
                return LeafCompleter(inner, required)  # type: ignore[arg-type]
            if is_object_type(inner):
                assert isinstance(inner, GraphQLObjectType)
                object_plan = self._object_plan(inner, selection_sets, fragments)
                found.append(object_plan)
                return ObjectCompleter(object_plan, required)
            raise NotPlanned(ABSTRACT)

        plan.completer = completer(output_type)
        return found[0] if found else None


def attributes_only(completer: Completer | None) -> bool:
    """Whether completing a value needs nothing but the value itself: no resolver
    to call, no step to run (a pure function of the object)."""
    if isinstance(completer, ListCompleter):
        return attributes_only(completer.inner)
    if isinstance(completer, ObjectCompleter):
        plan = completer.plan
        return not plan.steps and all(
            attributes_only(field.completer) for field in plan.nested
        )
    return isinstance(completer, LeafCompleter)


def leaf_expression(
    accessor: str, field_type: GraphQLOutputType, helper: str, namespace: dict[str, Any]
) -> str | None:
    """Generated code completing the leaf value `accessor` of `field_type` (None
    when the type is not a leaf): the built-in scalars' common cases inline, the rest
    through the scalar, and anything unusual raises Fallback."""
    required = is_non_null_type(field_type)
    inner = field_type.of_type if isinstance(field_type, GraphQLNonNull) else field_type
    if not is_leaf_type(inner):
        return None
    namespace[helper] = leaf_completer(inner, required)  # type: ignore[arg-type]
    check = INLINE_CHECKS.get(inner)  # type: ignore[call-overload]
    if check is None:
        return f"{helper}({accessor})"
    test = check.replace("x", f"(x := {accessor})", 1)
    return f"(x if ({test}) else {helper}(x))"


def _uses_variables(node: FieldNode) -> bool:
    found = False

    def visit(value: Any) -> None:
        nonlocal found
        if isinstance(value, VariableNode):
            found = True
            return
        for name in ("values", "fields"):
            for item in getattr(value, name, None) or ():
                visit(getattr(item, "value", item))

    for argument in node.arguments or ():
        visit(argument.value)
    return found


def compile_dicts(
    entries: list[tuple[str, str]], namespace: dict[str, Any], item: str = "v"
) -> Callable[[list[Any]], list[dict[str, Any]]]:
    """`build(items)`: one dict per item, each entry's expression (over `item`)
    under its key, in order; an AttributeError (a missing attribute) raises
    Fallback. The source holds GraphQL response names (identifiers), the schema's
    Python attribute names and column positions; values never reach it."""
    body = ", ".join(f"{name!r}: {expression}" for name, expression in entries)
    source = (
        "def build(items):\n"
        "    try:\n"
        f"        return [{{{body}}} for {item} in items]\n"
        "    except AttributeError:\n"
        "        raise Fallback from None\n"
    )
    namespace["Fallback"] = Fallback
    exec(compile(source, "<gradepulse plan>", "exec"), namespace)
    build: Callable[[list[Any]], list[dict[str, Any]]] = namespace["build"]
    return build
