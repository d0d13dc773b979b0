"""A server process killed (SIGKILL) or stopped (SIGTERM: it hands its job over) in
the middle of an import: a second server on the same database takes the job over
within 30 s, and it ends FAILED with WORKER_LOST and nothing written (or SUCCEEDED
with every row); never RUNNING."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from db.engine import create_database
from tests.factories import ROOT, Server, free_port, wait_until_up
from tests.factories.imports import IMPORT_JOB, csv_of

ROWS = 3000
TAKEOVER_BOUND_S = 30.0


@contextlib.contextmanager
def server(workdir: Path, name: str, database_url: str) -> Iterator[Any]:
    """`python app.py` on a free port; (Server, process) until the block ends."""
    port = free_port()
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py")],
            cwd=workdir,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "HOST": "127.0.0.1",
                "PORT": str(port),
                "DATABASE_URL": database_url,
                "ACCESS_LOG": "false",
                # One row per staging transaction: the import runs for a while.
                "IMPORT_CHUNK_SIZE": "1",
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_up(port, process)
            yield Server(port, workdir), process
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=15)


def job_of(server: Server, job_id: str) -> dict[str, Any]:
    body = server.post(IMPORT_JOB, {"jobId": job_id})
    assert "errors" not in body, body
    job: dict[str, Any] = body["data"]["importJob"]
    return job


def count(server: Server, student_id: str) -> int:
    body = server.post(
        "query($s: String!) { grades(studentId: $s) { totalCount } }", {"s": student_id}
    )
    return int(body["data"]["grades"]["totalCount"])


async def staged_rows(database_url: str) -> int:
    database = create_database(database_url)
    try:
        async with database.sessions() as session:
            result = await session.execute(
                text("SELECT count(*) FROM grade_import_rows")
            )
            return int(result.scalar_one())
    finally:
        await database.dispose()


@pytest.mark.parametrize(
    "stop", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"]
)
async def test_a_stopped_worker_s_job_is_taken_over_by_another(
    tmp_path: Path, scratch_url: str, stop: signal.Signals
) -> None:
    with (
        server(tmp_path, "doomed", scratch_url) as (doomed, process),
        server(tmp_path, "survivor", scratch_url) as (survivor, _),
    ):
        body = survivor.post(
            """mutation { studentCreate(input: {studentId: "KILL-1", name: "K",
                 email: "kill.1@school.example", gradeLevel: 9}) { __typename } }"""
        )
        assert body["data"]["studentCreate"]["__typename"] == "StudentCreateSuccess"
        rows = [("KILL-1", f"S{n}", 50.0) for n in range(ROWS)]
        body = doomed.post(
            "mutation($csv: String!) { gradesImport(csv: $csv) "
            "{ ... on GradesImportSuccess { job { id } } } }",
            {"csv": csv_of(rows)},
        )
        job_id = body["data"]["gradesImport"]["job"]["id"]
        deadline = time.monotonic() + 30
        while (job := job_of(survivor, job_id))["processed"] == 0:
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        assert job["status"] == "RUNNING"

        os.kill(process.pid, stop)
        process.wait(timeout=15)
        killed_at = time.monotonic()
        while (job := job_of(survivor, job_id))["status"] in ("QUEUED", "RUNNING"):
            assert time.monotonic() - killed_at < TAKEOVER_BOUND_S, job
            time.sleep(0.2)

        if job["status"] == "SUCCEEDED":  # it had staged and checked every row
            assert count(survivor, "KILL-1") == ROWS
        else:
            assert (job["status"], job["failureCode"]) == ("FAILED", "WORKER_LOST")
            assert 0 < job["processed"] < ROWS
            assert count(survivor, "KILL-1") == 0
        if stop == signal.SIGTERM:
            # Handed over as it stopped: taken at the survivor's next sweep, not
            # after the lease (10 s) ran out.
            assert time.monotonic() - killed_at < 8
    assert await staged_rows(scratch_url) == 0
    assert "Traceback" not in (tmp_path / "survivor.log").read_text()
    if stop == signal.SIGTERM:
        assert "Traceback" not in (tmp_path / "doomed.log").read_text()
