"""Cursors: what encode_cursor makes, decode_cursor reads back through one reader per
part, and anything forged is BAD_USER_INPUT before it reaches the driver."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from resolvers.errors import BadUserInput, ErrorCode
from resolvers.pagination import (
    decode_cursor,
    encode_cursor,
    id_part,
    int_part,
    text_part,
    time_id_cursor,
    time_id_key,
    time_part,
)

RECORDED_AT = datetime(2025, 10, 1, 9, 0)


def test_a_grade_cursor_reads_back_what_it_was_made_of():
    cursor = encode_cursor("g", RECORDED_AT.isoformat(), 17)

    assert decode_cursor(cursor, "g", time_part, id_part) == [RECORDED_AT, 17]


def test_a_time_and_id_cursor_gives_back_its_position():
    cursor = time_id_cursor("a", RECORDED_AT, 42)

    assert cursor == encode_cursor("a", "2025-10-01T09:00:00", 42)
    assert time_id_key(cursor, "a") == (RECORDED_AT, 42)
    assert time_id_key(None, "a") is None


@pytest.mark.parametrize("row_id", [1, 2**31 - 1])
def test_row_ids_count_from_one_to_the_int_column_limit(row_id):
    cursor = encode_cursor("a", RECORDED_AT.isoformat(), row_id)

    assert decode_cursor(cursor, "a", time_part, id_part)[1] == row_id


@pytest.mark.parametrize("row_id", [0, -1, 2**31, True, 1.0, "1", None])
def test_a_row_id_outside_the_stored_ids_is_refused(row_id: Any):
    cursor = encode_cursor("g", RECORDED_AT.isoformat(), row_id)

    with pytest.raises(BadUserInput) as refused:
        decode_cursor(cursor, "g", time_part, id_part)

    assert str(refused.value) == "invalid cursor"
    assert refused.value.code is ErrorCode.BAD_USER_INPUT
    assert refused.value.extensions == {"argument": "after"}


@pytest.mark.parametrize("value", [-(2**31), 0, 2**31 - 1])
def test_whole_numbers_span_the_int_column(value):
    assert decode_cursor(encode_cursor("s", value), "s", int_part) == [value]


@pytest.mark.parametrize("value", [-(2**31) - 1, 2**31, False, "7"])
def test_whole_numbers_beyond_the_int_column_are_refused(value: Any):
    with pytest.raises(BadUserInput):
        decode_cursor(encode_cursor("s", value), "s", int_part)


def test_a_time_with_an_offset_reads_as_naive_utc():
    cursor = encode_cursor("a", "2025-10-01T11:00:00+02:00", 3)

    assert decode_cursor(cursor, "a", time_part, id_part) == [RECORDED_AT, 3]


@pytest.mark.parametrize(
    "value",
    # the last two are ISO 8601 times that have no UTC time in range
    ["yesterday", 5, None, "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"],
)
def test_a_time_that_is_no_iso_8601_text_is_refused(value: Any):
    with pytest.raises(BadUserInput):
        decode_cursor(encode_cursor("a", value, 3), "a", time_part, id_part)


@pytest.mark.parametrize("value", [7, ["x"], None])
def test_text_parts_must_be_text(value: Any):
    with pytest.raises(BadUserInput):
        decode_cursor(encode_cursor("r", value), "r", text_part)


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "",
        "!!!not base64!!!",
        encode_cursor("r", "S00001"),  # another list's cursor
        encode_cursor("g", RECORDED_AT.isoformat()),  # a part short
        encode_cursor("g", RECORDED_AT.isoformat(), 1, 2),  # a part too many
    ],
)
def test_a_cursor_of_another_shape_is_refused_for_this_list(cursor):
    with pytest.raises(BadUserInput) as refused:
        decode_cursor(cursor, "g", time_part, id_part)

    assert str(refused.value) == f"invalid cursor {cursor!r} for this list"
