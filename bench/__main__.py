"""`make bench`: GraphQL against hand-written baselines on one uvicorn worker, SQL
statement counts, and a 100,000-grade CSV import on SQLite and PostgreSQL
(bench/imports.py). Prints and writes bench/RESULTS.md."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import event
from sqlalchemy.engine import Engine

from bench import audit, cluster, imports, scale
from bench.bare import BARE
from bench.fanout import FanoutResult, run_fanout
from bench.load import MAX_ROUND_S, LoadResult, alternate
from bench.process import Server, graphql_body
from bench.server import STUDENTS_QUERY

ROOT = Path(__file__).resolve().parents[1]
TYPENAME_QUERY = "{ __typename }"
# Each round of a load case holds at least this many requests (issue 12).
MIN_ROUND_REQUESTS = 500
# The README's first example: what the monitoring overhead is measured on.
README_QUERY = (
    "query Students { students(first: 5, gradeLevel: 9, orderBy: NAME) { totalCount "
    "pageInfo { hasNextPage endCursor } edges { node { studentId name gradeLevel "
    'grades(subject: "Math") { subject score percentage recordedAt } '
    "analytics { average letter gpa trendPerMonth percentile atRisk riskReasons } } } } }"
)
PACKAGES = (
    "strawberry-graphql",
    "graphql-core",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "sqlmodel",
    "aiosqlite",
    "orjson",
)


def seed_database(path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "db.seed",
            "--students",
            "1000",
            "--grades-per-student",
            "20",
            "--seed",
            "42",
        ],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": f"sqlite:///{path}"},
        check=True,
        capture_output=True,
    )


def check_identical(server: Server, bare: Server) -> int:
    """The GraphQL answer's data against the bare baseline's (and the in-app
    hand-written handler's whole body): a comparison of different answers is void."""
    graphql = httpx.post(
        server.url + "/graphql",
        content=graphql_body(STUDENTS_QUERY),
        headers={"Content-Type": "application/json"},
    ).content
    handwritten = httpx.get(server.url + "/bench/handwritten").content
    baseline = httpx.post(bare.url + "/students").content
    if (
        graphql != handwritten
        or orjson.loads(graphql)["data"] != orjson.loads(baseline)["data"]
    ):
        raise SystemExit(
            "GraphQL and baseline responses differ: the comparison is void"
        )
    return len(graphql)


async def statement_counts(database: Path) -> dict[str, int]:
    """SQL statements one request of each benchmarked query runs (caches cold)."""
    from asgi_lifespan import LifespanManager

    from app import create_app
    from settings import Settings

    counts: dict[str, int] = {}
    for label, query in (
        ("students(first: 100) with grades", STUDENTS_QUERY),
        ("{ __typename }", TYPENAME_QUERY),
    ):
        app = create_app(
            Settings(  # type: ignore[call-arg]  # _env_file: pydantic-settings' init-only argument
                _env_file=None, database_url=f"sqlite:///{database}", access_log=False
            )
        )
        statements: list[str] = []
        # Every engine of the app (the audit log writes through one of its own).
        engine = Engine

        def count(
            conn: Any,
            cursor: Any,
            statement: str,
            *args: Any,
            seen: list[str] = statements,
        ) -> None:
            # The cost meter's sync and the import keeper run beside requests.
            if statement.lstrip().upper().startswith(
                ("SELECT", "INSERT", "UPDATE", "DELETE")
            ) and not re.search(
                r"\b(cost_meters|cost_periods|cost_operations|import_jobs)\b", statement
            ):
                seen.append(statement)

        async with LifespanManager(app):
            event.listen(engine, "before_cursor_execute", count)
            try:
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(
                    transport=transport, base_url="http://127.0.0.1"
                ) as c:
                    response = await c.post("/graphql", json={"query": query})
                    assert "errors" not in response.json(), response.text
            finally:
                event.remove(engine, "before_cursor_execute", count)
        counts[label] = len(statements)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--seconds", type=float, default=10.0, help="per load case")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--import-rows", type=int, default=100_000)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--fanout-seconds", type=float, default=10.0)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument(
        "--only",
        choices=["audit", "cluster", "import", "scale"],
        help="run one case and replace only its lines in RESULTS.md",
    )
    parser.add_argument(
        "--scale-students",
        type=int,
        default=scale.LARGE,
        help="students of the scale case's large data set (20 grades each)",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gradepulse-bench-"))
    database = work / "bench.db"
    print("seeding 1,000 students x 20 grades (seed 42) ...", flush=True)
    seed_database(database)

    def audit_server(audited: bool) -> Server:
        return Server(
            database,
            factory="bench.server:create_bench_app"
            if audited
            else "bench.server:create_unaudited_bench_app",
            ALERT_LOG_PATH=str(work / f"alert-audit-{audited}.log"),
            COSTS_CSV_PATH=str(work / f"costs-audit-{audited}.csv"),
            **audit.UNLIMITED,
        )

    def audit_figures() -> tuple[dict[str, LoadResult], float]:
        found, cost = audit.measure(
            audit_server,
            graphql_body(STUDENTS_QUERY),
            seconds=args.seconds,
            connections=args.connections,
        )
        for name, r in found.items():
            print(
                f"{name:24} {r.requests_per_s:10.1f} req/s  p50 {r.p50_ms:7.2f} ms  "
                f"p99 {r.p99_ms:7.2f} ms  errors {r.errors}",
                flush=True,
            )
        print(f"audit log overhead: {cost:.1%} fewer requests/s (target <= 10%)")
        return found, cost

    if args.only == "scale":
        scale_only = scale.cases(args, work)  # prints its tables as it goes
        shutil.rmtree(work, ignore_errors=True)
        scale.update_results(args.results, scale_only)
        print(f"updated {args.results}")
        return
    if args.only == "cluster":
        lines = cluster.cases(args, work, database)
        shutil.rmtree(work, ignore_errors=True)
        print("\n".join(lines))
        return
    if args.only == "import":
        found = imports.measure(database, args.import_rows, work)
        shutil.rmtree(work, ignore_errors=True)
        for figures in found:
            print(imports.summary(figures, args.import_rows))
        imports.update_results(args.results, found, args.import_rows)
        print(f"updated {args.results}")
        return
    if args.only == "audit":
        audit_cases, audit_overhead = audit_figures()
        shutil.rmtree(work, ignore_errors=True)
        audit.update_results(
            args.results,
            audit_cases,
            audit_overhead,
            seconds=args.seconds,
            connections=args.connections,
        )
        print(f"updated {args.results}")
        return
    counts = asyncio.run(statement_counts(database))

    # Each pair alternates; the bare baselines are an app of their own (bench/bare.py),
    # the in-app hand-written handler a second row beside them.
    server = Server(database)
    bare = Server(database, factory=BARE)
    try:
        size = check_identical(server, bare)
        cases: dict[str, LoadResult] = {}
        for pair, bodies in (
            (
                {
                    "graphql students": server.url + "/graphql",
                    "bare students": bare.url + "/students",
                    "hand-written students (GradePulse's layers)": server.url
                    + "/bench/handwritten",
                },
                {
                    "graphql students": graphql_body(STUDENTS_QUERY),
                    "bare students": None,
                    "hand-written students (GradePulse's layers)": None,
                },
            ),
            (
                {
                    "graphql __typename": server.url + "/graphql",
                    "bare starlette json": bare.url + "/raw",
                },
                {
                    "graphql __typename": graphql_body(TYPENAME_QUERY),
                    "bare starlette json": graphql_body(TYPENAME_QUERY),
                },
            ),
        ):
            measured = alternate(
                pair,
                body=None,
                bodies=bodies,
                seconds=args.seconds,
                connections=args.connections,
                min_requests=MIN_ROUND_REQUESTS,
            )
            for name, r in measured.items():
                cases[name] = r
                print(
                    f"{name:24} {r.requests_per_s:10.1f} req/s  p50 {r.p50_ms:7.2f} ms  "
                    f"p99 {r.p99_ms:7.2f} ms  errors {r.errors}",
                    flush=True,
                )
    finally:
        server.stop()
        bare.stop()
    # Monitoring overhead: the same query against two servers, monitoring off and on,
    # both up at once and measured in alternation (off, on, off, on) so that drift in
    # the machine's speed falls on both; each side's figure is the mean of its rounds.
    servers = {
        label: Server(
            database,
            MONITORING_ENABLED=enabled,
            ALERT_LOG_PATH=str(work / f"alert-{enabled}.log"),
            COSTS_CSV_PATH=str(work / f"costs-{enabled}.csv"),
        )
        for label, enabled in (("monitoring off", "false"), ("monitoring on", "true"))
    }
    try:
        measured = alternate(
            {label: server.url + "/graphql" for label, server in servers.items()},
            body=graphql_body(README_QUERY),
            seconds=args.seconds,
            connections=args.connections,
        )
        for label, r in measured.items():
            cases[f"README query, {label}"] = r
            print(
                f"{'README query, ' + label:24} {r.requests_per_s:10.1f} req/s  "
                f"p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  errors {r.errors}",
                flush=True,
            )
    finally:
        for server in servers.values():
            server.stop()
    audit_cases, audit_overhead = audit_figures()
    cases.update(audit_cases)
    print(f"fan-out: {args.subscribers} metrics subscribers at 1 Hz ...", flush=True)
    server = Server(
        database,
        SAMPLE_INTERVAL_MS="1000",
        MAX_SUBSCRIPTIONS=str(max(10_000, args.subscribers)),
    )
    try:
        fanout = asyncio.run(
            run_fanout(
                server.url.replace("http://", "ws://") + "/graphql",
                server.process.pid,
                args.subscribers,
                args.fanout_seconds,
            )
        )
    finally:
        server.stop()
    print(
        f"fan-out: {fanout.connected}/{fanout.subscribers} connected, "
        f"{fanout.messages} snapshots, lag p50 {fanout.p50_ms:.1f} ms p99 "
        f"{fanout.p99_ms:.1f} ms, errors {fanout.errors}, server CPU "
        f"{fanout.server_cpu_percent:.0f}% (target p99 <= 250 ms, 0 errors)",
        flush=True,
    )
    cluster_lines = cluster.cases(args, work, database)
    scale_lines = scale.cases(args, work)
    print("importing grades from CSV ...", flush=True)
    found_imports = imports.measure(database, args.import_rows, work)
    shutil.rmtree(work, ignore_errors=True)

    students_ratio = (
        cases["graphql students"].requests_per_s / cases["bare students"].requests_per_s
    )
    handwritten_ratio = (
        cases["graphql students"].requests_per_s
        / cases["hand-written students (GradePulse's layers)"].requests_per_s
    )
    typename_ratio = (
        cases["graphql __typename"].requests_per_s
        / cases["bare starlette json"].requests_per_s
    )
    overhead = 1 - (
        cases["README query, monitoring on"].requests_per_s
        / cases["README query, monitoring off"].requests_per_s
    )
    print(f"monitoring overhead: {overhead:.1%} slower (target <= 10%)")
    print(
        f"ratio students: {students_ratio:.2f} against the bare baseline (target >= 0.7)"
    )
    print(
        f"ratio students against the in-app hand-written handler: {handwritten_ratio:.2f}"
    )
    print(f"ratio __typename: {typename_ratio:.2f} (target >= 0.3)")
    print(f"statements: {counts}")
    for figures in found_imports:
        print(imports.summary(figures, args.import_rows))
    write_results(
        args,
        cases,
        counts,
        imports.bullets(found_imports, args.import_rows),
        size,
        students_ratio,
        handwritten_ratio,
        typename_ratio,
        overhead,
        fanout,
        audit_overhead,
        cluster_lines + scale_lines,
    )


def write_results(
    args: Any,
    cases: dict[str, LoadResult],
    counts: dict[str, int],
    import_lines: list[str],
    size: int,
    students_ratio: float,
    handwritten_ratio: float,
    typename_ratio: float,
    overhead: float,
    fanout: FanoutResult,
    audit_overhead: float,
    case_lines: list[str],
) -> None:
    tool = next(iter(cases.values())).tool
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Machine: "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}.",
        "Versions: " + ", ".join(f"{p} {version(p)}" for p in PACKAGES) + ".",
        f"Load: {tool}, {args.connections} connections, a 2 s warm-up of each case, then "
        f"two rounds in alternation of at least {args.seconds / 2:g} s and "
        f"{MIN_ROUND_REQUESTS} requests each (at most {MAX_ROUND_S:g} s), against one "
        "uvicorn worker on a SQLite database seeded with 1,000 students x 20 grades "
        "(seed 42). The bare baselines are an app of their own (bench/bare.py: no "
        "GradePulse code); the monitoring and audit pairs run in two servers of the app.",
        "",
        "| case | requests/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {name} | {r.requests_per_s:.1f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} |"
            for name, r in cases.items()
        ),
        "",
        f"- `students(first: 100) {{ grades {{ subject score }} }}` against the bare "
        f"baseline (the same two statements with SQLAlchemy `text()`, the same data, "
        f"orjson; {size:,} bytes): **{students_ratio:.2f}** (issue 12's target >= 0.7: "
        f"{'met' if students_ratio >= 0.7 else 'MISSED'}); against the in-app "
        "hand-written handler (GradePulse's authentication, rate charge, audit and "
        f"db/ functions): {handwritten_ratio:.2f}.",
        f"- `{{ __typename }}` against a bare Starlette JSON route in its own app: "
        f"**{typename_ratio:.2f}** (issue 12's target >= 0.3: "
        f"{'met' if typename_ratio >= 0.3 else 'MISSED'}).",
        f"- Monitoring overhead on the README's students query: **{overhead:.1%}** slower "
        "with monitoring on than off (target <= 10%).",
        audit.bullet(audit_overhead),
        f"- Fan-out: {fanout.subscribers} `metrics(intervalMs: 1000)` subscribers on one "
        f"worker ({fanout.connected} connected), {fanout.messages} snapshots in "
        f"{args.fanout_seconds:g} s: delivery lag p50 {fanout.p50_ms:.1f} ms, p99 "
        f"**{fanout.p99_ms:.1f} ms** (target <= 250 ms), {fanout.errors} errors, "
        f"server CPU {fanout.server_cpu_percent:.0f}% of one core.",
        "- SQL statements per request (cold caches; every engine of the app, the "
        "audit log's insert included): "
        + ", ".join(f"{k}: {v}" for k, v in counts.items())
        + ".",
        *import_lines,
        *case_lines,
        "",
    ]
    args.results.write_text("\n".join(lines))
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
