"""Helpers of the test_cli_* modules: the installed `gradepulse` script, a server run
as a subprocess on a free port (stopped in a finally), and a few GraphQL calls."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.factories import wait_until_up

ROOT = Path(__file__).resolve().parents[2]
# The console script `make install` puts beside the venv's Python.
GRADEPULSE = Path(sys.executable).parent / "gradepulse"
TIMEOUT_S = 60
STOP_TIMEOUT_S = 20


def environment(**env: str) -> dict[str, str]:
    """This process's environment without the settings a test must choose itself."""
    base = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "DATABASE_URL", "REDIS_URL", "WORKERS")
    }
    return {**base, **env}


def gradepulse(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed script, with no PYTHONPATH: it must find the project itself."""
    return subprocess.run(
        [str(GRADEPULSE), *args],
        cwd=cwd,
        env=environment(**env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


@contextlib.contextmanager
def server(
    command: list[str], workdir: Path, port: int, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`command` (python app.py, gradepulse serve ...) serving on 127.0.0.1:`port`
    until the block ends, in a process group of its own, so that its workers go
    with it; its output in workdir/server.log."""
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=environment(**{"HOST": "127.0.0.1", "PORT": str(port), **env}),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until_up(port, process, timeout=TIMEOUT_S)
            yield process
        finally:
            stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a drained stop; uvicorn stops its workers), then SIGKILL to the
    server's own process group if it hangs (while its leader, not yet reaped, keeps
    the group id ours)."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_S)


def graphql(port: int, query: str, **variables: Any) -> dict[str, Any]:
    response = httpx.post(
        f"http://127.0.0.1:{port}/graphql",
        json={"query": query, "variables": variables},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    return body


def create_student(port: int, student_id: str) -> None:
    body = graphql(
        port,
        "mutation($in: StudentCreateInput!) { studentCreate(input: $in) "
        "{ __typename } }",
        **{
            "in": {
                "studentId": student_id,
                "name": f"Student {student_id}",
                "email": f"{student_id.lower()}@school.example",
                "gradeLevel": 9,
            }
        },
    )
    assert body["data"]["studentCreate"]["__typename"] == "StudentCreateSuccess"


def student_count(port: int) -> int:
    body = graphql(port, "{ students(first: 1) { totalCount } }")
    return int(body["data"]["students"]["totalCount"])


def sqlite_counts(path: Path) -> tuple[int, int]:
    """(students, grades) read with sqlite3 itself."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        students = connection.execute("SELECT count(*) FROM students").fetchone()[0]
        grades = connection.execute("SELECT count(*) FROM grades").fetchone()[0]
    return int(students), int(grades)
