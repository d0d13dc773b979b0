"""Load generation: wrk when installed, otherwise a small asyncio keep-alive client."""

from __future__ import annotations

import asyncio
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class LoadResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    tool: str


MAX_ROUND_S = 30.0  # a round's length when `min_requests` asks for a longer one


def alternate(
    urls: dict[str, str],
    *,
    body: bytes | None,
    seconds: float,
    connections: int,
    bodies: dict[str, bytes | None] | None = None,
    min_requests: int = 0,
) -> dict[str, LoadResult]:
    """Cases on servers that are up at once (label -> URL): a warm-up of each, then
    two rounds in alternation (a, b, a, b) of `seconds` / 2 each, so that drift in
    the machine's speed falls on all; each figure is its rounds' mean (p99: the worse
    round). A case's rounds last long enough for `min_requests` each (at its warm-up
    rate, at most MAX_ROUND_S); `bodies` gives a case a body of its own."""
    bodies = bodies or {}
    round_s: dict[str, float] = {}
    for label, url in urls.items():
        warm = run_load(
            url, body=bodies.get(label, body), seconds=2, connections=connections
        )
        needed = min_requests / max(warm.requests_per_s, 1e-9)
        round_s[label] = min(max(seconds / 2, needed), MAX_ROUND_S)
    rounds: dict[str, list[LoadResult]] = {label: [] for label in urls}
    for _ in range(2):
        for label, url in urls.items():
            rounds[label].append(
                run_load(
                    url,
                    body=bodies.get(label, body),
                    seconds=round_s[label],
                    connections=connections,
                )
            )
    return {
        label: LoadResult(
            requests_per_s=statistics.fmean(r.requests_per_s for r in results),
            p50_ms=statistics.fmean(r.p50_ms for r in results),
            p99_ms=max(r.p99_ms for r in results),
            requests=sum(r.requests for r in results),
            errors=sum(r.errors for r in results),
            tool=results[0].tool,
        )
        for label, results in rounds.items()
    }


def run_load(
    url: str, *, body: bytes | None, seconds: float, connections: int
) -> LoadResult:
    if shutil.which("wrk"):
        return _wrk(url, body=body, seconds=seconds, connections=connections)
    return asyncio.run(
        _python_load(url, body=body, seconds=seconds, connections=connections)
    )


def _lua_string(data: bytes) -> str:
    return '"' + "".join(f"\\{byte}" for byte in data) + '"'


def _wrk(
    url: str, *, body: bytes | None, seconds: float, connections: int
) -> LoadResult:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "request.lua"
        if body is not None:
            script.write_text(
                'wrk.method = "POST"\n'
                f"wrk.body = {_lua_string(body)}\n"
                'wrk.headers["Content-Type"] = "application/json"\n'
            )
        else:
            script.write_text('wrk.method = "GET"\n')
        output = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{int(seconds)}s",
                "--latency",
                "-s",
                str(script),
                url,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    rate_line = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total_line = re.search(r"(\d+) requests in", output)
    if rate_line is None or total_line is None:
        raise RuntimeError(f"wrk printed no summary:\n{output}")
    rate = float(rate_line.group(1))
    total = int(total_line.group(1))
    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors += int(match.group(1))
    if match := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    ):
        errors += sum(int(g) for g in match.groups())
    return LoadResult(
        requests_per_s=rate,
        p50_ms=_wrk_latency(output, "50%"),
        p99_ms=_wrk_latency(output, "99%"),
        requests=total,
        errors=errors,
        tool="wrk -t1",
    )


def _wrk_latency(output: str, label: str) -> float:
    match = re.search(rf"^\s*{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


async def _python_load(
    url: str, *, body: bytes | None, seconds: float, connections: int
) -> LoadResult:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    method = "POST" if body is not None else "GET"
    head = (
        f"{method} {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        + ("Content-Type: application/json\r\n" if body is not None else "")
        + f"Content-Length: {len(body or b'')}\r\n\r\n"
    ).encode()
    request = head + (body or b"")
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                writer.write(request)
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                latencies.append((time.perf_counter() - started) * 1000)
                if b" 200 " not in status_line:
                    errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return LoadResult(
        requests_per_s=len(ordered) / elapsed,
        p50_ms=statistics.median(ordered) if ordered else float("nan"),
        p99_ms=ordered[int(0.99 * (len(ordered) - 1))] if ordered else float("nan"),
        requests=len(ordered),
        errors=errors,
        tool="python asyncio client (install wrk for figures above ~3,000 requests/s)",
    )
