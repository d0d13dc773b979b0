"""Query limits: document size, nesting, tokens, depth, aliases, directives and cost."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, NamedTuple

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLSchema,
    GraphQLSyntaxError,
    InlineFragmentNode,
    IntValueNode,
    NamedTypeNode,
    NameNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    Source,
    TokenKind,
    VariableDefinitionNode,
    VariableNode,
    get_variable_values,
    is_composite_type,
)
from graphql.language import Lexer
from graphql.pyutils import Undefined

from resolvers.pagination import MAX_FIRST


@dataclass(frozen=True, slots=True)
class QueryLimits:
    """The per-profile limits (settings MAX_*), handed down by app.py."""

    max_depth: int = 10
    max_aliases: int = 15
    max_tokens: int = 2000
    max_directives: int = 50
    max_document_chars: int = 15_000
    max_nesting: int = 100
    max_cost: int = 5000
    operation_timeout_s: float = 5.0
    # Introspection is outside depth and cost, so its work is bounded by count: one
    # `__schema` (a whole introspection) and a few `__type` per operation.
    max_schema_selections: int = 1
    max_type_selections: int = 10


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
}
DEFAULT_ESTIMATE = 20
# Introspection is bounded by graphql-core's MaxIntrospectionDepthRule instead.
INTROSPECTION_FIELDS = frozenset({"__schema", "__type"})
# Counts above this are reported as this (JSON numbers; a fragment bomb's counts
# have no useful size).
MAX_REPORTED = 2**53 - 1


def limit_error(code: str, message: str, *, limit: Any, actual: Any) -> GraphQLError:
    """A refused document: `extensions` = {code, limit, actual}."""
    if isinstance(actual, int):
        actual = min(actual, MAX_REPORTED)
    return GraphQLError(
        message, extensions={"code": code, "limit": limit, "actual": actual}
    )


def timeout_error(limit: float, actual: float) -> GraphQLError:
    """An operation stopped after OPERATION_TIMEOUT_S."""
    return limit_error(
        "OPERATION_TIMEOUT",
        f"the operation ran longer than {limit:g} s and was stopped",
        limit=limit,
        actual=round(actual, 3),
    )


# --- before parsing -----------------------------------------------------------------

# Strings, block strings and comments, which may hold brackets that are not
# structure. Each alternative also matches an unterminated string to the end (of the
# line or the document), so a match never fails and the scan stays linear.
_IGNORED = re.compile(
    r'"""(?:[^"\\]+|\\"""|\\|"(?!""))*(?:"""|\Z)'
    r'|"(?:[^"\\\n\r]+|\\.)*"?'
    r"|#[^\n\r]*"
)
_NOT_BRACKETS = re.compile(r"[^{}()\[\]]+")
_STEP = {"{": 1, "(": 1, "[": 1, "}": -1, ")": -1, "]": -1}


def nesting_depth(query: str) -> int:
    """The deepest bracket nesting outside strings and comments."""
    if '"' in query or "#" in query:
        query = _IGNORED.sub("", query)
    brackets = _NOT_BRACKETS.sub("", query)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def count_tokens(query: str) -> int | None:
    """Tokens as the parser sees them (comments excluded); None when the document
    does not lex, which the parser then reports."""
    lexer = Lexer(Source(query))
    count = 0
    try:
        while lexer.advance().kind is not TokenKind.EOF:
            count += 1
    except GraphQLSyntaxError:
        return None
    return count


def nesting_error(depth: int, limits: QueryLimits) -> GraphQLError:
    return limit_error(
        "QUERY_TOO_DEEP",
        f"the document nests brackets {depth} deep; at most {limits.max_nesting} "
        "levels are allowed",
        limit=limits.max_nesting,
        actual=depth,
    )


def check_source(query: str, limits: QueryLimits) -> GraphQLError | None:
    """The limits checked before parsing, cheapest first."""
    chars = len(query)
    if chars > limits.max_document_chars:
        return limit_error(
            "DOCUMENT_TOO_LARGE",
            f"the document has {chars} characters; at most "
            f"{limits.max_document_chars} are allowed",
            limit=limits.max_document_chars,
            actual=chars,
        )
    # Only a document with more opening brackets than the limit can nest deeper.
    opening = query.count("{") + query.count("(") + query.count("[")
    if opening > limits.max_nesting:
        depth = nesting_depth(query)
        if depth > limits.max_nesting:
            return nesting_error(depth, limits)
    # Every token takes at least one character.
    if chars > limits.max_tokens:
        tokens = count_tokens(query)
        if tokens is not None and tokens > limits.max_tokens:
            return limit_error(
                "TOO_MANY_TOKENS",
                f"the document has {tokens} tokens; at most {limits.max_tokens} "
                "are allowed",
                limit=limits.max_tokens,
                actual=tokens,
            )
    return None


def placeholder_document(
    operation_name: str | None, allowed: Iterable[Any]
) -> DocumentNode:
    """A one-field document standing in for a refused one, built without parsing, so
    that Strawberry's own parse step has nothing to do; it is never executed."""
    # Strawberry's OperationType, or graphql-core's: the same values.
    values = {getattr(kind, "value", kind) for kind in allowed}
    operation = next(
        (kind for kind in OperationType if kind.value in values), OperationType.QUERY
    )
    return DocumentNode(
        definitions=(
            OperationDefinitionNode(
                operation=operation,
                name=NameNode(value=operation_name) if operation_name else None,
                variable_definitions=(),
                directives=(),
                selection_set=SelectionSetNode(
                    selections=(FieldNode(name=NameNode(value="__typename")),)
                ),
            ),
        )
    )


# --- after parsing: depth, aliases, directives ---------------------------------------


@dataclass(frozen=True, slots=True)
class Shape:
    """What a document asks for, fragments counted each time they are spread; the
    largest operation's figures when the document holds several.

    `aliases` also counts every field selected again under a response name its
    selection set already has (through inline fragments and fragment spreads) and
    every fragment spread again in one selection set: graphql-core's
    OverlappingFieldsCanBeMergedRule compares such fields pairwise, so that a few
    hundred copies cost a second of validation. `schemas` and `types` count the
    `__schema` and `__type` selections, `introspection_aliases` the aliases below
    them (each one repeats introspection work, which no points count)."""

    depth: int = 0
    aliases: int = 0
    directives: int = 0
    schemas: int = 0
    types: int = 0
    introspection_aliases: int = 0

    def most(self, other: Shape) -> Shape:
        """Each figure at the larger of the two (the largest operation's)."""
        return Shape(*map(max, zip(self.figures(), other.figures(), strict=True)))

    def figures(self) -> tuple[int, ...]:
        return (
            self.depth,
            self.aliases,
            self.directives,
            self.schemas,
            self.types,
            self.introspection_aliases,
        )


@dataclass(frozen=True, slots=True)
class _Fragment:
    shape: Shape
    # The response keys it adds to the selection set it is spread in.
    keys: frozenset[str]


def _spreads(selection_set: SelectionSetNode | None) -> Iterable[str]:
    for selection in selection_set.selections if selection_set else ():
        if isinstance(selection, FragmentSpreadNode):
            yield selection.name.value
        else:
            yield from _spreads(getattr(selection, "selection_set", None))


def fragment_order(document: DocumentNode) -> list[FragmentDefinitionNode]:
    """The fragments, each after those it spreads (an iterative depth-first search:
    a chain of fragments must not recurse). A cycle, which validation refuses, is
    cut where it closes."""
    fragments = {
        definition.name.value: definition
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }
    order: list[FragmentDefinitionNode] = []
    seen: set[str] = set()
    for root in fragments:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(set(_spreads(fragments[root].selection_set))))]
        while stack:
            name, children = stack[-1]
            for child in children:
                if child in fragments and child not in seen:
                    seen.add(child)
                    stack.append(
                        (child, iter(set(_spreads(fragments[child].selection_set))))
                    )
                    break
            else:
                stack.pop()
                order.append(fragments[name])
    return order


def _count(value: int) -> int:
    # Fragment bombs multiply without bound; past MAX_REPORTED nothing changes.
    return min(value, MAX_REPORTED)


class _Measure:
    """Walks one operation or fragment, adding up its figures (a fragment's each
    time it is spread); each selection set keeps the response keys and fragment
    names already selected in it, its inline fragments included."""

    __slots__ = (
        "aliases",
        "directives",
        "fragments",
        "introspection_aliases",
        "schemas",
        "types",
    )

    def __init__(self, fragments: Mapping[str, _Fragment]) -> None:
        self.fragments = fragments
        self.aliases = self.directives = self.schemas = self.types = 0
        self.introspection_aliases = 0

    def shape(self, depth: int, directives: int = 0) -> Shape:
        return Shape(
            depth,
            _count(self.aliases),
            _count(self.directives + directives),
            _count(self.schemas),
            _count(self.types),
            _count(self.introspection_aliases),
        )

    def selections(
        self,
        selection_set: SelectionSetNode,
        introspection: bool,
        keys: set[str],
        spread: set[str],
    ) -> int:
        """The depth below the selection set (introspection excluded)."""
        depth = 0
        for selection in selection_set.selections:
            if selection.directives:
                self.directives += len(selection.directives)
            if isinstance(selection, FieldNode):
                name = selection.name.value
                alias = selection.alias
                key = alias.value if alias else name
                if key in keys:
                    self.aliases += 1  # merged with the earlier one, compared to it
                else:
                    keys.add(key)
                if alias is not None:
                    self.aliases += 1
                    self.introspection_aliases += introspection
                inner = selection.selection_set
                if name in INTROSPECTION_FIELDS:
                    if name == "__schema":
                        self.schemas += 1
                    else:
                        self.types += 1
                    if inner is not None:
                        self.selections(inner, True, set(), set())
                elif inner is not None:
                    below = self.selections(inner, introspection, set(), set())
                    depth = max(depth, 1 + below)
                else:
                    depth = max(depth, 1)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if name in spread:
                    self.aliases += 1
                elif fragment is not None:
                    spread.add(name)
                    self.aliases += len(keys & fragment.keys)
                    keys |= fragment.keys
                if fragment is not None:
                    shape = fragment.shape
                    depth = max(depth, shape.depth)
                    self.aliases += shape.aliases
                    self.directives += shape.directives
                    self.schemas += shape.schemas
                    self.types += shape.types
                    self.introspection_aliases += shape.introspection_aliases
            else:
                assert isinstance(selection, InlineFragmentNode)
                # Its fields merge with those of the enclosing selection set.
                inside = introspection or _introspection_type(selection.type_condition)
                below = self.selections(selection.selection_set, inside, keys, spread)
                depth = max(depth, below)
        return depth


def _introspection_type(condition: NamedTypeNode | None) -> bool:
    return condition is not None and condition.name.value.startswith("__")


def measure(document: DocumentNode) -> Shape:
    """Depth (introspection excluded), aliases (repeated fields included),
    directives and introspection selections of the document."""
    fragments: dict[str, _Fragment] = {}
    for fragment in fragment_order(document):
        walk = _Measure(fragments)
        keys: set[str] = set()
        depth = walk.selections(
            fragment.selection_set,
            _introspection_type(fragment.type_condition),
            keys,
            set(),
        )
        own = len(fragment.directives or ())
        fragments[fragment.name.value] = _Fragment(
            walk.shape(depth, own), frozenset(keys)
        )
    shape = Shape()
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        own = len(definition.directives or ()) + sum(
            len(variable.directives or ())
            for variable in definition.variable_definitions or ()
        )
        walk = _Measure(fragments)
        depth = walk.selections(definition.selection_set, False, set(), set())
        shape = shape.most(walk.shape(depth, own))
    return shape


def check_shape(shape: Shape, limits: QueryLimits) -> GraphQLError | None:
    if shape.depth > limits.max_depth:
        return limit_error(
            "QUERY_TOO_DEEP",
            f"the query is {shape.depth} levels deep; at most {limits.max_depth} "
            "are allowed",
            limit=limits.max_depth,
            actual=shape.depth,
        )
    # Introspection is outside the points: its work is bounded by these counts,
    # refused as too costly (a client should ask for less or split the query).
    if shape.schemas > limits.max_schema_selections:
        return limit_error(
            "QUERY_TOO_COSTLY",
            f"the query selects __schema {shape.schemas} times; at most "
            f"{limits.max_schema_selections} is allowed per operation (introspection "
            "is outside the points count and bounded this way instead)",
            limit=limits.max_schema_selections,
            actual=shape.schemas,
        )
    if shape.types > limits.max_type_selections:
        return limit_error(
            "QUERY_TOO_COSTLY",
            f"the query selects __type {shape.types} times; at most "
            f"{limits.max_type_selections} are allowed per operation (introspection "
            "is outside the points count and bounded this way instead)",
            limit=limits.max_type_selections,
            actual=shape.types,
        )
    if shape.introspection_aliases:
        return limit_error(
            "TOO_MANY_ALIASES",
            f"the query uses {shape.introspection_aliases} aliases inside "
            "__schema or __type; introspection takes none (each would repeat its "
            "work)",
            limit=0,
            actual=shape.introspection_aliases,
        )
    if shape.aliases > limits.max_aliases:
        return limit_error(
            "TOO_MANY_ALIASES",
            f"the query uses {shape.aliases} aliases or repeated fields (a field "
            "selected again under the same name in one selection set, a fragment "
            "spread again, a fragment's count each time it is spread); at most "
            f"{limits.max_aliases} are allowed",
            limit=limits.max_aliases,
            actual=shape.aliases,
        )
    if shape.directives > limits.max_directives:
        return limit_error(
            "TOO_MANY_DIRECTIVES",
            f"the query uses {shape.directives} directives (a fragment's count each "
            f"time it is spread); at most {limits.max_directives} are allowed",
            limit=limits.max_directives,
            actual=shape.directives,
        )
    return None


# --- cost ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Cost:
    """The cost of a selection as a function of the page size it is given:
    `fixed`, plus per item `paged` (lists that take the page size), or `estimated`
    when there is no page size (those lists at their estimates)."""

    fixed: int = 0
    paged: int = 0
    estimated: int = 0

    def at(self, page: int | None) -> int:
        return _count(
            self.fixed + (self.estimated if page is None else self.paged * page)
        )

    def __add__(self, other: _Cost) -> _Cost:
        return _Cost(
            _count(self.fixed + other.fixed),
            _count(self.paged + other.paged),
            _count(self.estimated + other.estimated),
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

    def field(self, node: FieldNode, parent: Any) -> _Cost:
        name = node.name.value
        field = getattr(parent, "fields", {}).get(name)
        if field is None or name.startswith("__"):
            return _Cost()  # __typename is a scalar; introspection is not counted
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
            return _Cost(fixed=_count(page * item))
        estimate = LIST_ESTIMATES.get(f"{parent.name}.{name}", DEFAULT_ESTIMATE)
        return _Cost(paged=item, estimated=_count(estimate * item))


def _named(kind: Any) -> GraphQLNamedType:
    while isinstance(kind, (GraphQLList, GraphQLNonNull)):
        kind = kind.of_type
    named: GraphQLNamedType = kind
    return named


def select_operation(
    document: DocumentNode, operation_name: str | None
) -> OperationDefinitionNode | None:
    """The operation that runs (None when the name matches none, or none is named
    and there are several: graphql-core then reports it)."""
    operations = [
        definition
        for definition in document.definitions
        if isinstance(definition, OperationDefinitionNode)
    ]
    if operation_name is None:
        return operations[0] if len(operations) == 1 else None
    return next(
        (op for op in operations if op.name and op.name.value == operation_name), None
    )


def operation_error(
    document: DocumentNode, operation_name: str | None
) -> GraphQLError | None:
    """Why no operation of the document would run for this operationName (the
    messages graphql-core gives at execution), or None when one would: a document
    with several operations needs a name, and the name must be one of them."""
    operations = [
        definition
        for definition in document.definitions
        if isinstance(definition, OperationDefinitionNode)
    ]
    if operation_name is not None:
        if any(op.name and op.name.value == operation_name for op in operations):
            return None
        message = f"Unknown operation named '{operation_name}'."
    elif len(operations) == 1:
        return None
    elif operations:
        message = "Must provide operation name if query contains multiple operations."
    else:
        message = "Must provide an operation."
    # The document is valid: the request's operationName is what is wrong.
    return GraphQLError(message, extensions={"code": "BAD_USER_INPUT"})


class Price(NamedTuple):
    """The points of one operation; whether they depend on variables (else they
    may be cached with the document); whether a variable that sets a page size
    does not coerce, so that execution will refuse the operation."""

    cost: int
    varies: bool
    invalid_variables: bool


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
    return Price(cost, walk.uses_variables, walk.invalid_variables)


def check_cost(cost: int, limits: QueryLimits) -> GraphQLError | None:
    if cost <= limits.max_cost:
        return None
    return limit_error(
        "QUERY_TOO_COSTLY",
        f"the query costs {cost} points; at most {limits.max_cost} are allowed "
        "(every object is a point, and a list multiplies by its `first`): ask for "
        "fewer items or split the query",
        limit=limits.max_cost,
        actual=cost,
    )
