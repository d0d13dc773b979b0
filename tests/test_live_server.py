"""Live server: the two ways of serving (python app.py, uvicorn --factory) over TCP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gql import Client, gql
from gql.transport.httpx import HTTPXAsyncTransport

ROOT = Path(__file__).resolve().parents[1]

README_QUERY = gql(
    """
    query Students {
      students(first: 5, gradeLevel: 9, orderBy: NAME) {
        totalCount
        edges { node { studentId name gradeLevel grades(subject: "Math") { subject score }
                       analytics { average letter } } }
      }
    }
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}")
        try:
            if (
                httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1).status_code
                == 200
            ):
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("server did not start within 30 s")


@pytest.fixture(scope="module")
def seeded_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("live") / "live.db"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "db.seed",
            "--students",
            "200",
            "--grades-per-student",
            "5",
            "--seed",
            "42",
            "--if-empty",
        ],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": f"sqlite:///{path}"},
        check=True,
        capture_output=True,
    )
    return path


def serve(command: list[str], db: Path) -> Iterator[int]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{db}",
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "PYTHONPATH": str(ROOT),
    }
    process = subprocess.Popen(
        [*command, "--port", str(port)] if command[1] == "-m" else command,
        cwd=db.parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_up(port, process)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=15)


@pytest.fixture(params=["python app.py", "uvicorn --factory"])
def live_port(request: pytest.FixtureRequest, seeded_file: Path) -> Iterator[int]:
    if request.param == "python app.py":
        command = [sys.executable, str(ROOT / "app.py")]
    else:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "app:create_app",
            "--factory",
            "--ws",
            "websockets-sansio",
            "--app-dir",
            str(ROOT),
        ]
    yield from serve(command, seeded_file)


async def test_readme_query_over_tcp(live_port: int, seeded_file: Path) -> None:
    transport = HTTPXAsyncTransport(url=f"http://127.0.0.1:{live_port}/graphql")
    async with Client(transport=transport) as session:
        result = await session.execute(README_QUERY)

    students = result["students"]
    names = [edge["node"]["name"] for edge in students["edges"]]
    assert students["totalCount"] > 5
    assert names == sorted(names)
    assert {edge["node"]["gradeLevel"] for edge in students["edges"]} == {9}
    for edge in students["edges"]:
        assert {g["subject"] for g in edge["node"]["grades"]} <= {"Math"}
        assert edge["node"]["analytics"]["letter"] in {"A", "B", "C", "D", "F"}


def test_seed_if_empty_leaves_a_seeded_database_alone(seeded_file: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "db.seed", "--if-empty"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": f"sqlite:///{seeded_file}"},
        capture_output=True,
        text=True,
        check=True,
    )

    import sqlite3

    with sqlite3.connect(seeded_file) as conn:
        assert conn.execute("SELECT count(*) FROM students").fetchone() == (200,)
        assert conn.execute("SELECT count(*) FROM grades").fetchone() == (1000,)
    assert "200" in result.stdout + result.stderr
