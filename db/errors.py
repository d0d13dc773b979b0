"""Domain exceptions raised by writes; schema/errors.py maps them to result types."""

from __future__ import annotations

from dataclasses import dataclass

from db.validation import FieldProblem, InputErrorCode


class DomainError(Exception):
    """Base of the expected failures a mutation reports as a typed result."""


class NotFound(DomainError):
    def __init__(self, what: str, key: str) -> None:
        super().__init__(f"{what} {key!r} does not exist")
        self.what = what
        self.key = key


class Conflict(DomainError):
    """A unique field is taken, or a delete is refused while rows depend on it."""

    def __init__(self, field: str, code: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.code = code


class InvalidInput(DomainError):
    def __init__(self, problem: FieldProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


class InvalidRows(DomainError):
    def __init__(self, rows: list[RowProblem]) -> None:
        super().__init__(f"{len(rows)} invalid row(s); nothing was written")
        self.rows = rows


class IdempotencyKeyReused(DomainError):
    def __init__(self, key: str) -> None:
        super().__init__(
            f"idempotency key {key!r} was already used for a different payload"
        )
        self.key = key


@dataclass(frozen=True, slots=True)
class RowProblem:
    """One problem with one row of a batch or a CSV file: `index` is the 0-based
    data row (None for a CSV header or the file as a whole), `line` the 1-based line
    in the file (None outside imports)."""

    index: int | None
    line: int | None
    field: str
    code: InputErrorCode
    message: str

    def describe(self, source: str) -> str:
        """`grades.csv line 17: score: OUT_OF_RANGE: score must be between 0 and 100`"""
        return f"{source} line {self.line}: {self.field}: {self.code.value}: {self.message}"
