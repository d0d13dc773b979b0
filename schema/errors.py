"""Error types of mutation results, and the one place that maps domain exceptions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import strawberry

from resolvers.failures import (
    Conflict,
    DomainError,
    IdempotencyKeyReused,
    InputErrorCode,
    InvalidInput,
    InvalidRows,
    NotFound,
    RowProblem,
)

T = TypeVar("T")

# The resolvers' enum is the GraphQL enum itself: no copy to keep in step.
strawberry.enum(InputErrorCode, description="Why an input field or row was refused.")


@strawberry.interface(description="An expected failure of a mutation.")
class Error:
    message: str = strawberry.field(description="What went wrong, for people.")


@strawberry.type(description="The thing the mutation refers to does not exist.")
class NotFoundError(Error):
    pass


@strawberry.type(description="A unique value is taken, or rows depend on the target.")
class ConflictError(Error):
    field: str = strawberry.field(description="The camelCase input name.")
    code: InputErrorCode = strawberry.field(description="DUPLICATE or HAS_GRADES.")


@strawberry.type(description="An input field is invalid; nothing was written.")
class InvalidInputError(Error):
    field: str = strawberry.field(description="The camelCase input name.")
    code: InputErrorCode = strawberry.field(description="Why it was refused.")


@strawberry.type(description="One invalid row of a batch or import.")
class RowError:
    index: int = strawberry.field(
        description="0-based position in the input list; -1 for the batch as a whole."
    )
    line: int | None = strawberry.field(
        description="The CSV line number (header is line 1); null outside imports."
    )
    field: str = strawberry.field(description="The camelCase input name.")
    code: InputErrorCode = strawberry.field(description="Why it was refused.")
    message: str = strawberry.field(description="What went wrong, for people.")


@strawberry.type(
    description="Some rows are invalid; every one is listed and nothing was written."
)
class InvalidRowsError(Error):
    rows: list[RowError] = strawberry.field(description="Every invalid row.")


@strawberry.type(
    description="The idempotency key was already used with a different payload."
)
class IdempotencyKeyReusedError(Error):
    pass


def row_error(row: RowProblem) -> RowError:
    return RowError(
        index=row.index if row.index is not None else -1,
        line=row.line,
        field=row.field,
        code=row.code,
        message=row.message,
    )


def error_result(exc: DomainError) -> Error:
    """The result type for an expected failure."""
    if isinstance(exc, NotFound):
        return NotFoundError(message=str(exc))
    if isinstance(exc, Conflict):
        return ConflictError(
            message=str(exc), field=exc.field, code=InputErrorCode(exc.code)
        )
    if isinstance(exc, InvalidInput):
        problem = exc.problem
        return InvalidInputError(
            message=problem.message, field=problem.field, code=problem.code
        )
    if isinstance(exc, InvalidRows):
        return InvalidRowsError(
            message=str(exc),
            rows=[row_error(row) for row in exc.rows],
        )
    if isinstance(exc, IdempotencyKeyReused):
        return IdempotencyKeyReusedError(message=str(exc))
    raise TypeError(f"no result type for {type(exc).__name__}") from exc


async def attempt(call: Awaitable[T], success: Callable[[T], Any]) -> Any:
    """Run a resolver; an expected failure becomes its error type in the union."""
    try:
        return success(await call)
    except DomainError as exc:
        return error_result(exc)
