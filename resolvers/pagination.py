"""Relay-style pages: opaque keyset cursors, bounds on `first`, lazy total counts."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from resolvers.errors import BadUserInput

T = TypeVar("T")
MAX_FIRST = 100


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    cursors: list[str]
    has_next: bool
    count: Callable[[], Awaitable[int]]

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


def decode_cursor(cursor: str, kind: str, arity: int) -> list[Any]:
    """The parts of a cursor made by `encode_cursor(kind, ...)`; anything else is refused."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        parts = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        parts = None
    if not isinstance(parts, list) or len(parts) != arity + 1 or parts[0] != kind:
        raise BadUserInput(f"invalid cursor {cursor!r} for this list", argument="after")
    return parts[1:]
