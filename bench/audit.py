"""The audit log's cost: the students query against an unaudited and an audited
server, measured in alternation; and its lines in RESULTS.md."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.load import LoadResult, alternate

OFF = "students query, audit log off"
ON = "students query, audit log on"
BULLET = "- Audit log overhead"
# Anonymous bench clients act as admin: a budget no load run can exhaust, so that
# the figure is the audit log's and not the rate limiter's.
UNLIMITED = {"RATE_LIMIT_ADMIN": str(10**12)}


def measure(
    start: Callable[[bool], Any], body: bytes, *, seconds: float, connections: int
) -> tuple[dict[str, LoadResult], float]:
    """Both servers up at once (`start(audited)`), measured off, on, off, on, so that
    drift in the machine's speed falls on both; each figure is its rounds' mean."""
    servers = {OFF: start(False), ON: start(True)}
    try:
        for server in servers.values():
            # A withheld response is a 200 with an error, which the load tool counts
            # as a success: both sides must answer with data.
            answer = httpx.post(
                server.url + "/graphql",
                content=body,
                headers={"Content-Type": "application/json"},
                timeout=30,
            ).json()
            if answer.get("errors") or not answer.get("data"):
                raise SystemExit(f"the students query failed: {answer}")
        cases = alternate(
            {label: server.url + "/graphql" for label, server in servers.items()},
            body=body,
            seconds=seconds,
            connections=connections,
        )
    finally:
        for server in servers.values():
            server.stop()
    overhead = 1 - cases[ON].requests_per_s / cases[OFF].requests_per_s
    return cases, overhead


def bullet(overhead: float, note: str = "") -> str:
    # A negative figure is the runs' noise outweighing the log's cost.
    figure = (
        f"**{overhead:.1%}** fewer requests/s"
        if overhead >= 0
        else f"**{-overhead:.1%}** more requests/s (within the runs' noise)"
    )
    return (
        f"{BULLET} on `students(first: 100) {{ name gradeLevel grades {{ subject score }} }}`: "
        f"{figure} with every response recorded (one row per response, group "
        f"commit) than without (target <= 10%){note}."
    )


def row(name: str, r: LoadResult) -> str:
    return (
        f"| {name} | {r.requests_per_s:.1f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
        f"{r.errors} |"
    )


def update_results(
    path: Path,
    cases: dict[str, LoadResult],
    overhead: float,
    *,
    seconds: float,
    connections: int,
) -> None:
    """Put this case's table rows and bullet into an existing RESULTS.md, replacing
    an earlier run's, and leave every other line as it is."""
    lines = path.read_text().splitlines()
    lines = [
        line
        for line in lines
        if not line.startswith((f"| {OFF} |", f"| {ON} |", BULLET))
    ]
    table_end = max(i for i, line in enumerate(lines) if line.startswith("|"))
    lines[table_end + 1 : table_end + 1] = [row(n, r) for n, r in cases.items()]
    note = (
        f"; measured alone by `make bench BENCH_ARGS='--only audit'` on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {seconds:g} s per side in two "
        f"rounds, {connections} connections"
    )
    after = next(
        (i for i, line in enumerate(lines) if re.match(r"- Monitoring overhead", line)),
        None,
    )
    position = after + 1 if after is not None else len(lines)
    lines.insert(position, bullet(overhead, note))
    path.write_text("\n".join(lines) + "\n")
