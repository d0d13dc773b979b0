"""Analytics figures as the API shows them: computed at full precision below, rounded
here, at the edge, to FIGURE_DIGITS decimals (76.48, not the 76.47999999999999 that a
sum of binary floats gives). Money keeps its own 6 decimals (schema/monitoring.py)."""

from __future__ import annotations

from typing import overload

FIGURE_DIGITS = 4


@overload
def figure(value: float) -> float: ...
@overload
def figure(value: None) -> None: ...
def figure(value: float | None) -> float | None:
    """`value` rounded to FIGURE_DIGITS decimals (-0.0 shown as 0.0); None stays."""
    if value is None:
        return None
    return round(value, FIGURE_DIGITS) + 0.0
