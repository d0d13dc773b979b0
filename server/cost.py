"""Query cost: the points an operation costs before it runs (QUERY_TOO_COSTLY)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    StringValueNode,
    VariableDefinitionNode,
    VariableNode,
    get_variable_values,
    is_composite_type,
)
from graphql.pyutils import Undefined

from resolvers.errors import ErrorCode
from resolvers.pagination import MAX_FIRST
from server.limits import QueryLimits, capped, fragment_order, limit_error

# Cost: every object is a point, scalars and enums are free, and a list multiplies
# what one of its items costs by how many it holds: its `first` (or `last`), else
# the `first` of the connection it sits in (students(first: 100) { edges }), else
# the estimate below. Lists that are neither paged nor listed count DEFAULT_ESTIMATE.
# A page size that cannot be told before execution counts as the largest page the
# resolvers allow (resolvers.pagination.check_first).
PAGE_ARGUMENTS = ("first", "last")
MAX_PAGE = MAX_FIRST
LIST_ESTIMATES: dict[str, int] = {
    "Student.grades": 20,
    "GradeEvent.grades": 20,
    "StudentAnalytics.subjects": 10,
    "ClassAnalytics.subjects": 10,
    "ClassAnalytics.histogram": 10,
    "ClassAnalytics.top": 5,
    "ClassAnalytics.bottom": 5,
    "CostSnapshot.topOperations": 10,
    "ImportJob.errors": 100,
    "InvalidRowsError.rows": 100,
    "Query.fieldUsage": 400,  # every field of the schema (admins only)
}
DEFAULT_ESTIMATE = 20
# Lists as long as one of their arguments (nodes(ids:) answers one item per id).
SIZED_BY: dict[str, str] = {"Query.nodes": "ids"}
# Writes also cost what they carry, on the rate budget only (MAX_COST bounds what
# a query selects): a gradesAdd row a tenth of a point, an import a point per
# 4 KiB of CSV (the file, or the text).
ROWS_PER_POINT = 10
IMPORT_BYTES_PER_POINT = 4096
CARRYING = frozenset({"Mutation.gradesAdd", "Mutation.gradesImport"})


@dataclass(frozen=True, slots=True)
class _Cost:
    """The cost of a selection as a function of the page size it is given:
    `fixed`, plus per item `paged` (lists that take the page size), or `estimated`
    when there is no page size (those lists at their estimates)."""

    fixed: int = 0
    paged: int = 0
    estimated: int = 0

    def at(self, page: int | None) -> int:
        return capped(
            self.fixed + (self.estimated if page is None else self.paged * page)
        )

    def __add__(self, other: _Cost) -> _Cost:
        return _Cost(
            capped(self.fixed + other.fixed),
            capped(self.paged + other.paged),
            capped(self.estimated + other.estimated),
        )


class _CostWalk:
    def __init__(
        self,
        schema: GraphQLSchema,
        variables: Mapping[str, Any],
        definitions: Mapping[str, VariableDefinitionNode],
    ) -> None:
        self.schema = schema
        self.variables = dict(variables)
        self.definitions = definitions
        self.coerced: dict[str, Any] = {}
        self.fragments: dict[str, _Cost] = {}
        self.uses_variables = False
        self.invalid_variables = False
        self.input_points = 0
        # Whether a list without a page size counted its estimate: its real
        # length is known only once it has run (settle_cost).
        self.estimated = False

    def page_size(self, node: FieldNode, field: GraphQLField) -> int | None:
        """The field's `first` (or `last`) as execution will see it: the literal,
        the variable's coerced value, or the argument's default; MAX_PAGE when that
        cannot be told before execution; None for a field without one."""
        for name in PAGE_ARGUMENTS:
            argument = field.args.get(name)
            if argument is None:
                continue
            given = next(
                (a.value for a in node.arguments or () if a.name.value == name), None
            )
            value: Any = Undefined
            if isinstance(given, IntValueNode):
                value = int(given.value)
            elif isinstance(given, VariableNode):
                self.uses_variables = True
                value = self.variable(given.name.value)
            elif given is not None:
                value = None  # another literal, which validation refuses
            if value is Undefined:
                value = argument.default_value
            if isinstance(value, int) and not isinstance(value, bool):
                return max(0, value)
            return MAX_PAGE
        return None

    def variable(self, name: str) -> Any:
        """The variable as graphql-core will coerce it (100.0 is the Int 100):
        Undefined when it is neither given nor defaulted, so that the argument's
        default applies; None when it does not coerce (and then execution refuses
        the operation)."""
        if name not in self.coerced:
            definition = self.definitions.get(name)
            value: Any = None  # an undefined variable, which validation refuses
            if definition is not None:
                coerced = get_variable_values(
                    self.schema, (definition,), self.variables
                )
                if isinstance(coerced, list):
                    self.invalid_variables = True
                else:
                    value = coerced.coerced.get(name, Undefined)
            self.coerced[name] = value
        return self.coerced[name]

    def selection(self, selection_set: SelectionSetNode | None, parent: Any) -> _Cost:
        total = _Cost()
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                total += self.field(selection, parent)
            elif isinstance(selection, FragmentSpreadNode):
                total += self.fragments.get(selection.name.value, _Cost())
            else:
                assert isinstance(selection, InlineFragmentNode)
                condition = selection.type_condition
                kind = self.schema.get_type(condition.name.value) if condition else None
                total += self.selection(selection.selection_set, kind or parent)
        return total

    def argument(self, node: FieldNode, name: str) -> Any:
        """An argument's value before coercion: the literal's (a list's items as
        None, a string's text), the variable's as sent; None when absent."""
        given = next(
            (a.value for a in node.arguments or () if a.name.value == name), None
        )
        if isinstance(given, VariableNode):
            self.uses_variables = True
            return self.variables.get(given.name.value)
        if isinstance(given, ListValueNode):
            return [None] * len(given.values)
        if isinstance(given, StringValueNode):
            return given.value
        return None if given is None else [given]  # one item, as a list coerces it

    def carried(self, node: FieldNode, key: str) -> int:
        """The points of what a write carries (ROWS_PER_POINT)."""
        if key == "Mutation.gradesAdd":
            rows = self.argument(node, "input")
            return -(-len(rows) // ROWS_PER_POINT) if isinstance(rows, list) else 0
        if key == "Mutation.gradesImport":
            size = 0
            for name in ("file", "csv"):
                value = self.argument(node, name)
                if isinstance(value, str):
                    size += len(value.encode("utf-8", "surrogatepass"))
                elif isinstance(getattr(value, "size", None), int):
                    size += value.size
            return -(-size // IMPORT_BYTES_PER_POINT)
        return 0

    def field(self, node: FieldNode, parent: Any) -> _Cost:
        name = node.name.value
        field = getattr(parent, "fields", {}).get(name)
        if field is None or name.startswith("__"):
            return _Cost()  # __typename is a scalar; introspection is not counted
        key = f"{getattr(parent, 'name', '')}.{name}"
        if key in CARRYING:
            self.input_points += self.carried(node, key)
        kind = field.type
        if isinstance(kind, GraphQLNonNull):
            kind = kind.of_type
        is_list = isinstance(kind, GraphQLList)
        named: GraphQLNamedType = _named(kind)
        if not is_composite_type(named):
            return _Cost()
        inner = self.selection(node.selection_set, named)
        page = self.page_size(node, field)
        if not is_list:
            # A connection hands its page size to the lists directly inside it.
            return _Cost(fixed=1 + inner.at(page))
        item = 1 + inner.at(None)
        if page is not None:
            return _Cost(fixed=capped(page * item))
        if key in SIZED_BY:
            given = self.argument(node, SIZED_BY[key])
            count = min(len(given), MAX_PAGE) if isinstance(given, list) else 1
            return _Cost(fixed=capped(count * item))
        self.estimated = True
        estimate = LIST_ESTIMATES.get(key, DEFAULT_ESTIMATE)
        return _Cost(paged=item, estimated=capped(estimate * item))


def _named(kind: Any) -> GraphQLNamedType:
    while isinstance(kind, (GraphQLList, GraphQLNonNull)):
        kind = kind.of_type
    named: GraphQLNamedType = kind
    return named


class Price(NamedTuple):
    """The points of one operation; whether they depend on variables (else they
    may be cached with the document); whether a variable that sets a page size
    does not coerce, so that execution will refuse the operation; the points of
    what a write carries (charged, not held to MAX_COST); whether a list counted
    its estimate (settle_cost then charges what it held beyond)."""

    cost: int
    varies: bool
    invalid_variables: bool
    input_points: int = 0
    estimated: bool = False

    @property
    def charge(self) -> int:
        """What the rate budget is charged before the operation runs."""
        return capped(self.cost + self.input_points)


def price_operation(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: Mapping[str, Any] | None,
) -> Price:
    """The points of one operation of the document, its variables coerced as
    execution will coerce them (only those that set a page size)."""
    root = schema.get_root_type(operation.operation)
    if root is None:
        return Price(0, False, False)
    definitions = {
        definition.variable.name.value: definition
        for definition in operation.variable_definitions or ()
    }
    # Variables that are not an object are refused before costing.
    values = variables if isinstance(variables, Mapping) else {}
    walk = _CostWalk(schema, values, definitions)
    for fragment in fragment_order(document):
        condition = schema.get_type(fragment.type_condition.name.value)
        walk.fragments[fragment.name.value] = walk.selection(
            fragment.selection_set, condition
        )
    cost = walk.selection(operation.selection_set, root).at(None)
    return Price(
        cost,
        walk.uses_variables,
        walk.invalid_variables,
        walk.input_points,
        walk.estimated,
    )


def objects_in(data: Any) -> int:
    """How many objects an answer's data holds (what the cost counts, each a
    point), its root and introspection (`__schema`, `__type`: free) excepted."""
    if not isinstance(data, dict):
        return 0
    return sum(_objects(v) for k, v in data.items() if not k.startswith("__"))


def _objects(value: Any) -> int:
    kind = type(value)
    if kind is dict:
        return 1 + sum(_objects(v) for v in value.values() if type(v) in _NESTED)
    if kind is not list or not value:
        return 0
    first = value[0]
    # The items of a list share one selection: when the first holds only scalars
    # (no object, list or null that could be an object), so does every other.
    if type(first) is dict and not any(
        type(v) in _MAYBE_NESTED for v in first.values()
    ):
        return len(value)
    return sum(_objects(item) for item in value)


_NESTED = (dict, list)
_MAYBE_NESTED = (dict, list, type(None))


def check_cost(cost: int, limits: QueryLimits) -> GraphQLError | None:
    if cost <= limits.max_cost:
        return None
    return limit_error(
        ErrorCode.QUERY_TOO_COSTLY,
        f"the query costs {cost} points; at most {limits.max_cost} are allowed "
        "(every object is a point, and a list multiplies by its `first`): ask for "
        "fewer items or split the query",
        limit=limits.max_cost,
        actual=cost,
    )
