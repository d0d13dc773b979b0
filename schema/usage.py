"""Field usage: FieldUsage and UsageQuery's fieldUsage (admins only)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from resolvers import usage
from schema.common import ctx


@strawberry.type(
    description="How many operations selected one field of the schema, and when the "
    "last one ran: the evidence to retire a field with. Counted once per operation "
    "(not per object), under the type the field was selected on; introspection "
    "and input fields are not counted."
)
class FieldUsage:
    type_name: str = strawberry.field(
        name="type", description="The object or interface type, e.g. Student."
    )
    field_name: str = strawberry.field(
        name="field",
        description='The field, e.g. name; "gradeUpdate(id:)" for a deprecated '
        "argument given.",
    )
    count: int = strawberry.field(description="Operations that selected it.")
    last_used_at: datetime | None = strawberry.field(
        description="When the last of them ran (UTC); null when none did."
    )
    deprecated: bool = strawberry.field(
        description="Whether the field (or the argument) is deprecated."
    )

    @classmethod
    def from_model(cls, row: usage.Usage) -> FieldUsage:
        return cls(
            type_name=row.type_name,
            field_name=row.field_name,
            count=row.count,
            last_used_at=row.last_used_at,
            deprecated=row.deprecated,
        )


@strawberry.type
class UsageQuery:
    @strawberry.field(
        description="Every field of the schema's object and interface types (root "
        "fields included) and every deprecated argument, with its usage by the "
        "whole cluster, unused ones at 0; sorted by type and field. Counts are "
        "kept by the UTC hour: `since` counts from the start of the hour that "
        "holds it. Admins only (others get FORBIDDEN)."
    )
    async def field_usage(
        self,
        info: strawberry.Info,
        since: Annotated[
            datetime | None,
            strawberry.argument(
                description="Only operations from the start of this time's UTC hour."
            ),
        ] = None,
    ) -> list[FieldUsage]:
        rows = await usage.list_field_usage(ctx(info), since=since)
        return [FieldUsage.from_model(row) for row in rows]
