"""A faster executor for lists of plain objects, with the same results and errors.

graphql-core completes every field of every list item through the general machinery
(paths, resolve info, middleware, awaitable checks): ~4,400 fields of a 100-student
page cost most of a request. Many of those fields are Strawberry "basic" fields (no
resolver, no permissions, no extensions) returning scalars. For an object whose
whole selection is such fields, the executor builds the result dict directly from
attribute reads. Anything unusual (a null for a non-null field, a value the scalar
refuses, a resolver, a deferred fragment, a middleware that wants to see every
field) takes the general path, which then reports exactly what it always did.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import Any

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

DEFINITION = "strawberry-definition"
# A middleware (schema extension with a `resolve` hook) may opt out of seeing basic
# attribute fields by setting this attribute; otherwise its presence disables the
# fast path so that it sees every field as before.
SKIPS_BASIC_FIELDS = "skips_basic_fields"


class Fallback(Exception):
    """The fast path cannot reproduce this value: take the general path."""


Completer = Callable[[Any], Any]
_NO_PLAN: Any = object()


def _int(value: Any) -> Any:
    if type(value) is int and -(2**31) <= value < 2**31:
        return value
    return GraphQLInt.serialize(value)


def _float(value: Any) -> Any:
    if type(value) is float and math.isfinite(value):
        return value
    return GraphQLFloat.serialize(value)


def _string(value: Any) -> Any:
    return value if type(value) is str else GraphQLString.serialize(value)


def _id(value: Any) -> Any:
    if type(value) is str:
        return value
    if type(value) is int:
        return str(value)
    return GraphQLID.serialize(value)


def _bool(value: Any) -> Any:
    return value if type(value) is bool else GraphQLBoolean.serialize(value)


_BUILTIN_COERCERS: dict[GraphQLLeafType, Callable[[Any], Any]] = {
    GraphQLInt: _int,
    GraphQLFloat: _float,
    GraphQLString: _string,
    GraphQLID: _id,
    GraphQLBoolean: _bool,
}


def _leaf_coercer(leaf: GraphQLLeafType) -> Callable[[Any], Any]:
    """The built-in scalars' common cases inline; anything else via the type."""
    builtin = _BUILTIN_COERCERS.get(leaf)
    if builtin is not None:
        return builtin
    coerce = leaf.coerce_output_value

    def coerce_leaf(value: Any) -> Any:
        result = coerce(value)
        if result is None:
            raise Fallback
        return result

    return coerce_leaf


class FastExecutor(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor with a direct path for objects of basic scalar fields."""

    def _fast_allowed(self) -> bool:
        allowed = getattr(self, "_fast_allowed_cache", None)
        if allowed is None:
            manager = self.middleware_manager
            middlewares = getattr(manager, "middlewares", ()) if manager else ()
            allowed = all(getattr(m, SKIPS_BASIC_FIELDS, False) for m in middlewares)
            self._fast_allowed_cache = allowed
        return allowed

    def _plan(self, item_type: GraphQLOutputType, field_details_list: Any) -> Completer | None:
        plans: dict[Any, Any] = self.__dict__.setdefault("_fast_plans", {})
        key = (item_type, id(field_details_list))
        cached = plans.get(key)
        if cached is None:
            plan = self._build_plan(item_type, field_details_list) if self._fast_allowed() else None
            plans[key] = (field_details_list, plan if plan is not None else _NO_PLAN)
            return plan
        plan = cached[1]
        return None if plan is _NO_PLAN else plan

    def _build_plan(self, item_type: GraphQLOutputType, field_details_list: Any) -> Completer | None:
        non_null = is_non_null_type(item_type)
        object_type = item_type.of_type if isinstance(item_type, GraphQLNonNull) else item_type
        if not is_object_type(object_type) or object_type.is_type_of is not None:
            return None
        assert isinstance(object_type, GraphQLObjectType)
        grouped, defer_usages, _ = self.collect_subfields(object_type, field_details_list)
        if defer_usages:
            return None
        steps: list[tuple[str, Callable[[Any], Any] | None, Callable[[Any], Any], bool]] = []
        for response_name, details in grouped.items():
            node = details[0].node
            name = node.name.value
            if name == "__typename":
                typename = object_type.name
                steps.append((response_name, None, lambda _v, t=typename: t, False))
                continue
            field_def = self.schema.get_field(object_type, name)
            if field_def is None or node.arguments or field_def.args:
                return None
            definition = field_def.extensions.get(DEFINITION)
            if (
                definition is None
                or not getattr(field_def.resolve, "_is_default", False)
                or definition.default_resolver is not getattr
            ):
                return None
            field_type = field_def.type
            required = is_non_null_type(field_type)
            inner = field_type.of_type if isinstance(field_type, GraphQLNonNull) else field_type
            if is_leaf_type(inner):
                complete = _leaf_coercer(inner)  # type: ignore[arg-type]
            else:
                nested = self._plan(inner, details)
                if nested is None:
                    return None
                complete = nested
            steps.append((response_name, attrgetter(definition.python_name), complete, required))

        def complete_object(value: Any) -> Any:
            if value is None:
                if non_null:
                    raise Fallback
                return None
            result: dict[str, Any] = {}
            for response_name, get, complete, required in steps:
                if get is None:
                    result[response_name] = complete(value)
                    continue
                field_value = get(value)
                if field_value is None:
                    if required:
                        raise Fallback
                    result[response_name] = None
                else:
                    result[response_name] = complete(field_value)
            return result

        return complete_object

    def complete_iterable_value(
        self,
        item_type: GraphQLOutputType,
        field_details_list: Any,
        info: Any,
        path: Any,
        items: Iterable[Any],
        position_context: Any,
    ) -> Any:
        if isinstance(items, (list, tuple)) and not self.get_stream_usage(field_details_list, path):
            plan = self._plan(item_type, field_details_list)
            if plan is not None:
                try:
                    return [plan(item) for item in items]
                except Exception:  # noqa: BLE001 - the general path reports it properly
                    pass
        return super().complete_iterable_value(
            item_type, field_details_list, info, path, items, position_context
        )
