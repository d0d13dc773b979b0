"""Expected write failures for schema/errors.py: domain exceptions, input codes."""

from __future__ import annotations

from db.errors import (
    Conflict,
    DomainError,
    IdempotencyKeyReused,
    InvalidInput,
    InvalidRows,
    NotFound,
    RowProblem,
)
from db.validation import InputErrorCode

__all__ = [
    "Conflict",
    "DomainError",
    "IdempotencyKeyReused",
    "InputErrorCode",
    "InvalidInput",
    "InvalidRows",
    "NotFound",
    "RowProblem",
]
