"""Field usage of documents: the schema's fields (which fieldUsage lists and /metrics
shows from the start, at 0), and the fields an operation selects, worked out once
per cached document and operation (the document gate keeps them with it), so that
counting an operation is a tuple and an increment per field.

What counts as used: each field a selection of the operation names, under the type
it is selected on (an interface's field selected through the interface counts for
the interface), once per operation however many objects it resolves for; fields
in fragments the operation spreads; fields under @skip/@include as well (the
document selects them). Introspection (`__typename`, `__schema`, `__type` and what
they select) is left out. A deprecated argument the operation gives counts as
"field(argument:)". Input fields are not counted: variables can set them, and a
document alone does not say which."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    SelectionSetNode,
    get_named_type,
    get_operation_ast,
)

from monitoring.usage import FieldCell, FieldKey, FieldUsageMeter, SchemaField
from resolvers.context import Context


def argument_field(field_name: str, argument: str) -> str:
    """How a deprecated argument is named among the fields: "gradeUpdate(id:)"."""
    return f"{field_name}({argument}:)"


def schema_fields(schema: GraphQLSchema) -> Iterator[SchemaField]:
    """Every field of the schema's object and interface types (root types included,
    introspection types left out), and every deprecated argument."""
    for named in schema.type_map.values():
        if named.name.startswith("__") or not isinstance(
            named, GraphQLObjectType | GraphQLInterfaceType
        ):
            continue
        for name, field in named.fields.items():
            yield SchemaField(named.name, name, field.deprecation_reason is not None)
            for argument, definition in field.args.items():
                if definition.deprecation_reason is not None:
                    yield SchemaField(named.name, argument_field(name, argument), True)


def subscription_fields(schema: GraphQLSchema) -> list[str]:
    """The subscription root fields, whose signals exist from the start."""
    root = schema.subscription_type
    return list(root.fields) if root is not None else []


def selected_fields(
    schema: GraphQLSchema, document: DocumentNode, operation_name: str | None
) -> tuple[FieldKey, ...]:
    """The (type, field) pairs the operation selects, each once, in document order;
    nothing when the document names no such operation."""
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return ()
    root = schema.get_root_type(operation.operation)
    if root is None:
        return ()
    fragments = {
        d.name.value: d
        for d in document.definitions
        if isinstance(d, FragmentDefinitionNode)
    }
    found: dict[FieldKey, None] = {}
    spread: set[str] = set()

    def walk(parent: GraphQLNamedType, selection_set: SelectionSetNode) -> None:
        fields = getattr(parent, "fields", None) or {}  # a union selects __typename
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                name = selection.name.value
                field = fields.get(name)
                if field is None:  # introspection (or a field validation refuses)
                    continue
                found[(parent.name, name)] = None
                for argument in selection.arguments or ():
                    given = field.args.get(argument.name.value)
                    if given is not None and given.deprecation_reason is not None:
                        key = (parent.name, argument_field(name, argument.name.value))
                        found[key] = None
                if selection.selection_set is not None:
                    walk(get_named_type(field.type), selection.selection_set)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                inner = schema.get_type(condition.name.value) if condition else parent
                if inner is not None:
                    walk(inner, selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = fragments.get(name)
                if name in spread or fragment is None:
                    continue
                spread.add(name)  # its type condition fixes what it selects
                inner = schema.get_type(fragment.type_condition.name.value)
                if inner is not None:
                    walk(inner, fragment.selection_set)

    walk(root, operation.selection_set)
    return tuple(found)


def operation_cells(
    meter: FieldUsageMeter,
    cache: dict[str | None, tuple[FieldCell, ...]],
    schema: GraphQLSchema,
    document: DocumentNode | None,
    operation_name: str | None,
) -> tuple[FieldCell, ...]:
    """The meter's cells of the operation's fields, worked out once per document
    (`cache` goes with it) and operation name."""
    cells = cache.get(operation_name)
    if cells is None:
        selected = selected_fields(schema, document, operation_name) if document else ()
        cells = cache[operation_name] = meter.cells(selected)
    return cells


def count_once(
    meter: FieldUsageMeter, cells: tuple[FieldCell, ...], context: Any
) -> None:
    """Count an operation's fields, unless a path that handed it over (a planned
    or shared one, server/pipeline.py and server/fanout.py) counted them."""
    if isinstance(context, Context):
        if context.usage_counted:
            return
        context.usage_counted = True
    meter.record(cells)
