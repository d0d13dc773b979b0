"""Live server: the ways of serving (python app.py, uvicorn --factory, make run) over
TCP."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from gql import Client, gql
from gql.transport.httpx import HTTPXAsyncTransport

from tests.factories import ROOT, serve
from tests.factories.cluster import make_run

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
    with serve(
        command, seeded_file.parent, DATABASE_URL=f"sqlite:///{seeded_file}"
    ) as port:
        yield port


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
    assert result.stdout == "the database already has 200 students: nothing seeded\n"
    assert result.stderr == ""


def test_make_run_with_no_settings_serves_the_seeded_sqlite_demo(tmp_path: Path):
    unset: dict[str, str | None] = dict.fromkeys(
        ("DATABASE_URL", "REDIS_URL", "WORKERS", "ENVIRONMENT", "HOST")
    )
    with make_run(tmp_path, **unset) as app:
        body = app.post("{ students(first: 1) { totalCount } }").json()
        health = app.health()

    assert body["data"] == {"students": {"totalCount": 1000}}
    assert health["checks"]["database"]["dialect"] == "sqlite"
    assert health["cluster"] == {
        "workers": [health["worker"]["id"]],
        "redis": "unconfigured",
    }
    assert (tmp_path / "checkout" / "gradepulse.db").is_file()
