"""Global object identification (Relay): `node(id:)` and `nodes(ids:)`."""

from __future__ import annotations

from typing import Annotated, Any

import strawberry

from db.records import StudentRecord
from resolvers import nodes
from schema.common import Node, ctx
from schema.grades import Grade
from schema.students import Student


def _typed(value: Any) -> Any:
    """A record as its schema type (the Node interface tells them apart by type);
    None and a refusal (an error at its position) as they are."""
    if value is None or isinstance(value, Exception):
        return value
    if isinstance(value, StudentRecord):
        return Student.from_model(value)
    return Grade.from_model(value)


@strawberry.type
class NodeQuery:
    @strawberry.field(
        description="The student or grade a global id names; null when there is no "
        "such object. The same checks as `student` and `grades`: FORBIDDEN (and "
        "null) for an object the viewer may not read (for a student: anything but "
        "themselves and their grades, whether or not it exists). An id that is not "
        "a global id is BAD_USER_INPUT."
    )
    async def node(
        self,
        info: strawberry.Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="A global id.")],
    ) -> Node | None:
        (value,) = await nodes.nodes(ctx(info), [str(id)], argument="id")
        if isinstance(value, Exception):
            raise value
        return _typed(value)

    @strawberry.field(
        description="What each global id names, in the order given (at most 100): "
        "null where there is no such object; null with a FORBIDDEN error at that "
        "position where the viewer may not read it."
    )
    async def nodes(
        self,
        info: strawberry.Info,
        ids: Annotated[
            list[strawberry.ID], strawberry.argument(description="Global ids.")
        ],
    ) -> list[Node | None]:
        values = await nodes.nodes(ctx(info), [str(i) for i in ids])
        return [_typed(value) for value in values]
