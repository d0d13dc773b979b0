"""`python app.py` in processes of its own, as an operator starts it: one (with any
WORKERS), or a cluster of several on one database and one Redis, each on a port of
its own. Every wait is bounded; leaving the block stops them all with SIGTERM (then
SIGKILL to the process group past the bound) and checks their logs hold no traceback."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factories import ROOT, free_port

# A cold `python app.py` imports, migrates (under a database lock) and starts its
# workers in a few seconds; several at once on a busy 2-core machine take longer.
START_TIMEOUT_S = 60.0
# SIGTERM drains: requests in flight get OPERATION_TIMEOUT_S (5 s by default).
STOP_TIMEOUT_S = 30.0


@dataclass
class AppProcess:
    """One `python app.py` (its workers, if WORKERS > 1, are its children)."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    def health(self) -> dict[str, Any]:
        """GET /health on a new connection (with WORKERS > 1, any worker answers)."""
        response = httpx.get(f"{self.url}/health", timeout=10)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def post(
        self, query: str, variables: dict[str, Any] | None = None
    ) -> httpx.Response:
        """POST /graphql on a new connection; the response, whatever its status."""
        return httpx.post(
            f"{self.url}/graphql",
            json={"query": query, "variables": variables},
            timeout=30,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        """SIGTERM to the process (a WORKERS > 1 parent passes it to its workers)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """The exit code once it has exited; AssertionError after `timeout` s."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"app on port {self.port} still running {timeout} s after SIGTERM"
            ) from None

    def kill(self) -> None:
        """SIGKILL to its whole process group (its workers too), and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        _group_ended(self.process.pid, time.monotonic() + 10)


def launch(
    workdir: Path,
    name: str = "app",
    *,
    command: list[str] | None = None,
    **env: str | None,
) -> AppProcess:
    """Start `python app.py` (or `command`) in `workdir` on a free port of 127.0.0.1,
    its output in workdir/<name>.log; `env` overrides the environment (None removes
    a variable). It runs in a process group of its own, so that kill() reaches its
    workers."""
    port = free_port()
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    for variable, value in env.items():
        if value is None:
            environment.pop(variable, None)
        else:
            environment[variable] = value
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:  # the child has its own copy of the descriptor
        process = subprocess.Popen(
            command or [sys.executable, str(ROOT / "app.py")],
            cwd=workdir,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return AppProcess(process, port, log_path)


def wait_ready(app: AppProcess, timeout: float = START_TIMEOUT_S) -> None:
    """Until /health/ready answers 200; AssertionError (with the log) if the process
    exits first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.process.poll() is not None:
            raise AssertionError(
                f"app exited with {app.process.returncode} before it was ready:\n"
                + app.log()
            )
        try:
            if httpx.get(f"{app.url}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"app not ready within {timeout} s:\n" + app.log())


def stop_all(apps: list[AppProcess], timeout: float = STOP_TIMEOUT_S) -> list[int]:
    """SIGTERM to every app at once, then wait for each and what it started
    (together at most `timeout` s); anything still running then is killed. The exit
    codes (-9 for a killed one)."""
    for app in apps:
        app.terminate()
    deadline = time.monotonic() + timeout
    codes = []
    for app in apps:
        try:
            codes.append(app.process.wait(max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            codes.append(-signal.SIGKILL)
        if not _group_ended(app.process.pid, deadline):
            app.kill()
    return codes


def _group_ended(group: int, deadline: float) -> bool:
    """Whether every process of the group has exited by `deadline`."""
    while True:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def assert_clean_logs(apps: list[AppProcess]) -> None:
    for app in apps:
        output = app.log()
        assert "Traceback" not in output, output


@contextlib.contextmanager
def app_process(
    workdir: Path, name: str = "app", **env: str | None
) -> Iterator[AppProcess]:
    """One `python app.py`, ready, until the block ends (then stopped, its log
    checked). The block may stop it itself (terminate and wait) to see how it ends."""
    app = launch(workdir, name, **env)
    try:
        wait_ready(app)
        yield app
    finally:
        stop_all([app])
    assert_clean_logs([app])


@dataclass
class Cluster:
    """Several `python app.py` on one database, one Redis and one REDIS_PREFIX."""

    apps: list[AppProcess]
    workdir: Path

    def __getitem__(self, index: int) -> AppProcess:
        return self.apps[index]

    def __len__(self) -> int:
        return len(self.apps)

    @property
    def alert_log(self) -> Path:
        return self.workdir / "alert.log"

    @property
    def costs_csv(self) -> Path:
        return self.workdir / "costs.csv"

    def wait_for_workers(self, count: int, timeout: float = 15.0) -> list[str]:
        """Until every app's /health lists the same `count` live workers; their ids."""
        deadline = time.monotonic() + timeout
        while True:
            seen = [app.health()["cluster"]["workers"] for app in self.apps]
            if all(len(ids) == count for ids in seen) and all(
                ids == seen[0] for ids in seen
            ):
                workers: list[str] = seen[0]
                return workers
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not {count} workers on every app within {timeout} s: {seen}"
                )
            time.sleep(0.1)


@contextlib.contextmanager
def cluster(
    workdir: Path,
    count: int = 2,
    *,
    database_url: str,
    redis_url: str,
    redis_prefix: str,
    **env: str | None,
) -> Iterator[Cluster]:
    """`count` apps started together (their start-up migrations race, under the
    database lock), ready and seeing each other, until the block ends. They share
    DATABASE_URL, REDIS_URL, REDIS_PREFIX and workdir's alert.log and costs.csv;
    the sampler ticks every 100 ms; `env` overrides for all of them."""
    shared: dict[str, str | None] = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": redis_prefix,
        "ALERT_LOG_PATH": str(workdir / "alert.log"),
        "COSTS_CSV_PATH": str(workdir / "costs.csv"),
        "SAMPLE_INTERVAL_MS": "100",
        "ACCESS_LOG": "false",
        "WORKERS": "1",
        **env,
    }
    apps: list[AppProcess] = []
    try:
        for index in range(count):
            apps.append(launch(workdir, f"app-{index}", **shared))
        for app in apps:
            wait_ready(app)
        running = Cluster(apps, workdir)
        running.wait_for_workers(count)
        yield running
    finally:
        stop_all(apps)
    assert_clean_logs(apps)


# What `make run` would find in a checkout besides the code: data files of earlier runs.
LEFT_OUT = {".git", ".env", ".pytest_cache", "alert.log", "costs.csv"}
DATA_SUFFIXES = (".db", ".db-wal", ".db-shm", ".state.json")
# Set when the suite itself runs under `make test`: not for the make run inside.
OUTER_MAKE = ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")


def checkout_in(workdir: Path) -> Path:
    """workdir/checkout: every top-level entry of the repository (its .venv too) as
    a symlink, without data files, so that `make run` there writes its demo
    database, alert.log and costs.csv into workdir, not into the repository.
    Skips the test unless `make` is there and `make install` is up to date (as
    after `make test`): it would otherwise install into the repository's .venv."""
    checkout = workdir / "checkout"
    checkout.mkdir()
    for entry in ROOT.iterdir():
        if entry.name in LEFT_OUT or entry.name.endswith(DATA_SUFFIXES):
            continue
        (checkout / entry.name).symlink_to(entry)
    try:
        installed = subprocess.run(
            ["make", "-q", "install"],
            cwd=checkout,
            env={k: v for k, v in os.environ.items() if k not in OUTER_MAKE},
            capture_output=True,
            timeout=30,
        )
    except FileNotFoundError:
        pytest.skip("make is not installed")
    if installed.returncode != 0:
        pytest.skip("make install is not up to date here: run make install first")
    return checkout


@contextlib.contextmanager
def make_run(workdir: Path, **env: str | None) -> Iterator[AppProcess]:
    """`make run` (seed, then python app.py) in a checkout_in(workdir), ready, until
    the block ends; SIGTERM to make reaches the server, which make waits for."""
    checkout = checkout_in(workdir)
    outer: dict[str, str | None] = dict.fromkeys(OUTER_MAKE)
    app = launch(checkout, "make-run", command=["make", "run"], **outer, **env)
    try:
        wait_ready(app, timeout=START_TIMEOUT_S + 60)  # the seed comes first
        yield app
    finally:
        stop_all([app])
    assert_clean_logs([app])


@contextlib.contextmanager
def app_with_files(workdir: Path, files: int, **env: str) -> Iterator[AppProcess]:
    """`python app.py` on a SQLite file in `workdir` (one worker, no access log),
    with this process's open-file limit raised to `files` for the test's sockets;
    killed (and the limit put back) at the end."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < min(hard, files):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, files), hard))
    app = launch(
        workdir,
        DATABASE_URL=f"sqlite:///{workdir / 'app.db'}",
        WORKERS="1",
        ACCESS_LOG="false",
        **env,
    )
    try:
        wait_ready(app)
        yield app
    finally:
        app.kill()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


STUDENT_CREATE = (
    "mutation($in: StudentCreateInput!) { studentCreate(input: $in) { __typename } }"
)


def data(app: AppProcess, query: str, variables: dict[str, Any] | None = None) -> Any:
    """The `data` of a POST that must succeed (200, no errors)."""
    response = app.post(query, variables)
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


def create_student(app: AppProcess, student_id: str, email: str, level: int) -> None:
    created = data(
        app,
        STUDENT_CREATE,
        {
            "in": {
                "studentId": student_id,
                "name": "Test Student",
                "email": email,
                "gradeLevel": level,
            }
        },
    )
    assert created["studentCreate"]["__typename"] == "StudentCreateSuccess"
