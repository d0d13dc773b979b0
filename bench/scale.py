"""The data-at-scale case of `make bench` (`python -m bench --only scale`): GradePulse
on the 50,000 x 20 data set (seed 42), each figure beside the same one on the
1,000 x 20 set, on SQLite and, with BENCH_DATABASE_URL (or TEST_DATABASE_URL), on
PostgreSQL databases of its own; against uvicorn servers of the bench app.

- Cold: a fresh server's caches hold nothing of the data asked: it has opened its
  database connection and served the same document once, on other data (a student
  of another grade level, another grade level and subject), so that what is
  measured is the data's cost, not the first parse of a document or statement. The median over 3 fresh
  servers.
- Warm classAnalytics: the median of repeats once the answer is cached.
- Pages of 20 students and of 20 grades: the first and the 500th (reached by walking
  the cursors; the 1,000-student set has 50 pages of students, so its last), each the
  median of repeats made in alternation.
- Writes: gradeAdd (median of sequential requests) and a 5,000-row gradesAdd (median
  of 3, per row): the large set's cost against the small one's.
- Memory: the server's RSS after those reads with its caches full (10 more pages of
  100 students' analytics), and its peak (VmHWM) at the end, after the writes.
- The seed's time, as `python -m db.seed` prints it.

The servers' operation timeout is raised to 60 s, so that a slow figure is measured
rather than cut off at the default 5 s."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

from bench.cluster import postgres_database
from bench.process import Server
from db.seed import generate

ROOT = Path(__file__).resolve().parents[1]
LARGE = 50_000
SMALL = 1_000
GRADES_PER_STUDENT = 20
PAGE = 20
DEEP_PAGE = 500
REPEATS = 15
WARM_REPEATS = 20
ADD_REPEATS = 30
BATCH_ROWS = 5_000
BATCH_REPEATS = 3
COLD_SERVERS = 3  # a cold figure is the median over this many fresh servers
CACHE_FILL_PAGES = 10
OPERATION_TIMEOUT_S = "60"
JSON = {"Content-Type": "application/json"}

# The targets (data at scale).
SEED_TARGET_S = 30.0
CLASS_COLD_TARGET_S = 1.0
CLASS_WARM_TARGET_S = 0.005
STUDENT_COLD_TARGET_S = 0.020
PAGE_COLD_TARGET_S = 0.200
AT_RISK_COLD_TARGET_S = 0.200
DEPTH_TARGET = 1.2  # the deep page against the first
WRITE_TARGET = 1.2  # a write on the large set against the small one
RSS_TARGET_MB = 300.0

CLASS_FIELDS = (
    "studentCount gradeCount mean median stdDev letters { a b c d f } "
    "top { studentId average }"
)
CLASS_DOCUMENT = (
    "query Class($level: Int, $subject: String) { classAnalytics(gradeLevel: $level, "
    f"subject: $subject) {{ {CLASS_FIELDS} }} }}"
)


@dataclass(frozen=True)
class Cold:
    """A document measured with `variables` on a server whose caches hold nothing
    of that data: the server has served the same document once before, with
    `primer` (other data), so that parsing and planning it are not counted."""

    document: str
    variables: dict[str, Any]
    primer: dict[str, Any]


_OTHER_CLASS = {"level": 1, "subject": "Art"}
STUDENT = "S00042"


def _other_level(student_id: str) -> str:
    """A student of another grade level than `student_id`'s, in both data sets (the
    seed's first students are the same whatever the count)."""
    students, _ = generate(100, GRADES_PER_STUDENT, 42)
    levels = {row["student_id"]: row["grade_level"] for row in students}
    return next(s for s, level in levels.items() if level != levels[student_id])


CLASS_QUERIES = {
    "classAnalytics": Cold(CLASS_DOCUMENT, {}, _OTHER_CLASS),
    "classAnalytics(gradeLevel: 9)": Cold(CLASS_DOCUMENT, {"level": 9}, _OTHER_CLASS),
    'classAnalytics(subject: "Math")': Cold(
        CLASS_DOCUMENT, {"subject": "Math"}, _OTHER_CLASS
    ),
}
OTHER_COLD = {
    "studentAnalytics": Cold(
        "query One($id: String!) { studentAnalytics(studentId: $id) "
        "{ average letter gpa trendPerMonth percentile atRisk riskReasons } }",
        {"id": STUDENT},
        {"id": _other_level(STUDENT)},
    ),
    "students(first: 100) { analytics }": Cold(
        "query Page($first: Int!) { students(first: $first) { edges { node { "
        "studentId analytics { average letter percentile atRisk } } } } }",
        {"first": 100},
        {"first": 1},  # one student: one level's ranking of twelve
    ),
    "atRiskStudents(first: 20)": Cold(
        "query Risk($level: Int) { atRiskStudents(first: 20, gradeLevel: $level) "
        "{ totalCount edges { node { studentId } } } }",
        {},
        {"level": 1},
    ),
}
OTHER_TARGETS = dict(
    zip(
        OTHER_COLD,
        (STUDENT_COLD_TARGET_S, PAGE_COLD_TARGET_S, AT_RISK_COLD_TARGET_S),
        strict=True,
    )
)
OPEN_QUERY = "{ students(first: 1) { edges { node { studentId } } } }"
ANALYTICS_PAGE = (
    "query Fill($after: String) { students(first: 100, after: $after) { edges { node "
    "{ studentId analytics { average letter percentile atRisk } } } "
    "pageInfo { endCursor } } }"
)
STUDENTS_PAGE = (
    "query Page($after: String) { students(first: 20, after: $after) { edges { node "
    "{ studentId name gradeLevel } } pageInfo { hasNextPage endCursor } } }"
)
GRADES_PAGE = (
    "query Page($after: String) { grades(first: 20, after: $after) { edges { node "
    "{ id studentId subject score recordedAt } } pageInfo { hasNextPage endCursor } } }"
)
GRADE_ADD = (
    "mutation Add($input: GradeAddInput!) { gradeAdd(input: $input) { __typename } }"
)
GRADES_ADD = (
    "mutation Batch($input: [GradeAddInput!]!) { gradesAdd(input: $input) "
    "{ __typename ... on GradesAddSuccess { inserted } } }"
)
SUBJECTS = ("Math", "Science", "English", "History", "Art")

HEADING = "Data at scale on"  # each backend's table in RESULTS.md starts so
# A figure: seconds (or MB, or a ratio), or the error code that answered instead.
Value = float | str


def cases(args: Any, work: Path) -> list[str]:
    """Both backends' tables as RESULTS.md lines (PostgreSQL's skip says why)."""
    large = args.scale_students
    lines = _backend(
        "SQLite",
        {n: f"sqlite:///{work / f'scale-{n}.db'}" for n in (SMALL, large)},
        work,
        seed_target=True,
    )
    database_url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get(
        "TEST_DATABASE_URL"
    )
    if not database_url:
        line = (
            "- Scale case on PostgreSQL skipped: set BENCH_DATABASE_URL (or "
            "TEST_DATABASE_URL)."
        )
        print(line, flush=True)
        return [*lines, line]
    pid = os.getpid()
    with (
        postgres_database(database_url, f"gradepulse_bench_scale_{SMALL}_{pid}") as a,
        postgres_database(database_url, f"gradepulse_bench_scale_{large}_{pid}") as b,
    ):
        lines += _backend("PostgreSQL", {SMALL: a, large: b}, work, seed_target=False)
    return lines


def _backend(
    name: str, urls: dict[int, str], work: Path, *, seed_target: bool
) -> list[str]:
    figures: dict[int, dict[str, Value]] = {}
    for students, url in urls.items():
        print(
            f"scale, {name}: seeding {students:,} students x {GRADES_PER_STUDENT} "
            "grades (seed 42) ...",
            flush=True,
        )
        found: dict[str, Value] = {"seed": _seed(url, students)}
        for label, query in {**CLASS_QUERIES, **OTHER_COLD}.items():
            found[f"{label} cold"] = _median_of(
                [_cold(url, work, query) for _ in range(COLD_SERVERS)]
            )
            print(f"  {label} cold: {_show(found[f'{label} cold'])}", flush=True)
        found.update(_served(url, work, students))
        figures[students] = found
    small, large = figures[SMALL], figures[max(urls)]
    rows = _rows(small, large, seed_target=seed_target)
    lines = [
        "",
        f"{HEADING} {name}: the {max(urls):,} x {GRADES_PER_STUDENT} set "
        f"against the {SMALL:,} x {GRADES_PER_STUDENT} one (seed 42), one uvicorn "
        "worker; cold: caches empty of the data asked (the server has served the same "
        "document once, on other data).",
        "",
        f"| {name} | {SMALL:,} students | {max(urls):,} students | target | |",
        "|---|---:|---:|---|---|",
        *(
            f"| {row.label} | {row.small} | {row.large} | {row.target} | {row.verdict} |"
            for row in rows
        ),
    ]
    print("\n".join(lines), flush=True)
    return lines


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    small: str
    large: str
    target: str
    verdict: str


def _rows(
    small: dict[str, Value], large: dict[str, Value], *, seed_target: bool
) -> list[Row]:
    def at_most(label: str, key: str, target: float | None, unit: str = "s") -> Row:
        shown = _show(small[key], unit), _show(large[key], unit)
        if target is None:
            return Row(label, *shown, "", "")
        met = isinstance(large[key], float) and large[key] <= target
        return Row(label, *shown, f"<= {_limit(target, unit)}", _verdict(met))

    def ratio(label: str, key: str, base: Value, target: float, of: str) -> Row:
        measured = large[key]
        shown = f"<= x{target:g} {of}"
        met = False
        if isinstance(base, float) and isinstance(measured, float) and base > 0:
            shown += f": x{measured / base:.2f}"
            met = measured / base <= target
        return Row(label, _show(small[key]), _show(measured), shown, _verdict(met))

    seed_limit = SEED_TARGET_S if seed_target else None
    rows = [at_most("seed (`python -m db.seed`)", "seed", seed_limit)]
    for label in CLASS_QUERIES:
        rows.append(at_most(f"`{label}` cold", f"{label} cold", CLASS_COLD_TARGET_S))
        rows.append(at_most(f"`{label}` warm", f"{label} warm", CLASS_WARM_TARGET_S))
    for label, target in OTHER_TARGETS.items():
        rows.append(at_most(f"`{label}` cold", f"{label} cold", target))
    for name in ("students", "grades"):
        first, deep = f"{name} page 1", f"{name} deep page"
        numbers = [_show(f[f"{name} deep number"], "") for f in (small, large)]
        label = f"{name}: page {numbers[1]} of {PAGE}"
        if numbers[0] != numbers[1]:
            label += f" (the {SMALL:,} set: page {numbers[0]}, its last)"
        rows.append(at_most(f"{name}: page 1 of {PAGE}", first, None))
        rows.append(ratio(label, deep, large[first], DEPTH_TARGET, "of page 1"))
    for key in ("gradeAdd", f"gradesAdd of {BATCH_ROWS:,}, per row"):
        of = f"of the {SMALL:,} set's"
        rows.append(ratio(f"`{key}`", key, small[key], WRITE_TARGET, of))
    rows.append(
        at_most("server RSS after the reads, caches full", "rss", RSS_TARGET_MB, "MB")
    )
    rows.append(at_most("server peak RSS, after the writes too", "peak", None, "MB"))
    return rows


def _verdict(met: bool) -> str:
    return "MET" if met else "MISSED"


def _show(value: Value, unit: str = "s") -> str:
    if isinstance(value, str):
        return value
    if unit == "MB":
        return f"{value:.0f} MB"
    if unit != "s":
        return f"{value:g}"
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 0.001:
        return f"{value * 1000:.2f} ms"
    return f"{value * 1_000_000:.1f} µs"


def _limit(target: float, unit: str) -> str:
    if unit == "s":
        return f"{target:g} s" if target >= 1 else f"{target * 1000:g} ms"
    return f"{target:g} {unit}"


# --- measuring -----------------------------------------------------------------------


def _seed(url: str, students: int) -> Value:
    """`python -m db.seed`'s own figure for the set."""
    done = subprocess.run(
        [sys.executable, "-m", "db.seed", "--students", str(students)]
        + ["--grades-per-student", str(GRADES_PER_STUDENT), "--seed", "42"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url},
        check=True,
        capture_output=True,
        text=True,
    )
    found = re.search(r" in (\d+\.\d+) s$", done.stdout.strip())
    if found is None:
        raise SystemExit(f"python -m db.seed printed no time: {done.stdout!r}")
    return float(found.group(1))


def _start(url: str, work: Path) -> Server:
    return Server(
        work / "scale.db",  # where the server's log goes; the data is at `url`
        database_url=url,
        OPERATION_TIMEOUT_S=OPERATION_TIMEOUT_S,
        ALERT_LOG_PATH=str(work / "alert-scale.log"),
        COSTS_CSV_PATH=str(work / "costs-scale.csv"),
    )


def _post(
    client: httpx.Client, query: str, variables: dict[str, Any] | None = None
) -> tuple[float, dict[str, Any]]:
    body = orjson.dumps({"query": query, "variables": variables})
    started = time.perf_counter()
    response = client.post("/graphql", content=body, headers=JSON)
    elapsed = time.perf_counter() - started
    answer: dict[str, Any] = response.json()
    return elapsed, answer


def _timed(
    client: httpx.Client,
    query: str,
    variables: dict[str, Any] | None = None,
    success: str | None = None,
) -> Value:
    """Seconds for one request, or the code of the error that answered it (or the
    result's __typename, when it is not `success`)."""
    elapsed, answer = _post(client, query, variables)
    if answer.get("errors"):
        return str(answer["errors"][0].get("extensions", {}).get("code", "ERROR"))
    if success is not None:
        typename = next(iter(answer["data"].values()))["__typename"]
        if typename != success:
            return str(typename)
    return elapsed


def _median(measure: Callable[[], Value], times: int) -> Value:
    values = []
    for _ in range(times):
        value = measure()
        if isinstance(value, str):
            return value
        values.append(value)
    return statistics.median(values)


def _median_of(values: list[Value]) -> Value:
    """The median, or the first error among `values`."""
    errors = [value for value in values if isinstance(value, str)]
    seconds = [value for value in values if isinstance(value, float)]
    return errors[0] if errors else statistics.median(seconds)


def _cold(url: str, work: Path, cold: Cold) -> Value:
    server = _start(url, work)
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            for query, variables in ((OPEN_QUERY, None), (cold.document, cold.primer)):
                opened = _timed(client, query, variables)
                if isinstance(opened, str):
                    return opened
            return _timed(client, cold.document, cold.variables)
    finally:
        server.stop()


def _served(url: str, work: Path, students: int) -> dict[str, Value]:
    """The warm, paging, memory and write figures, on one server."""
    found: dict[str, Value] = {}
    server = _start(url, work)
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            for label, cold in CLASS_QUERIES.items():
                found[f"{label} warm"] = _warm(client, cold.document, cold.variables)
            for label, query in (("students", STUDENTS_PAGE), ("grades", GRADES_PAGE)):
                found.update(_pages(client, label, query))
            for cold in OTHER_COLD.values():
                _timed(client, cold.document, cold.variables)
            after = None
            for _ in range(CACHE_FILL_PAGES):
                _, answer = _post(client, ANALYTICS_PAGE, {"after": after})
                after = answer["data"]["students"]["pageInfo"]["endCursor"]
            process = psutil.Process(server.process.pid)
            found["rss"] = process.memory_info().rss / 2**20
            print(f"  caches full: RSS {found['rss']:.0f} MB", flush=True)
            found.update(_writes(client, students))
            found["peak"] = _peak_mb(server.process.pid)
    finally:
        server.stop()
    return found


def _warm(client: httpx.Client, query: str, variables: dict[str, Any]) -> Value:
    first = _timed(client, query, variables)  # cold here too: it fills the cache
    if isinstance(first, str):
        return first
    return _median(lambda: _timed(client, query, variables), WARM_REPEATS)


def _pages(client: httpx.Client, label: str, query: str) -> dict[str, Value]:
    """Page 1 and page DEEP_PAGE (or the last) of a connection; only those two are
    timed, by the median of REPEATS requests each."""
    after: str | None = None
    number = 1
    while number < DEEP_PAGE:
        _, answer = _post(client, query, {"after": after})
        info = next(iter(answer["data"].values()))["pageInfo"]
        if not info["hasNextPage"]:
            break
        after = info["endCursor"]
        number += 1
    # In alternation, so that a change in the machine's speed falls on both.
    pairs = [
        (
            _timed(client, query, {"after": None}),
            _timed(client, query, {"after": after}),
        )
        for _ in range(REPEATS)
    ]
    first, deep = (_median_of([pair[i] for pair in pairs]) for i in (0, 1))
    print(f"  {label}: page 1 {_show(first)}, page {number} {_show(deep)}", flush=True)
    return {
        f"{label} page 1": first,
        f"{label} deep page": deep,
        f"{label} deep number": float(number),
    }


def _writes(client: httpx.Client, students: int) -> dict[str, Value]:
    def grade(n: int) -> dict[str, Any]:
        return {
            "studentId": f"S{n % min(students, SMALL) + 1:05d}",
            "subject": SUBJECTS[n % len(SUBJECTS)],
            "score": float(50 + n % 50),
            "maxScore": 100.0,
            "recordedAt": f"2026-06-{1 + n % 28:02d}T09:{n % 60:02d}:00Z",
        }

    numbers = iter(range(10**9))
    one = _median(
        lambda: _timed(
            client, GRADE_ADD, {"input": grade(next(numbers))}, "GradeAddSuccess"
        ),
        ADD_REPEATS,
    )
    batch = _median(
        lambda: _timed(
            client,
            GRADES_ADD,
            {"input": [grade(next(numbers)) for _ in range(BATCH_ROWS)]},
            "GradesAddSuccess",
        ),
        BATCH_REPEATS,
    )
    per_row = batch / BATCH_ROWS if isinstance(batch, float) else batch
    print(f"  gradeAdd {_show(one)}, gradesAdd per row {_show(per_row)}", flush=True)
    return {"gradeAdd": one, f"gradesAdd of {BATCH_ROWS:,}, per row": per_row}


def _peak_mb(pid: int) -> Value:
    """The process's peak RSS (VmHWM, Linux)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "n/a"
    found = re.search(r"^VmHWM:\s+(\d+) kB$", status, re.MULTILINE)
    return int(found.group(1)) / 1024 if found else "n/a"


def update_results(path: Path, lines: list[str]) -> None:
    """Put this case's tables into an existing RESULTS.md in place of an earlier
    run's (or at its end), and leave every other line as it is."""
    old = path.read_text().splitlines()
    kept: list[str] = []
    at: int | None = None
    skipping = False
    for line in old:
        if line.startswith(HEADING):
            at = len(kept) if at is None else at
            while kept and not kept[-1]:
                kept.pop()  # the blank line before the heading
                at = min(at, len(kept))
            skipping = True
            continue
        if skipping and (not line or line.startswith("|")):
            continue
        skipping = False
        kept.append(line)
    at = len(kept) if at is None else at
    kept[at:at] = [*lines, ""] if at < len(kept) else lines
    path.write_text("\n".join(kept) + "\n")
