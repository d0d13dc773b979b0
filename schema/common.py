"""Shared schema pieces: PageInfo, OrderDirection and the context accessor."""

from __future__ import annotations

from enum import Enum

import strawberry
from strawberry.types import Info

from resolvers.context import Context


def ctx(info: Info) -> Context:
    context: Context = info.context
    return context


@strawberry.enum(description="Sort direction.")
class OrderDirection(Enum):
    ASC = "ASC"
    DESC = "DESC"


@strawberry.type(description="Where a page ends and whether more follow.")
class PageInfo:
    has_next_page: bool = strawberry.field(description="True when more items follow.")
    end_cursor: str | None = strawberry.field(
        description="Pass as `after` to read the next page; null on an empty page."
    )
