"""Scalars: DateTime as ISO 8601 in UTC with a Z."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from strawberry.types.scalar import ScalarDefinition


def serialize_datetime(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return (
        value.isoformat(timespec="seconds" if not value.microsecond else "microseconds")
        + "Z"
    )


def parse_datetime(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("DateTime must be an ISO 8601 string")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 date-time") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


DATETIME = ScalarDefinition(
    name="DateTime",
    description="A UTC date-time in ISO 8601, e.g. 2025-09-01T08:30:00Z; input without "
    "an offset is read as UTC.",
    specified_by_url=None,
    serialize=serialize_datetime,
    parse_value=parse_datetime,
    parse_literal=None,
)

SCALARS: dict[object, ScalarDefinition] = {}  # filled below, used by build_schema


SCALARS.update({datetime: DATETIME})
