"""A faster executor for lists of plain objects, with the same results and errors.

graphql-core completes every field of every list item through the general machinery
(paths, resolve info, middleware, awaitable checks): ~4,400 fields of a 100-student
page cost most of a request. Many of those fields are Strawberry "basic" fields (no
resolver, no permissions, no extensions) returning scalars. For an object whose
whole selection is such fields, the executor builds the result dict directly from
attribute reads. Anything unusual (a null for a non-null field, a value the scalar
refuses, a missing attribute, a resolver, a deferred fragment, a middleware that
wants to see every field) raises Fallback and takes the general path, which then
reports exactly what it always did. Any other exception is a bug of the fast path
and is not hidden.

Each schema gets its own executor class (`executor_class`), whose PlanCache holds
the compiled plans of that schema only.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from graphql import (
    GraphQLBoolean,
    GraphQLFloat,
    GraphQLID,
    GraphQLInt,
    GraphQLLeafType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLString,
    is_leaf_type,
    is_non_null_type,
    is_object_type,
)
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from monitoring.timing import is_default_resolver

DEFINITION = "strawberry-definition"


class Fallback(Exception):
    """The fast path cannot reproduce this value: take the general path."""


Completer = Callable[[Any], Any]
_NO_PLAN: Any = object()


class PlanCache:
    """One schema's compiled plans: by shape (equal shapes share one compiled Plan
    across requests and subscription events, since compiling costs more than
    using), and by the field nodes of a cached document (one lookup per request or
    event). Each is emptied when it reaches `maxsize`."""

    def __init__(self, maxsize: int = 2000) -> None:
        self.maxsize = maxsize
        self.compiled: dict[tuple[Any, ...], Plan] = {}
        self.by_nodes: dict[Any, tuple[Any, Any]] = {}

    def compiled_plan(
        self,
        key: tuple[Any, ...],
        entries: list[tuple[str, str]],
        namespace: dict[str, Any],
        nullable_items: bool,
    ) -> Plan:
        plan = self.compiled.get(key)
        if plan is None:
            if len(self.compiled) >= self.maxsize:
                self.compiled.clear()
            plan = self.compiled[key] = Plan(entries, namespace, nullable_items)
        return plan

    def remember(self, key: Any, nodes: Any, plan: Plan | None) -> None:
        if len(self.by_nodes) >= self.maxsize:
            self.by_nodes.clear()
        # The nodes stay referenced, so that their ids stay unique.
        self.by_nodes[key] = (nodes, plan or _NO_PLAN)


# Inline checks for the built-in scalars' common cases; anything else calls the type.
INLINE_CHECKS: dict[GraphQLLeafType, str] = {
    GraphQLString: "x.__class__ is str",
    GraphQLID: "x.__class__ is str",
    GraphQLFloat: "x.__class__ is float and x - x == 0.0",
    GraphQLInt: "x.__class__ is int and -2147483648 <= x <= 2147483647",
    GraphQLBoolean: "x.__class__ is bool",
}


def leaf_completer(leaf: GraphQLLeafType, required: bool) -> Callable[[Any], Any]:
    coerce = leaf.coerce_output_value

    def complete_leaf(value: Any) -> Any:
        if value is None:
            if required:
                raise Fallback
            return None
        try:
            result = coerce(value)
        except Exception:  # the scalar refuses the value: the general path says so
            raise Fallback from None
        if result is None:
            raise Fallback
        return result

    return complete_leaf


def _nested_completer(plan: Plan, required: bool) -> Callable[[Any], Any]:
    one = plan.one

    def complete_nested(value: Any) -> Any:
        if value is None:
            if required:
                raise Fallback
            return None
        return one(value)

    return complete_nested


class Plan:
    """Generated code that completes one object, or a list of them, of a selection.

    The source is built from the schema's Python attribute names and the document's
    response names (GraphQL names, so identifiers); values never reach the source."""

    __slots__ = ("many", "one")

    def __init__(
        self,
        entries: list[tuple[str, str]],
        namespace: dict[str, Any],
        nullable_items: bool,
    ) -> None:
        body = ", ".join(f"{name!r}: {expression}" for name, expression in entries)
        item = (
            f"(None if v is None else {{{body}}})" if nullable_items else f"{{{body}}}"
        )
        # A missing attribute is an error the general path reports.
        source = (
            "def one(v):\n"
            "    try:\n"
            f"        return {item}\n"
            "    except AttributeError:\n"
            "        raise Fallback from None\n"
            "def many(items):\n"
            "    try:\n"
            f"        return [{item} for v in items]\n"
            "    except AttributeError:\n"
            "        raise Fallback from None\n"
        )
        namespace["Fallback"] = Fallback
        exec(compile(source, "<gradepulse fast completion>", "exec"), namespace)
        self.one: Completer = namespace["one"]
        self.many: Callable[[Iterable[Any]], list[Any]] = namespace["many"]


class FastExecutor(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor with a direct path for objects of basic scalar fields.
    Use `executor_class(...)`: its class attributes belong to one schema."""

    plans: ClassVar[PlanCache]
    # Schema extensions whose `resolve` hook ignores basic attribute fields: the
    # fast path, which completes those without calling resolve, stays on with them.
    # Any other extension with a `resolve` hook turns it off, so that it sees every
    # field as before.
    resolver_only: ClassVar[tuple[type, ...]] = ()

    def _fast_allowed(self) -> bool:
        allowed: bool | None = self.__dict__.get("_fast_path_allowed")
        if allowed is None:
            manager = self.middleware_manager
            middlewares = getattr(manager, "middlewares", ()) if manager else ()
            allowed = all(isinstance(m, self.resolver_only) for m in middlewares)
            self.__dict__["_fast_path_allowed"] = allowed
        return allowed

    def _plan(
        self, item_type: GraphQLOutputType, field_details_list: Any
    ) -> Plan | None:
        plans: dict[Any, Any] = self.__dict__.setdefault("_fast_plans", {})
        key = (item_type, id(field_details_list))
        cached = plans.get(key)
        if cached is None:
            shared = self._shared_key(item_type, field_details_list)
            hit = self.plans.by_nodes.get(shared) if shared is not None else None
            if hit is not None:
                plan = None if hit[1] is _NO_PLAN else hit[1]
            else:
                plan = (
                    self._build_plan(item_type, field_details_list)
                    if self._fast_allowed()
                    else None
                )
                if shared is not None:
                    self.plans.remember(shared, field_details_list, plan)
            # Like collect_subfields, keep the list alive so that its id stays unique.
            plans[key] = (field_details_list, plan if plan is not None else _NO_PLAN)
            return plan
        plan = cached[1]
        return None if plan is _NO_PLAN else plan

    def _shared_key(self, item_type: GraphQLOutputType, details: Any) -> Any:
        """A key valid across executors (every request and subscription event of the
        same cached document), or None when directives could make the selection
        depend on variables."""
        directive_free = self.__dict__.get("_directive_free")
        if directive_free is None:
            loc = self.operation.loc
            body = loc.source.body if loc is not None else "@"
            directive_free = self.__dict__["_directive_free"] = "@" not in body
        if not directive_free:
            return None
        return (item_type, self._fast_allowed(), tuple(id(d.node) for d in details))

    def _build_plan(
        self, item_type: GraphQLOutputType, field_details_list: Any
    ) -> Plan | None:
        nullable_items = not is_non_null_type(item_type)
        object_type = (
            item_type.of_type if isinstance(item_type, GraphQLNonNull) else item_type
        )
        if not is_object_type(object_type) or object_type.is_type_of is not None:
            return None
        assert isinstance(object_type, GraphQLObjectType)
        grouped, defer_usages, _ = self.collect_subfields(
            object_type, field_details_list
        )
        if defer_usages:
            return None
        entries: list[tuple[str, str]] = []
        namespace: dict[str, Any] = {}
        # What the generated code depends on: equal shapes share one compiled Plan.
        shape: list[Any] = [nullable_items]
        for index, (response_name, details) in enumerate(grouped.items()):
            node = details[0].node
            name = node.name.value
            if not response_name.isidentifier():
                return None
            if name == "__typename":
                entries.append((response_name, repr(object_type.name)))
                shape.append((response_name, "__typename", object_type.name))
                continue
            field_def = self.schema.get_field(object_type, name)
            if field_def is None or node.arguments or field_def.args:
                return None
            definition = field_def.extensions.get(DEFINITION)
            if (
                definition is None
                or not is_default_resolver(field_def)
                or definition.default_resolver is not getattr
                or not definition.python_name.isidentifier()
                or keyword.iskeyword(definition.python_name)
            ):
                return None
            field_type = field_def.type
            required = is_non_null_type(field_type)
            inner = (
                field_type.of_type
                if isinstance(field_type, GraphQLNonNull)
                else field_type
            )
            attribute = f"v.{definition.python_name}"
            helper = f"c{index}"
            if is_leaf_type(inner):
                shape.append((response_name, definition.python_name, inner, required))
                namespace[helper] = leaf_completer(inner, required)
                check = INLINE_CHECKS.get(inner)
                expression = (
                    f"(x if ({check.replace('x', '(x := ' + attribute + ')', 1)}) "
                    f"else {helper}(x))"
                    if check
                    else f"{helper}({attribute})"
                )
            else:
                nested = self._plan(inner, details)
                if nested is None:
                    return None
                shape.append((response_name, definition.python_name, nested, required))
                namespace[helper] = _nested_completer(nested, required)
                expression = f"{helper}({attribute})"
            entries.append((response_name, expression))
        return self.plans.compiled_plan(
            tuple(shape), entries, namespace, nullable_items
        )

    def complete_iterable_value(
        self,
        item_type: GraphQLOutputType,
        field_details_list: Any,
        info: Any,
        path: Any,
        items: Iterable[Any],
        position_context: Any,
    ) -> Any:
        if isinstance(items, (list, tuple)) and not self.get_stream_usage(
            field_details_list, path
        ):
            plan = self._plan(item_type, field_details_list)
            if plan is not None:
                try:
                    return plan.many(items)
                except Fallback:
                    pass
        return super().complete_iterable_value(
            item_type, field_details_list, info, path, items, position_context
        )

    def complete_object_value(
        self,
        return_type: GraphQLObjectType,
        field_details_list: Any,
        info: Any,
        path: Any,
        result: Any,
        position_context: Any,
    ) -> Any:
        # The same direct path for a single object (a subscription event's snapshot,
        # a nested object of basic fields); anything unusual goes the general way.
        if return_type.is_type_of is None:
            plan = self._plan(return_type, field_details_list)
            if plan is not None:
                try:
                    return plan.one(result)
                except Fallback:
                    pass
        return super().complete_object_value(
            return_type, field_details_list, info, path, result, position_context
        )


def executor_class(resolver_only: tuple[type, ...] = ()) -> type[FastExecutor]:
    """A FastExecutor class for one schema, with plan caches of its own."""
    return type(
        "FastExecutor",
        (FastExecutor,),
        {"plans": PlanCache(), "resolver_only": resolver_only},
    )
