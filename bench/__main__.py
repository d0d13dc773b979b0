"""`make bench`: GraphQL against hand-written baselines on one uvicorn worker, SQL
statement counts, and a 100,000-grade CSV import on SQLite and PostgreSQL
(bench/imports.py). Prints and writes bench/RESULTS.md."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event

from bench import audit, cluster, imports, scale
from bench.fanout import FanoutResult, run_fanout
from bench.load import LoadResult, alternate, run_load
from bench.process import Server, graphql_body
from bench.server import STUDENTS_QUERY

ROOT = Path(__file__).resolve().parents[1]
TYPENAME_QUERY = "{ __typename }"
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


def check_identical(server: Server) -> int:
    graphql = httpx.post(
        server.url + "/graphql",
        content=graphql_body(STUDENTS_QUERY),
        headers={"Content-Type": "application/json"},
    ).content
    handwritten = httpx.get(server.url + "/bench/handwritten").content
    if graphql != handwritten:
        raise SystemExit(
            "GraphQL and hand-written responses differ: the comparison is void"
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
        engine = app.state.services.database.engine.sync_engine

        def count(
            conn: Any,
            cursor: Any,
            statement: str,
            *args: Any,
            seen: list[str] = statements,
        ) -> None:
            if (
                statement.lstrip()
                .upper()
                .startswith(("SELECT", "INSERT", "UPDATE", "DELETE"))
            ):
                seen.append(statement)

        async with LifespanManager(app):
            event.listen(engine, "before_cursor_execute", count)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://127.0.0.1"
            ) as c:
                response = await c.post("/graphql", json={"query": query})
                assert "errors" not in response.json(), response.text
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

    server = Server(database)
    try:
        size = check_identical(server)
        cases: dict[str, LoadResult] = {}
        plan = [
            ("graphql students", server.url + "/graphql", graphql_body(STUDENTS_QUERY)),
            ("hand-written students", server.url + "/bench/handwritten", None),
            (
                "graphql __typename",
                server.url + "/graphql",
                graphql_body(TYPENAME_QUERY),
            ),
            (
                "raw starlette json",
                server.url + "/bench/raw",
                graphql_body(TYPENAME_QUERY),
            ),
        ]
        for name, url, body in plan:
            run_load(url, body=body, seconds=2, connections=args.connections)  # warm-up
            cases[name] = run_load(
                url, body=body, seconds=args.seconds, connections=args.connections
            )
            r = cases[name]
            print(
                f"{name:24} {r.requests_per_s:10.1f} req/s  p50 {r.p50_ms:7.2f} ms  "
                f"p99 {r.p99_ms:7.2f} ms  errors {r.errors}",
                flush=True,
            )
    finally:
        server.stop()
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
        cases["graphql students"].requests_per_s
        / cases["hand-written students"].requests_per_s
    )
    typename_ratio = (
        cases["graphql __typename"].requests_per_s
        / cases["raw starlette json"].requests_per_s
    )
    overhead = 1 - (
        cases["README query, monitoring on"].requests_per_s
        / cases["README query, monitoring off"].requests_per_s
    )
    print(f"monitoring overhead: {overhead:.1%} slower (target <= 10%)")
    print(f"ratio students: {students_ratio:.2f} (target >= 0.5)")
    print(f"ratio __typename: {typename_ratio:.2f} (target >= 0.5)")
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
        f"Load: {tool}, {args.connections} connections, {args.seconds:g} s per case after a "
        "2 s warm-up, against one uvicorn worker on a SQLite database seeded with 1,000 "
        "students x 20 grades (seed 42). Both sides of each pair run in the same server.",
        "",
        "| case | requests/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {name} | {r.requests_per_s:.1f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} |"
            for name, r in cases.items()
        ),
        "",
        f"- `students(first: 100) {{ grades {{ subject score }} }}` against a hand-written "
        f"handler with byte-identical JSON ({size:,} bytes): **{students_ratio:.2f}** "
        "(target >= 0.5).",
        f"- `{{ __typename }}` against a raw Starlette JSON endpoint: **{typename_ratio:.2f}** "
        "(target >= 0.5).",
        f"- Monitoring overhead on the README's students query: **{overhead:.1%}** slower "
        "with monitoring on than off (target <= 10%).",
        audit.bullet(audit_overhead),
        f"- Fan-out: {fanout.subscribers} `metrics(intervalMs: 1000)` subscribers on one "
        f"worker ({fanout.connected} connected), {fanout.messages} snapshots in "
        f"{args.fanout_seconds:g} s: delivery lag p50 {fanout.p50_ms:.1f} ms, p99 "
        f"**{fanout.p99_ms:.1f} ms** (target <= 250 ms), {fanout.errors} errors, "
        f"server CPU {fanout.server_cpu_percent:.0f}% of one core.",
        "- SQL statements per request (cold caches): "
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
