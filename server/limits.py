"""Document limits: size, nesting, tokens, depth, aliases, directives (before execution)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSyntaxError,
    InlineFragmentNode,
    NamedTypeNode,
    NameNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    Source,
    TokenKind,
)
from graphql.language import Lexer

from resolvers.errors import ErrorCode


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


# Introspection is bounded by graphql-core's MaxIntrospectionDepthRule instead.
INTROSPECTION_FIELDS = frozenset({"__schema", "__type"})
# Counts above this are reported as this (JSON numbers; a fragment bomb's counts
# have no useful size).
MAX_REPORTED = 2**53 - 1


def limit_error(
    code: ErrorCode, message: str, *, limit: Any, actual: Any, **extensions: Any
) -> GraphQLError:
    """A refused document: `extensions` = {code, limit, actual, ...}."""
    if isinstance(actual, int):
        actual = min(actual, MAX_REPORTED)
    return GraphQLError(
        message,
        extensions={"code": code, "limit": limit, "actual": actual, **extensions},
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
        ErrorCode.QUERY_TOO_DEEP,
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
            ErrorCode.DOCUMENT_TOO_LARGE,
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
                ErrorCode.TOO_MANY_TOKENS,
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


def capped(value: int) -> int:
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
            capped(self.aliases),
            capped(self.directives + directives),
            capped(self.schemas),
            capped(self.types),
            capped(self.introspection_aliases),
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
            ErrorCode.QUERY_TOO_DEEP,
            f"the query is {shape.depth} levels deep; at most {limits.max_depth} "
            "are allowed",
            limit=limits.max_depth,
            actual=shape.depth,
        )
    # Introspection is outside the points: its work is bounded by these counts,
    # refused as too costly (a client should ask for less or split the query).
    if shape.schemas > limits.max_schema_selections:
        return limit_error(
            ErrorCode.QUERY_TOO_COSTLY,
            f"the query selects __schema {shape.schemas} times; at most "
            f"{limits.max_schema_selections} is allowed per operation (introspection "
            "is outside the points count and bounded this way instead)",
            limit=limits.max_schema_selections,
            actual=shape.schemas,
        )
    if shape.types > limits.max_type_selections:
        return limit_error(
            ErrorCode.QUERY_TOO_COSTLY,
            f"the query selects __type {shape.types} times; at most "
            f"{limits.max_type_selections} are allowed per operation (introspection "
            "is outside the points count and bounded this way instead)",
            limit=limits.max_type_selections,
            actual=shape.types,
        )
    if shape.introspection_aliases:
        return limit_error(
            ErrorCode.TOO_MANY_ALIASES,
            f"the query uses {shape.introspection_aliases} aliases inside "
            "__schema or __type; introspection takes none (each would repeat its "
            "work)",
            limit=0,
            actual=shape.introspection_aliases,
        )
    if shape.aliases > limits.max_aliases:
        return limit_error(
            ErrorCode.TOO_MANY_ALIASES,
            f"the query uses {shape.aliases} aliases or repeated fields (a field "
            "selected again under the same name in one selection set, a fragment "
            "spread again, a fragment's count each time it is spread); at most "
            f"{limits.max_aliases} are allowed",
            limit=limits.max_aliases,
            actual=shape.aliases,
        )
    if shape.directives > limits.max_directives:
        return limit_error(
            ErrorCode.TOO_MANY_DIRECTIVES,
            f"the query uses {shape.directives} directives (a fragment's count each "
            f"time it is spread); at most {limits.max_directives} are allowed",
            limit=limits.max_directives,
            actual=shape.directives,
        )
    return None
