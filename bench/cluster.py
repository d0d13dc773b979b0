"""The cluster cases of `make bench`, on PostgreSQL and Redis:

- the students query against one server of 2 workers and one of 1 worker (both up at
  once, measured in alternation): throughput, and the server CPU time per request
  (user + system of the whole process tree, read with psutil around each round);
- fan-out: `gradeEvents` subscribers spread over two workers, with writes on both;
  the lag is the receipt time minus the grade's `recordedAt`, which the writer sets
  to its clock just before it sends the write (so the lag includes the write itself).

Both need BENCH_DATABASE_URL (or TEST_DATABASE_URL) and BENCH_REDIS_URL (or
TEST_REDIS_URL); without them the cases say so and are skipped."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import websockets

from bench.fanout import subscribe
from bench.load import LoadResult, run_load
from bench.process import Server, graphql_body
from bench.server import STUDENTS_QUERY

ROOT = Path(__file__).resolve().parents[1]
GRADE_EVENTS = (
    "subscription { gradeEvents { studentId grades { subject score recordedAt } } }"
)
GRADE_ADD = (
    "mutation Add($input: GradeAddInput!) { gradeAdd(input: $input) { "
    "__typename ... on GradeAddSuccess { grade { id } } } }"
)
# Targets of the issue (scale-out): CPU per request with 2 workers at most 1.15 times
# that of 1; fan-out p99 at most 250 ms.
CPU_TARGET = 1.15
LAG_TARGET_MS = 250.0


def service_urls() -> tuple[str, str] | None:
    database = os.environ.get("BENCH_DATABASE_URL") or os.environ.get(
        "TEST_DATABASE_URL"
    )
    redis = os.environ.get("BENCH_REDIS_URL") or os.environ.get("TEST_REDIS_URL")
    if not database or not redis:
        return None
    return database, redis


def _admin_url(database_url: str) -> str:
    for prefix in ("postgresql+asyncpg://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql://" + database_url[len(prefix) :]
    return database_url


def _with_database(database_url: str, name: str) -> str:
    head, _, tail = database_url.rpartition("/")
    query = tail.partition("?")[2]
    return f"{head}/{name}" + (f"?{query}" if query else "")


async def _admin(database_url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_admin_url(database_url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def postgres_database(database_url: str, name: str) -> Iterator[str]:
    """A new, empty database `name` on the server of `database_url` (its URL);
    dropped afterwards."""
    asyncio.run(_admin(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    asyncio.run(_admin(database_url, f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(database_url, name)
    finally:
        asyncio.run(
            _admin(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        )


@contextmanager
def seeded_postgres(database_url: str) -> Iterator[str]:
    """A database of its own on the server of `database_url`, seeded with 1,000
    students x 20 grades (seed 42); dropped afterwards."""
    with postgres_database(database_url, f"gradepulse_bench_{os.getpid()}") as url:
        subprocess.run(
            [sys.executable, "-m", "db.seed", "--students", "1000"]
            + ["--grades-per-student", "20", "--seed", "42"],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": url},
            check=True,
            capture_output=True,
        )
        yield url


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its children (uvicorn's workers)."""
    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


@dataclass(frozen=True, slots=True)
class WorkersCase:
    label: str
    load: LoadResult
    cpu_ms_per_request: float


def workers_figures(
    url_of: dict[str, str],
    pid_of: dict[str, int],
    *,
    body: bytes,
    seconds: float,
    connections: int,
) -> dict[str, WorkersCase]:
    """Servers up at once (label -> URL and pid): a warm-up of each, then two rounds
    in alternation of `seconds` / 2 each; CPU per request over the measured rounds."""
    for url in url_of.values():
        run_load(url, body=body, seconds=2, connections=connections)
    loads: dict[str, list[LoadResult]] = {label: [] for label in url_of}
    cpu: dict[str, float] = dict.fromkeys(url_of, 0.0)
    for _ in range(2):
        for label, url in url_of.items():
            before = tree_cpu_s(pid_of[label])
            loads[label].append(
                run_load(url, body=body, seconds=seconds / 2, connections=connections)
            )
            cpu[label] += tree_cpu_s(pid_of[label]) - before
    found = {}
    for label, rounds in loads.items():
        requests = sum(r.requests for r in rounds)
        found[label] = WorkersCase(
            label=label,
            load=LoadResult(
                requests_per_s=statistics.fmean(r.requests_per_s for r in rounds),
                p50_ms=statistics.fmean(r.p50_ms for r in rounds),
                p99_ms=max(r.p99_ms for r in rounds),
                requests=requests,
                errors=sum(r.errors for r in rounds),
                tool=rounds[0].tool,
            ),
            cpu_ms_per_request=1000.0 * cpu[label] / requests if requests else 0.0,
        )
    return found


@dataclass(frozen=True, slots=True)
class ClusterFanout:
    subscribers: int
    connected: int
    writes: int
    received: int
    expected: int
    errors: int
    p50_ms: float
    p99_ms: float
    first_error: str = ""


def _sent_at(recorded_at: str) -> float:
    return datetime.fromisoformat(recorded_at.replace("Z", "+00:00")).timestamp()


async def _close_on(stop: asyncio.Event, ws: Any) -> None:
    await stop.wait()
    await ws.close()


async def _subscriber(
    url: str,
    received: list[tuple[float, float]],
    errors: list[str],
    stop: asyncio.Event,
) -> bool:
    """Collects (sent, lag ms) for every bench grade received."""
    try:
        async with websockets.connect(
            url, subprotocols=["graphql-transport-ws"], max_size=2**20, open_timeout=30
        ) as ws:
            if not await subscribe(ws, GRADE_EVENTS, errors):
                return False
            # The client stamps each message as it arrives and reads on without a
            # timer per message: a slow client would show as the server's lag.
            closer = asyncio.create_task(_close_on(stop, ws))
            async for raw in ws:
                now = time.time()
                message = json.loads(raw)
                kind = message.get("type")
                if kind == "ping":
                    await ws.send(json.dumps({"type": "pong"}))
                elif kind == "next":
                    payload = message["payload"]
                    if payload.get("errors"):
                        errors.append(str(payload["errors"])[:200])
                        continue
                    for grade in payload["data"]["gradeEvents"]["grades"]:
                        if grade["subject"] == "Bench":
                            sent = _sent_at(grade["recordedAt"])
                            received.append((sent, (now - sent) * 1000.0))
                elif kind in ("error", "complete"):
                    errors.append(str(message)[:200])
                    break
            closer.cancel()
            return True
    except websockets.ConnectionClosedOK:
        return True  # closed by _close_on while answering a ping
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
        return False


async def _writer(
    client: httpx.AsyncClient,
    url: str,
    student_id: str,
    interval_s: float,
    offset_s: float,
    writes: list[float],
    errors: list[str],
    stop: asyncio.Event,
) -> None:
    """Adds a grade every `interval_s` from `offset_s` on; collects the `recordedAt`
    of each success."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(offset_s)
    deadline = loop.time()
    while not stop.is_set():
        moment = datetime.now(UTC)
        now = moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
        response = await client.post(
            url,
            json={
                "query": GRADE_ADD,
                "variables": {
                    "input": {
                        "studentId": student_id,
                        "subject": "Bench",
                        "score": 80.0,
                        "recordedAt": now,
                    }
                },
            },
        )
        body = response.json()
        if body.get("errors") or (
            body["data"]["gradeAdd"]["__typename"] != "GradeAddSuccess"
        ):
            errors.append(str(body)[:200])
        else:
            writes.append(moment.timestamp())
        deadline = max(deadline + interval_s, loop.time())
        await asyncio.sleep(deadline - loop.time())


async def run_cluster_fanout(
    urls: list[str],
    *,
    subscribers: int,
    seconds: float,
    writes_per_s: float,
    student_ids: list[str],
) -> ClusterFanout:
    """`subscribers` gradeEvents subscriptions, alternately on each worker of `urls`;
    one writer per worker adding a grade `writes_per_s` times a second."""
    received: list[tuple[float, float]] = []
    writes: list[float] = []
    errors: list[str] = []
    stop = asyncio.Event()
    ws_urls = [url.replace("http://", "ws://") + "/graphql" for url in urls]
    tasks = []
    for number in range(subscribers):
        tasks.append(
            asyncio.create_task(
                _subscriber(ws_urls[number % len(ws_urls)], received, errors, stop)
            )
        )
        await asyncio.sleep(0.002)  # connect gradually, as real clients do
    await asyncio.sleep(3)  # every subscription is registered
    async with httpx.AsyncClient(timeout=30) as client:
        writers = [
            asyncio.create_task(
                _writer(
                    client,
                    url + "/graphql",
                    student_ids[number % len(student_ids)],
                    1.0 / writes_per_s,
                    # Writers evenly spaced, not in lockstep: clients' writes do not
                    # arrive on the same beat.
                    number / (writes_per_s * len(urls)),
                    writes,
                    errors,
                    stop,
                )
            )
            for number, url in enumerate(urls)
        ]
        await asyncio.sleep(1)  # writes flowing before the measured window
        start = time.time()
        await asyncio.sleep(seconds)
        end = time.time()
        await asyncio.sleep(2)  # the last measured writes arrive
        stop.set()
        await asyncio.gather(*writers)
    connected = sum(1 for ok in await asyncio.gather(*tasks) if ok)
    measured = [sent for sent in writes if start <= sent < end]
    ordered = sorted(lag for sent, lag in received if start <= sent < end)
    return ClusterFanout(
        subscribers=subscribers,
        connected=connected,
        writes=len(measured),
        received=len(ordered),
        expected=len(measured) * connected,
        errors=len(errors),
        p50_ms=statistics.median(ordered) if ordered else float("nan"),
        p99_ms=ordered[int(0.99 * (len(ordered) - 1))] if ordered else float("nan"),
        first_error=errors[0] if errors else "",
    )


def redis_prefix() -> str:
    return f"gradepulse-bench:{uuid.uuid4().hex}:"


def cases(args: Any, work: Path, database: Path) -> list[str]:
    """The scale-out cases on PostgreSQL and Redis; RESULTS.md lines (a skip says why)."""
    urls = service_urls()
    if urls is None:
        line = (
            "- Cluster cases skipped: set BENCH_DATABASE_URL and BENCH_REDIS_URL (or "
            "TEST_DATABASE_URL and TEST_REDIS_URL)."
        )
        print(line, flush=True)
        return [line]
    database_url, redis_url = urls
    print("cluster: seeding PostgreSQL (1,000 students x 20 grades) ...", flush=True)
    lines = []
    with seeded_postgres(database_url) as pg:
        shared = {"REDIS_URL": redis_url, "database_url": pg}
        servers = {
            f"{n} worker{'s' if n > 1 else ''}": Server(
                database,
                workers=n,
                REDIS_PREFIX=redis_prefix(),
                ALERT_LOG_PATH=str(work / f"alert-workers-{n}.log"),
                COSTS_CSV_PATH=str(work / f"costs-workers-{n}.csv"),
                **shared,
            )
            for n in (1, 2)
        }
        try:
            found = workers_figures(
                {label: server.url + "/graphql" for label, server in servers.items()},
                {label: server.process.pid for label, server in servers.items()},
                body=graphql_body(STUDENTS_QUERY),
                seconds=args.seconds,
                connections=args.connections,
            )
        finally:
            for server in servers.values():
                server.stop()
        for label, case in found.items():
            r = case.load
            print(
                f"students, {label:10} {r.requests_per_s:10.1f} req/s  p50 "
                f"{r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  errors {r.errors}  "
                f"CPU {case.cpu_ms_per_request:.2f} ms/request",
                flush=True,
            )
        one, two = found["1 worker"], found["2 workers"]
        throughput = two.load.requests_per_s / one.load.requests_per_s
        cpu = two.cpu_ms_per_request / one.cpu_ms_per_request
        verdict = "met" if cpu <= CPU_TARGET else "MISSED"
        print(
            f"2 workers / 1 worker: throughput x{throughput:.2f}, CPU per request "
            f"x{cpu:.2f} (target <= {CPU_TARGET}: {verdict})",
            flush=True,
        )
        lines.append(
            f"- Students query on PostgreSQL, 2 workers against 1 (one server each, "
            f"both up, alternating): {two.load.requests_per_s:.1f} against "
            f"{one.load.requests_per_s:.1f} req/s (x{throughput:.2f}); server CPU "
            f"{two.cpu_ms_per_request:.2f} against {one.cpu_ms_per_request:.2f} ms per "
            f"request: **x{cpu:.2f}** (target <= {CPU_TARGET}, {verdict}). "
            "The load generator and PostgreSQL share the 2 cores with the workers."
        )
        # The first fan-out size (1,000 by default) for the cluster case.
        subscribers = args.subscribers[0]
        print(
            f"cluster fan-out: {subscribers} gradeEvents subscribers over 2 "
            "workers, writes on both ...",
            flush=True,
        )
        prefix = redis_prefix()
        workers = [
            Server(
                database,
                REDIS_PREFIX=prefix,
                WORKERS="2",
                MAX_SUBSCRIPTIONS=str(max(10_000, subscribers)),
                ALERT_LOG_PATH=str(work / "alert-fanout.log"),
                COSTS_CSV_PATH=str(work / "costs-fanout.csv"),
                **shared,
            )
            for _ in range(2)
        ]
        try:
            fan = asyncio.run(
                run_cluster_fanout(
                    [server.url for server in workers],
                    subscribers=subscribers,
                    seconds=args.fanout_seconds,
                    writes_per_s=1.0,
                    student_ids=["S00001", "S00002"],
                )
            )
        finally:
            for server in workers:
                server.stop()
    # Every subscriber must get every write once: a lost event is a miss too.
    complete = fan.received == fan.expected and fan.errors == 0
    verdict = "met" if fan.p99_ms <= LAG_TARGET_MS and complete else "MISSED"
    summary = (
        f"{fan.connected}/{fan.subscribers} connected, {fan.writes} writes, "
        f"{fan.received}/{fan.expected} events received, lag p50 {fan.p50_ms:.1f} ms, "
        f"p99 {fan.p99_ms:.1f} ms (target <= {LAG_TARGET_MS:g} ms: {verdict}), "
        f"errors {fan.errors}" + (f" (first: {fan.first_error})" if fan.errors else "")
    )
    print(f"cluster fan-out: {summary}", flush=True)
    lines.append(
        f"- Fan-out over 2 workers (two servers on PostgreSQL and Redis): "
        f"{subscribers} `gradeEvents` subscribers alternately on each, one "
        f"`gradeAdd` a second on each worker (the two writers evenly spaced), "
        f"{args.fanout_seconds:g} s: {summary}. "
        "Lag: receipt minus the `recordedAt` the writer set just before sending, so "
        "it includes the write."
    )
    return lines
