"""Two `python app.py` processes on one database and one Redis: one is killed
(SIGKILL) or stopped (SIGTERM: it hands its job over) in the middle of an import,
and the other takes the job over within 30 s; the job ends FAILED with WORKER_LOST
and nothing written (or SUCCEEDED with every row), never RUNNING."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from db.engine import create_database
from tests.factories.cluster import AppProcess, cluster, data
from tests.factories.imports import IMPORT_JOB, csv_of

pytestmark = pytest.mark.cluster

ROWS = 3000
TAKEOVER_BOUND_S = 30.0
# A job handed over at a clean stop is taken at the survivor's next sweep (2 s),
# not after its lease (10 s) has run out.
HANDED_OVER_S = 8.0


def job_of(app: AppProcess, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = data(app, IMPORT_JOB, {"jobId": job_id})["importJob"]
    return job


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


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":  # several workers of one machine
        return f"sqlite:///{tmp_path / 'cluster.db'}"
    url: str = request.getfixturevalue("cluster_database_url")
    return url


@pytest.mark.parametrize(
    "stop", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"]
)
async def test_a_stopped_worker_s_job_is_taken_over_by_another(
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    redis_prefix: str,
    stop: signal.Signals,
) -> None:
    with cluster(
        tmp_path,
        2,
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        # One row per staging transaction: the import runs for a while.
        IMPORT_CHUNK_SIZE="1",
    ) as apps:
        doomed, survivor = apps[0], apps[1]
        created = data(
            survivor,
            """mutation { studentCreate(input: {studentId: "KILL-1", name: "K",
                 email: "kill.1@school.example", gradeLevel: 9}) { __typename } }""",
        )
        assert created["studentCreate"]["__typename"] == "StudentCreateSuccess"
        rows = [("KILL-1", f"S{n}", 50.0) for n in range(ROWS)]
        started = data(
            doomed,
            "mutation($csv: String!) { gradesImport(csv: $csv) "
            "{ ... on GradesImportSuccess { job { id } } } }",
            {"csv": csv_of(rows)},
        )
        job_id = started["gradesImport"]["job"]["id"]
        deadline = time.monotonic() + 30
        while (job := job_of(survivor, job_id))["processed"] == 0:
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        assert job["status"] == "RUNNING"

        if stop == signal.SIGKILL:
            doomed.kill()
        else:
            doomed.terminate()
            assert doomed.wait() == 0
        stopped_at = time.monotonic()
        while (job := job_of(survivor, job_id))["status"] in ("QUEUED", "RUNNING"):
            assert time.monotonic() - stopped_at < TAKEOVER_BOUND_S, job
            time.sleep(0.2)
        took = time.monotonic() - stopped_at

        count = data(survivor, '{ grades(studentId: "KILL-1") { totalCount } }')
        if job["status"] == "SUCCEEDED":  # it had staged and checked every row
            assert count["grades"]["totalCount"] == ROWS
        else:
            assert (job["status"], job["failureCode"]) == ("FAILED", "WORKER_LOST")
            assert 0 < job["processed"] < ROWS
            assert count["grades"]["totalCount"] == 0
        if stop == signal.SIGTERM:
            assert took < HANDED_OVER_S
    assert await staged_rows(database_url) == 0
