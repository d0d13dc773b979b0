"""Issue 12's speed cases, each a pair measured in one run with the sides alternating:

- the students query (100 students with name, level and their grades' subject and
  score) against the bare baseline (bench/bare.py, an app of its own), on SQLite and
  on PostgreSQL (with BENCH_DATABASE_URL or TEST_DATABASE_URL); beside them the same
  answer built by the database (SQL-built JSON), GradePulse with its plans switched
  off (QUERY_PLANS=false) and, on SQLite, the in-app hand-written handler;
- the README's students query against a bare handler of the same statements that
  reads the same analytics from a dict;
- both of those also against bare handlers that send the statements on the driver
  (no SQLAlchemy), as GradePulse's hot reads do: a leaner baseline, no target;
- `{ __typename }` against a bare Starlette JSON route;
- the students query's p99 against twice its p50.

`python -m bench --only speed` runs these alone and replaces their section of
bench/RESULTS.md."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.bare import BARE
from bench.cluster import seeded_postgres
from bench.load import LoadResult, alternate
from bench.process import Server, graphql_body
from bench.server import STUDENTS_QUERY

TYPENAME_QUERY = "{ __typename }"
README_QUERY = (
    "query Students { students(first: 5, gradeLevel: 9, orderBy: NAME) { totalCount "
    "pageInfo { hasNextPage endCursor } edges { node { studentId name gradeLevel "
    'grades(subject: "Math") { subject score percentage recordedAt } '
    "analytics { average letter gpa trendPerMonth percentile atRisk riskReasons } } } } }"
)
MIN_ROUND_REQUESTS = 500
TARGET_STUDENTS = 0.7
TARGET_README = 0.7
TARGET_TYPENAME = 0.3
HEADING = "## Speed (issue 12)"


def _post(url: str, body: bytes | None = None) -> bytes:
    response = httpx.post(
        url, content=body or b"{}", headers={"Content-Type": "application/json"}
    )
    response.raise_for_status()
    return response.content


def _data(raw: bytes) -> Any:
    return orjson.loads(raw)["data"]


@contextmanager
def _servers(
    database: Path, database_url: str | None, analytics: Path
) -> Iterator[dict[str, Server]]:
    with ExitStack() as stack:
        servers = {
            "app": Server(database, database_url=database_url),
            "general": Server(database, database_url=database_url, QUERY_PLANS="false"),
        }
        for server in servers.values():
            stack.callback(server.stop)
        # The bare app reads the analytics the app answers (both sides cached).
        readme = _post(servers["app"].url + "/graphql", graphql_body(README_QUERY))
        edges = _data(readme)["students"]["edges"]
        analytics.write_bytes(
            orjson.dumps(
                {e["node"]["studentId"]: e["node"]["analytics"] for e in edges}
            )
        )
        servers["bare"] = Server(
            database,
            factory=BARE,
            database_url=database_url,
            BARE_ANALYTICS=str(analytics),
        )
        stack.callback(servers["bare"].stop)
        yield servers


def _check(servers: dict[str, Server]) -> int:
    """Every side of a pair gives the same data, or the comparison is void."""
    app, bare = servers["app"].url, servers["bare"].url
    students = _post(app + "/graphql", graphql_body(STUDENTS_QUERY))
    for other in (
        _post(servers["general"].url + "/graphql", graphql_body(STUDENTS_QUERY)),
        _post(bare + "/students"),
        _post(bare + "/students-sql-json"),
        _post(bare + "/students-driver"),
    ):
        if _data(other) != _data(students):
            raise SystemExit("the students answers differ: the comparison is void")
    readme = _post(app + "/graphql", graphql_body(README_QUERY))
    for other in (_post(bare + "/readme"), _post(bare + "/readme-driver")):
        if _data(readme) != _data(other):
            raise SystemExit("the README answers differ: the comparison is void")
    return len(students)


def _pairs(
    servers: dict[str, Server], sqlite: bool
) -> list[dict[str, tuple[str, bytes | None]]]:
    app, general, bare = (servers[k].url for k in ("app", "general", "bare"))
    students: dict[str, tuple[str, bytes | None]] = {
        "graphql students": (app + "/graphql", graphql_body(STUDENTS_QUERY)),
        "bare students": (bare + "/students", None),
        "bare students, JSON built in SQL": (bare + "/students-sql-json", None),
        "bare students, on the driver": (bare + "/students-driver", None),
        "graphql students, plans off": (
            general + "/graphql",
            graphql_body(STUDENTS_QUERY),
        ),
    }
    if sqlite:
        students["hand-written students (GradePulse's layers)"] = (
            app + "/bench/handwritten",
            None,
        )
    return [
        students,
        {
            "graphql README query": (app + "/graphql", graphql_body(README_QUERY)),
            "bare README query": (bare + "/readme", None),
            "bare README query, on the driver": (bare + "/readme-driver", None),
        },
        {
            "graphql __typename": (app + "/graphql", graphql_body(TYPENAME_QUERY)),
            "bare starlette json": (bare + "/raw", graphql_body(TYPENAME_QUERY)),
        },
    ]


def _measure(
    servers: dict[str, Server], sqlite: bool, args: Any, suffix: str
) -> dict[str, LoadResult]:
    found: dict[str, LoadResult] = {}
    for pair in _pairs(servers, sqlite):
        measured = alternate(
            {label: url for label, (url, _) in pair.items()},
            body=None,
            bodies={label: body for label, (_, body) in pair.items()},
            seconds=args.seconds,
            connections=args.connections,
            min_requests=MIN_ROUND_REQUESTS,
        )
        for label, result in measured.items():
            name = f"{label}{suffix}"
            found[name] = result
            print(
                f"{name:44} {result.requests_per_s:10.1f} req/s  p50 "
                f"{result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  errors "
                f"{result.errors}",
                flush=True,
            )
    return found


def cases(args: Any, work: Path, database: Path) -> list[str]:
    """Measure every pair (PostgreSQL when a URL is set) and return the section's
    lines for bench/RESULTS.md."""
    found: dict[str, LoadResult] = {}
    sizes: dict[str, int] = {}
    with _servers(database, None, work / "analytics-sqlite.json") as servers:
        sizes["SQLite"] = _check(servers)
        found.update(_measure(servers, True, args, ""))
    url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    notes = []
    if url:
        with (
            seeded_postgres(url) as pg_url,
            _servers(database, pg_url, work / "analytics-pg.json") as servers,
        ):
            sizes["PostgreSQL"] = _check(servers)
            found.update(_measure(servers, False, args, " (PostgreSQL)"))
    else:
        notes.append(
            "- PostgreSQL pairs skipped: set BENCH_DATABASE_URL (or TEST_DATABASE_URL)."
        )
    return lines(found, sizes, notes, args)


def _ratio(found: dict[str, LoadResult], a: str, b: str) -> float | None:
    if a in found and b in found:
        return found[a].requests_per_s / found[b].requests_per_s
    return None


def _verdict(value: float | None, target: float) -> str:
    if value is None:
        return "not measured"
    return f"**{value:.2f}** (target >= {target:g}: {'met' if value >= target else 'MISSED'})"


def lines(
    found: dict[str, LoadResult], sizes: dict[str, int], notes: list[str], args: Any
) -> list[str]:
    rows = [
        f"| {name} | {r.requests_per_s:.1f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} |"
        for name, r in found.items()
    ]
    out = [
        HEADING,
        "",
        f"One uvicorn worker per server, {args.connections} connections, each pair "
        "alternating (a, b, a, b) in one run with rounds of at least "
        f"{MIN_ROUND_REQUESTS} requests; 1,000 students x 20 grades (seed 42). The "
        "bare baselines are an app of their own (bench/bare.py, no GradePulse code). "
        "Students answer: "
        + ", ".join(f"{size:,} bytes on {where}" for where, size in sizes.items())
        + ".",
        "",
        "| case | requests/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
    ]
    for suffix, where in (("", "SQLite"), (" (PostgreSQL)", "PostgreSQL")):
        if f"graphql students{suffix}" not in found:
            continue
        students = _ratio(found, f"graphql students{suffix}", f"bare students{suffix}")
        readme = _ratio(
            found, f"graphql README query{suffix}", f"bare README query{suffix}"
        )
        typename = _ratio(
            found, f"graphql __typename{suffix}", f"bare starlette json{suffix}"
        )
        sql_json = _ratio(
            found,
            f"bare students, JSON built in SQL{suffix}",
            f"bare students{suffix}",
        )
        planned = _ratio(
            found, f"graphql students{suffix}", f"graphql students, plans off{suffix}"
        )
        driver_students = _ratio(
            found, f"graphql students{suffix}", f"bare students, on the driver{suffix}"
        )
        driver_readme = _ratio(
            found,
            f"graphql README query{suffix}",
            f"bare README query, on the driver{suffix}",
        )
        tail = found[f"graphql students{suffix}"]
        tail_ratio = tail.p99_ms / tail.p50_ms
        out += [
            f"- {where}: students query against the bare baseline "
            f"{_verdict(students, TARGET_STUDENTS)}; README query against its bare "
            f"handler {_verdict(readme, TARGET_README)}; `{{ __typename }}` against a "
            f"bare Starlette route {_verdict(typename, TARGET_TYPENAME)}.",
            f"- {where}: the students query's p99 is {tail_ratio:.2f} x its p50 "
            f"(target <= 2: {'met' if tail_ratio <= 2 else 'MISSED'}); plans on "
            f"against off: {planned:.2f} x the requests/s; the bare baseline with its "
            f"JSON built in SQL: {sql_json:.2f} x the one built in Python.",
            f"- {where}, against the leaner baselines that skip SQLAlchemy and send "
            "the same statements on the driver (as GradePulse's reads do; no target): "
            f"students query {driver_students:.2f}, README query {driver_readme:.2f}.",
        ]
    out += notes
    out.append("")
    return out


def update_results(path: Path, section: list[str], heading: str = HEADING) -> None:
    """Replace the section under `heading` in RESULTS.md (or add it at the end)."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(heading) + r"\n.*?(?=\n## |\Z)", re.S)
    block = "\n".join(section).rstrip() + "\n"
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block
    path.write_text(text)
