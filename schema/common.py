"""Shared schema pieces: the context accessor, argument aliases, PageInfo, helpers."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable
from contextlib import aclosing
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, TypeVar

import strawberry
from strawberry.types import Info

from resolvers.context import Context
from resolvers.pagination import Page

T = TypeVar("T")
R = TypeVar("R")

First = Annotated[int, strawberry.argument(description="Page size, 1 to 100.")]
After = Annotated[
    str | None, strawberry.argument(description="The endCursor of the previous page.")
]
GradeLevel = Annotated[
    int | None, strawberry.argument(description="Only this grade level.")
]
Subject = Annotated[str | None, strawberry.argument(description="Only this subject.")]
RecordedSince = Annotated[
    datetime | None, strawberry.argument(description="Recorded at or after.")
]
RecordedBefore = Annotated[
    datetime | None, strawberry.argument(description="Recorded before.")
]


def ctx(info: Info) -> Context:
    context: Context = info.context
    return context


@strawberry.enum(description="Sort direction.")
class OrderDirection(Enum):
    ASC = "ASC"
    DESC = "DESC"


@strawberry.interface(
    description="An object with a global id (Relay's Global Object Identification): "
    "`node(id:)` and `nodes(ids:)` read it back."
)
class Node:
    id: strawberry.ID = strawberry.field(
        description="The object's global id: opaque, stable, unique across types."
    )


@strawberry.type(description="Where a page starts and ends, and whether more follow.")
class PageInfo:
    has_next_page: bool = strawberry.field(description="True when more items follow.")
    has_previous_page: bool = strawberry.field(
        description="True when items come before this page: when it was read with "
        "`after` (pages are read forwards only)."
    )
    start_cursor: str | None = strawberry.field(
        description="The first item's cursor; null on an empty page."
    )
    end_cursor: str | None = strawberry.field(
        description="Pass as `after` to read the next page; null on an empty page."
    )

    @classmethod
    def of(cls, page: Page[Any]) -> PageInfo:
        return cls(
            has_next_page=page.has_next,
            has_previous_page=page.has_previous,
            start_cursor=page.start_cursor,
            end_cursor=page.end_cursor,
        )


def edges(page: Page[R], edge: Callable[..., T], node: Callable[[R], Any]) -> list[T]:
    """A connection's edges: `edge(cursor=..., node=node(row))` for each row."""
    return [
        edge(cursor=cursor, node=node(row))
        for row, cursor in zip(page.items, page.cursors, strict=True)
    ]


def set_fields(input_obj: object, names: Iterable[str]) -> dict[str, Any]:
    """The fields a client set on an update input (named as the columns)."""
    return {
        name: getattr(input_obj, name)
        for name in names
        if getattr(input_obj, name) is not strawberry.UNSET
    }


async def mapped(
    source: AsyncGenerator[T, None], convert: Callable[[T], R]
) -> AsyncGenerator[R, None]:
    """A resolver's stream as schema types; closing it closes the source."""
    async with aclosing(source) as items:
        async for item in items:
            yield convert(item)
