"""Issue 13's long runs, each against one uvicorn worker on the 1,000 x 20 SQLite set:

- Soak: minutes of mixed load at constant rates (every query of the README in
  turn, single grade writes, 100-row batch writes, an import every few minutes,
  200 `metrics` subscribers): RSS, p50/p99 of the reads and the errors per minute.
  Targets: RSS after the first minute grows at most 10% by the end, no error, the
  last minute's p99 within 20% of the second minute's.
- Load held: for the students query and the README query, the highest constant
  rate whose p99 (from each request's due time) stays under 500 ms, in steps.

`python -m bench --only soak` / `--only held` run one and replace its section of
bench/RESULTS.md."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from websockets.asyncio.client import connect

from bench.openloop import OpenLoop, Tally
from bench.process import ROOT, Server, graphql_body
from bench.server import STUDENTS_QUERY
from bench.speed import README_QUERY

SOAK_HEADING = "## Soak (issue 13)"
HELD_HEADING = "## Load held (issue 13)"
READ_RATE = 60.0  # reads a second
WRITE_RATE = 5.0  # gradeAdd a second
BATCH_RATE = 0.5  # 100-row gradesAdd a second
SUBSCRIBERS = 200
IMPORT_EVERY_S = 180.0
IMPORT_ROWS = 2000
HELD_P99_MS = 500.0
HELD_STEP_S = 10.0
GRADE_ADD = "mutation($in: GradeAddInput!) { gradeAdd(input: $in) { __typename } }"
GRADES_ADD = (
    "mutation($in: [GradeAddInput!]!, $key: String) { gradesAdd(input: $in, "
    "idempotencyKey: $key) { __typename } }"
)
IMPORT = "mutation($csv: String) { gradesImport(csv: $csv) { __typename } }"
FEED = "subscription { metrics(intervalMs: 1000) { at requestsTotal } }"


def readme_queries() -> list[str]:
    """Every query operation of the README's GraphQL examples, one request each."""
    text = (ROOT / "README.md").read_text()
    found: list[str] = []
    for block in re.findall(r"```graphql\n(.*?)```", text, re.S):
        for part in re.split(r"\n(?=query|mutation|subscription|\{)", block):
            part = part.strip()
            if part.startswith(("query", "{")) and part not in found:
                found.append(part)
    return found


def _post_once(url: str, body: bytes) -> tuple[int, bytes]:
    response = httpx.post(
        url, content=body, headers={"content-type": "application/json"}
    )
    return response.status_code, response.content


def _ok(status: int, payload: bytes) -> bool:
    if status != 200:
        return False
    body = orjson.loads(payload)
    return not body.get("errors")


async def _subscribers(
    url: str, count: int, received: list[int], stop: asyncio.Event
) -> None:
    async def one() -> None:
        async with connect(url, subprotocols=["graphql-transport-ws"]) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
            await ws.recv()
            await ws.send(
                json.dumps({"id": "1", "type": "subscribe", "payload": {"query": FEED}})
            )
            while not stop.is_set():
                try:
                    message = await asyncio.wait_for(ws.recv(), 1.0)
                except TimeoutError:
                    continue
                kind = json.loads(message).get("type")
                if kind == "next":
                    received[0] += 1
                elif kind not in ("ping", "pong"):  # error, complete: the feed broke
                    received[1] += 1

    results = await asyncio.gather(
        *(one() for _ in range(count)), return_exceptions=True
    )
    received[1] += sum(1 for r in results if isinstance(r, BaseException))


async def _soak(server: Server, minutes: int) -> list[dict[str, Any]]:
    seconds = minutes * 60.0
    process = psutil.Process(server.process.pid)
    # The README's examples that answer as they stand (one needs a job's id).
    queries = [
        q
        for q in readme_queries()
        if _ok(*_post_once(server.url + "/graphql", graphql_body(q)))
    ]
    reads = itertools.cycle([graphql_body(q) for q in queries])
    minute_tallies: list[Tally] = [Tally() for _ in range(minutes + 1)]
    writes = Tally()
    loop = asyncio.get_running_loop()
    started = loop.time()

    def by_minute() -> Tally:
        return minute_tallies[min(minutes, int((loop.time() - started) // 60))]

    counter = itertools.count()

    def grade() -> bytes:
        n = next(counter)
        return orjson.dumps(
            {
                "query": GRADE_ADD,
                "variables": {
                    "in": {
                        "studentId": f"S{1 + n % 1000:05d}",
                        "subject": "Soak",
                        "score": float(n % 100),
                    }
                },
            }
        )

    def batch() -> bytes:
        n = next(counter)
        rows = [
            {
                "studentId": f"S{1 + (n + i) % 1000:05d}",
                "subject": "SoakBatch",
                "score": float(i),
            }
            for i in range(100)
        ]
        return orjson.dumps(
            {"query": GRADES_ADD, "variables": {"in": rows, "key": f"soak-{n}"}}
        )

    def csv_import() -> bytes:
        n = next(counter)
        lines = ["student_id,subject,score,max_score,recorded_at"] + [
            f"S{1 + (n + i) % 1000:05d},SoakImport,{i % 100},100,2025-10-01T09:00:00Z"
            for i in range(IMPORT_ROWS)
        ]
        return orjson.dumps({"query": IMPORT, "variables": {"csv": "\n".join(lines)}})

    url = server.url + "/graphql"
    received = [0, 0]  # frames, errors
    stop = asyncio.Event()
    feed = asyncio.create_task(
        _subscribers(url.replace("http", "ws"), SUBSCRIBERS, received, stop)
    )
    loads = [
        (OpenLoop(url), READ_RATE, lambda: next(reads), by_minute),
        (OpenLoop(url, 8), WRITE_RATE, grade, lambda: writes),
        (OpenLoop(url, 4), BATCH_RATE, batch, lambda: writes),
        (OpenLoop(url, 2), 1 / IMPORT_EVERY_S, csv_import, lambda: writes),
    ]
    rss: list[float] = []

    async def sample() -> None:
        for _ in range(minutes):
            await asyncio.sleep(60)
            rss.append(process.memory_info().rss / 2**20)

    sampling = asyncio.create_task(sample())
    try:
        await asyncio.gather(
            *(
                load.run(rate, seconds, body, tally, _ok)
                for load, rate, body, tally in loads
            )
        )
        await sampling
    finally:
        stop.set()
        await asyncio.wait_for(feed, 30)
        for load, *_ in loads:
            load.close()
    rows = []
    for minute in range(minutes):
        tally = minute_tallies[minute]
        rows.append(
            {
                "minute": minute + 1,
                "rss_mb": rss[minute] if minute < len(rss) else float("nan"),
                "reads": len(tally.latencies),
                "p50_ms": tally.percentile(0.5) * 1000,
                "p99_ms": tally.percentile(0.99) * 1000,
                "errors": tally.errors,
            }
        )
    rows.append(
        {
            "writes": len(writes.latencies),
            "write_errors": writes.errors,
            "frames": received[0],
            "feed_errors": received[1],
            "queries": len(queries),
        }
    )
    return rows


def soak_section(database: Path, minutes: int) -> list[str]:
    server = Server(database)
    try:
        rows = asyncio.run(_soak(server, minutes))
    finally:
        server.stop()
    per_minute, totals = rows[:-1], rows[-1]
    lines = [
        SOAK_HEADING,
        "",
        f"{minutes} minutes on one uvicorn worker (SQLite, 1,000 x 20): every query of "
        f"the README in turn ({totals['queries']} documents) at {READ_RATE:g}/s, "
        f"`gradeAdd` at {WRITE_RATE:g}/s, a 100-row `gradesAdd` every "
        f"{1 / BATCH_RATE:g} s, a {IMPORT_ROWS:,}-row `gradesImport` every "
        f"{IMPORT_EVERY_S:g} s, {SUBSCRIBERS} `metrics` subscribers; constant rates "
        "(latency from each request's due time), the client in the bench process.",
        "",
        "| minute | RSS MB | reads | p50 ms | p99 ms | errors |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in per_minute:
        lines.append(
            f"| {row['minute']} | {row['rss_mb']:.1f} | {row['reads']} | "
            f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['errors']} |"
        )
    errors = sum(r["errors"] for r in per_minute) + totals["write_errors"]
    errors += totals["feed_errors"]
    growth = per_minute[-1]["rss_mb"] / per_minute[0]["rss_mb"] - 1
    drift = per_minute[-1]["p99_ms"] / per_minute[1]["p99_ms"] - 1
    lines += [
        "",
        f"- RSS from the first minute to the last: {growth:+.1%} (target <= +10%: "
        f"{'met' if growth <= 0.10 else 'MISSED'}).",
        f"- Errors: {errors} (target 0: {'met' if errors == 0 else 'MISSED'}): "
        f"{sum(r['errors'] for r in per_minute)} of the reads, "
        f"{totals['write_errors']} of {totals['writes']} writes and imports, "
        f"{totals['feed_errors']} among {totals['frames']:,} subscription frames.",
        f"- p99 of the last minute against the second: {drift:+.1%} (target within "
        f"20%: {'met' if abs(drift) <= 0.20 else 'MISSED'}).",
        "",
    ]
    return lines


async def _held(
    server: Server, body: bytes, rates: list[float]
) -> list[tuple[float, Tally]]:
    url = server.url + "/graphql"
    found = []
    for rate in rates:
        load = OpenLoop(url, 128)
        tally = Tally()
        try:
            await load.run(rate, HELD_STEP_S, lambda: body, lambda t=tally: t, _ok)
        finally:
            load.close()
        found.append((rate, tally))
        p99 = tally.percentile(0.99) * 1000
        print(f"  {rate:7.0f}/s  p99 {p99:8.1f} ms  errors {tally.errors}", flush=True)
        if p99 > 2 * HELD_P99_MS or tally.errors:
            break
        await asyncio.sleep(2)
    return found


def held_section(database: Path) -> list[str]:
    lines = [
        HELD_HEADING,
        "",
        f"One uvicorn worker (SQLite, 1,000 x 20); a constant rate for {HELD_STEP_S:g} s "
        "per step (the open-loop client in the bench process, latency from each "
        f"request's due time); the highest rate whose p99 stays under {HELD_P99_MS:g} ms "
        "with no error.",
        "",
        "| query | rate held | p99 ms there | next step | its p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    cases = [
        (
            "students query (100 students with grades)",
            STUDENTS_QUERY,
            [40, 60, 80, 100, 120, 140, 160, 180, 200],
        ),
        (
            "README query",
            README_QUERY,
            [200, 300, 400, 500, 600, 700, 800, 900, 1000, 1200],
        ),
    ]
    for name, query, rates in cases:
        server = Server(database)
        try:
            print(f"load held: {name}", flush=True)
            steps = asyncio.run(_held(server, graphql_body(query), rates))
        finally:
            server.stop()
        good = [
            (rate, t)
            for rate, t in steps
            if t.percentile(0.99) * 1000 < HELD_P99_MS and not t.errors
        ]
        best = good[-1] if good else None
        after = steps[len(good)] if len(good) < len(steps) else None
        lines.append(
            f"| {name} | {best[0]:.0f}/s | {best[1].percentile(0.99) * 1000:.1f} | "
            if best
            else f"| {name} | none | - | "
        )
        lines[-1] += (
            f"{after[0]:.0f}/s | {after[1].percentile(0.99) * 1000:.1f} |"
            if after
            else "beyond the steps | - |"
        )
    lines.append("")
    return lines
