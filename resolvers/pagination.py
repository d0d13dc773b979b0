"""Relay-style pages: opaque keyset cursors, bounds on `first`, lazy total counts."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from db.validation import to_naive_utc
from resolvers.errors import BadUserInput

T = TypeVar("T")
MAX_FIRST = 100
INT_LIMIT = 2**31  # the int columns hold -2**31 .. 2**31 - 1


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    cursors: list[str]
    has_next: bool
    count: Callable[[], Awaitable[int]]
    # Pages are read forwards: items come before this one when it was read `after`
    # a cursor (Relay's hasPreviousPage, which may say so when it is cheap).
    has_previous: bool = False

    @property
    def start_cursor(self) -> str | None:
        return self.cursors[0] if self.cursors else None

    @property
    def end_cursor(self) -> str | None:
        return self.cursors[-1] if self.cursors else None


def check_first(first: int) -> int:
    if not 1 <= first <= MAX_FIRST:
        raise BadUserInput(
            f"first must be between 1 and {MAX_FIRST}, got {first}",
            argument="first",
        )
    return first


def encode_cursor(kind: str, *parts: Any) -> str:
    raw = json.dumps([kind, *parts], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str, *readers: Callable[[Any], Any]) -> list[Any]:
    """The parts of a cursor made by `encode_cursor(kind, ...)`, one reader each
    (`id_part`, `int_part`, `text_part`, `time_part`); anything else is refused, so
    that a forged part never reaches the driver as a value of the wrong type."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        parts = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        parts = None
    if (
        not isinstance(parts, list)
        or len(parts) != len(readers) + 1
        or parts[0] != kind
    ):
        raise BadUserInput(f"invalid cursor {cursor!r} for this list", argument="after")
    try:
        return [read(part) for read, part in zip(readers, parts[1:], strict=True)]
    except (TypeError, ValueError, OverflowError):
        raise BadUserInput("invalid cursor", argument="after") from None


def int_part(value: Any) -> int:
    """A whole number that fits the int columns."""
    if type(value) is not int or not -INT_LIMIT <= value < INT_LIMIT:
        raise ValueError(value)
    return value


def id_part(value: Any) -> int:
    """A row id: ids count from 1 (a cursor only ever holds a stored row's id)."""
    if int_part(value) < 1:
        raise ValueError(value)
    return value


def text_part(value: Any) -> str:
    if type(value) is not str:
        raise TypeError(value)
    return value


def time_part(value: Any) -> datetime:
    """An ISO 8601 time, as naive UTC like every stored time."""
    return to_naive_utc(datetime.fromisoformat(text_part(value)))


def time_id_cursor(kind: str, at: datetime, row_id: int) -> str:
    """The cursor of a row in a list ordered by a time, then the row id."""
    return encode_cursor(kind, at.isoformat(), row_id)


def time_id_key(after: str | None, kind: str) -> tuple[datetime, int] | None:
    """The (time, id) position a `time_id_cursor` stands for; None without one."""
    if after is None:
        return None
    at, row_id = decode_cursor(after, kind, time_part, id_part)
    return at, row_id
