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
from sqlalchemy import event
from sqlalchemy.engine import Engine

from bench import audit, cluster, imports, scale, slowsub, soak, speed
from bench.fanout import CLIENT_PROCESSES, run_fanout
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
    parser.add_argument(
        "--subscribers",
        type=int,
        nargs="+",
        default=[1000, 5000],
        help="fan-out cases (issue 12: p99 <= 100 ms at 1,000, <= 500 ms at 5,000)",
    )
    parser.add_argument("--fanout-seconds", type=float, default=10.0)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument(
        "--only",
        choices=[
            "audit",
            "cluster",
            "fanout",
            "held",
            "import",
            "scale",
            "slowsub",
            "soak",
            "speed",
        ],
        help="run one case and replace only its lines in RESULTS.md",
    )
    parser.add_argument(
        "--soak-minutes", type=int, default=10, help="issue 13: 10 minutes"
    )
    parser.add_argument(
        "--slowsub-subscribers",
        type=int,
        default=500,
        help="the other subscribers of the slow-subscriber pair",
    )
    parser.add_argument("--slowsub-seconds", type=float, default=20.0)
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
    if args.only in ("soak", "held"):
        if args.only == "soak":
            section = soak.soak_section(database, args.soak_minutes)
            heading = soak.SOAK_HEADING
        else:
            section = soak.held_section(database)
            heading = soak.HELD_HEADING
        shutil.rmtree(work, ignore_errors=True)
        print("\n".join(section))
        speed.update_results(args.results, section, heading=heading)
        print(f"updated {args.results}")
        return
    if args.only == "slowsub":
        section = slowsub.measure(
            database, args.slowsub_subscribers, args.slowsub_seconds
        )
        shutil.rmtree(work, ignore_errors=True)
        print("\n".join(section))
        speed.update_results(args.results, section, heading=slowsub.HEADING)
        print(f"updated {args.results}")
        return
    if args.only == "speed":
        section = speed.cases(args, work, database)
        shutil.rmtree(work, ignore_errors=True)
        speed.update_results(args.results, section)
        print(f"updated {args.results}")
        return
    if args.only == "fanout":
        section = fanout_cases(args, database)
        shutil.rmtree(work, ignore_errors=True)
        speed.update_results(args.results, section, heading=FANOUT_HEADING)
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

    speed_lines = speed.cases(args, work, database)
    cases: dict[str, LoadResult] = {}
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
    fanout_lines = fanout_cases(args, database)
    slowsub_lines = slowsub.measure(
        database, args.slowsub_subscribers, args.slowsub_seconds
    )
    cluster_lines = cluster.cases(args, work, database)
    scale_lines = scale.cases(args, work)
    print("importing grades from CSV ...", flush=True)
    found_imports = imports.measure(database, args.import_rows, work)
    print(f"soak ({args.soak_minutes} minutes) ...", flush=True)
    soak_lines = soak.soak_section(database, args.soak_minutes)
    print("load held ...", flush=True)
    held_lines = soak.held_section(database)
    shutil.rmtree(work, ignore_errors=True)

    overhead = 1 - (
        cases["README query, monitoring on"].requests_per_s
        / cases["README query, monitoring off"].requests_per_s
    )
    print(f"monitoring overhead: {overhead:.1%} slower (target <= 10%)")
    print("\n".join(speed_lines))
    print(f"statements: {counts}")
    for figures in found_imports:
        print(imports.summary(figures, args.import_rows))
    write_results(
        args,
        cases,
        counts,
        imports.bullets(found_imports, args.import_rows),
        overhead,
        audit_overhead,
        cluster_lines
        + scale_lines
        + [
            "",
            *speed_lines,
            *fanout_lines,
            *slowsub_lines,
            *soak_lines,
            *held_lines,
        ],
    )


FANOUT_HEADING = "## Fan-out (issue 12)"
FANOUT_TARGETS = {1000: 100.0, 5000: 500.0}


def fanout_cases(args: Any, database: Path) -> list[str]:
    """N `metrics` subscribers at 1 Hz on one worker, for each N asked; the clients
    run in several processes (bench/fanout.py)."""
    lines = [
        FANOUT_HEADING,
        "",
        "`subscription { metrics(intervalMs: 1000) { at requestsTotal } }` over "
        "graphql-transport-ws on one worker, the clients in "
        f"{CLIENT_PROCESSES} processes on the same machine; lag is a frame's receipt "
        "time minus its snapshot's time.",
        "",
    ]
    for subscribers in args.subscribers:
        print(f"fan-out: {subscribers} metrics subscribers at 1 Hz ...", flush=True)
        server = Server(
            database,
            SAMPLE_INTERVAL_MS="1000",
            MAX_SUBSCRIPTIONS=str(max(10_000, subscribers)),
        )
        try:
            result = run_fanout(
                server.url.replace("http://", "ws://") + "/graphql",
                server.process.pid,
                subscribers,
                args.fanout_seconds,
            )
        finally:
            server.stop()
        target = FANOUT_TARGETS.get(subscribers)
        verdict = (
            f" (target <= {target:g} ms: "
            f"{'met' if result.p99_ms <= target and not result.errors else 'MISSED'})"
            if target
            else ""
        )
        line = (
            f"- {result.subscribers} subscribers ({result.connected} connected), "
            f"{result.messages} snapshots in {args.fanout_seconds:g} s: lag p50 "
            f"{result.p50_ms:.1f} ms, p99 **{result.p99_ms:.1f} ms**{verdict}, "
            f"{result.errors} errors, server CPU {result.server_cpu_percent:.0f}% of "
            "one core."
        )
        print(line, flush=True)
        lines.append(line)
    lines.append("")
    return lines


def write_results(
    args: Any,
    cases: dict[str, LoadResult],
    counts: dict[str, int],
    import_lines: list[str],
    overhead: float,
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
        "(seed 42). The monitoring and audit pairs run in two servers of the app; "
        "issue 12's speed pairs against bare baselines are in their own section below.",
        "",
        "| case | requests/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {name} | {r.requests_per_s:.1f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} |"
            for name, r in cases.items()
        ),
        "",
        f"- Monitoring overhead on the README's students query: **{overhead:.1%}** slower "
        "with monitoring on than off (target <= 10%).",
        audit.bullet(audit_overhead),
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
