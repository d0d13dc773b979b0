"""The DB statements of the running operation: the SQLAlchemy listener (attached by
app.py) counts each one into the tally that OperationMonitor set for it."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(slots=True)
class Tally:
    """DB statements run on behalf of one operation."""

    db_queries: int = 0


current_tally: ContextVar[Tally | None] = ContextVar("gradepulse_tally", default=None)


def count_statement() -> None:
    """Called for each SQL statement: charges it to the running operation, if any."""
    tally = current_tally.get()
    if tally is not None:
        tally.db_queries += 1
