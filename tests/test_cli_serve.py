"""`gradepulse serve`: serves as `python app.py` does (the same function), its options
override HOST, PORT and WORKERS, and it refuses to start with the same one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from db.migrations import head
from tests.factories import free_port
from tests.factories.commands import (
    GRADEPULSE,
    ROOT,
    TIMEOUT_S,
    environment,
    server,
)

PYTHON_APP = [sys.executable, str(ROOT / "app.py")]


def test_options_override_host_and_port(tmp_path: Path) -> None:
    port, unused = free_port(), free_port()
    db = tmp_path / "served.db"
    command = [str(GRADEPULSE), "serve", "--host", "127.0.0.1", "--port", str(port)]
    # Were HOST or PORT from the environment used, nothing would answer on `port`
    # (203.0.113.1 is no address of this machine).
    with server(
        command,
        tmp_path,
        port,
        HOST="203.0.113.1",
        PORT=str(unused),
        DATABASE_URL=f"sqlite:///{db}",
    ) as process:
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{unused}/health/live", timeout=5)

    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["worker"]["pid"] == process.pid  # one worker: itself
    assert process.returncode == 0  # SIGTERM drains and exits cleanly
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log
    assert f"Uvicorn running on http://127.0.0.1:{port}" in log
    assert db.exists()  # development migrated it at start


def refusal(command: list[str], workdir: Path, **env: str) -> tuple[int, str, str]:
    done = subprocess.run(
        command,
        cwd=workdir,
        env=environment(PORT=str(free_port()), **env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize(
    ("option", "env", "message"),
    [
        (
            ["--workers", "2"],
            {"WORKERS": "2"},
            "invalid settings: WORKERS: WORKERS above 1 (2) needs REDIS_URL: workers "
            "share budgets, feeds and caches through Redis (set REDIS_URL, or "
            "WORKERS=1)",
        ),
        (
            [],
            {"ENVIRONMENT": "staging"},
            "refusing to start: the database is at migration none, not at the latest "
            f"({head()}): run gradepulse migrate (make migrate) first",
        ),
    ],
)
def test_refuses_to_start_with_the_one_line_python_app_py_gives(
    option: list[str], env: dict[str, str], message: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'refused.db'}"

    # The option in place of the variable it overrides; the rest alike.
    command_env = {name: value for name, value in env.items() if name != "WORKERS"}

    command = refusal(
        [str(GRADEPULSE), "serve", *option], tmp_path, DATABASE_URL=url, **command_env
    )
    alias = refusal(PYTHON_APP, tmp_path, DATABASE_URL=url, **env)

    assert alias == (1, "", message + "\n")
    assert command == alias
