"""Faults: the server killed (SIGKILL) in the middle of a write.

`python app.py` on SQLite and on PostgreSQL; a 5,000-row `gradesAdd` is sent and
the process killed at a random moment of it (20 trials, each a fresh random delay
drawn around the time the batch takes). After a restart, the grades table holds
none or all of the batch, never a number between; the same request again with the
same idempotency key leaves exactly 5,000 more rows, and reports them inserted (or,
when the first had committed, replayed). The same for `studentDelete(cascade:
true)` of a student with 5,000 grades: the student and all their grades, or
neither. An import job killed while it stages its rows ends FAILED (WORKER_LOST)
once the restarted server finds its lease run out, with nothing imported, and the
file imports whole when sent again."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factories.cluster import (
    AppProcess,
    create_student,
    data,
    launch,
    wait_ready,
)
from tests.factories.grades import GRADES_ADD_QUERY

pytestmark = pytest.mark.faults

ROWS = 5000
TRIALS = 20
DELETE_TRIALS = 5
SEED = 20261206
COUNT = "{ grades(first: 1) { totalCount } students { totalCount } }"
STUDENT_DELETE = (
    "mutation($id: String!) { studentDelete(studentId: $id, cascade: true) { "
    "__typename ... on StudentDeleteSuccess { student { studentId } } } }"
)


def rows_for(student_id: str, tag: int) -> list[dict[str, Any]]:
    return [
        {
            "studentId": student_id,
            "subject": f"S{tag}",
            "score": float(i % 100),
            "recordedAt": f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}T09:00:00Z",
        }
        for i in range(ROWS)
    ]


def counts(app: AppProcess) -> tuple[int, int]:
    found = data(app, COUNT)
    return found["grades"]["totalCount"], found["students"]["totalCount"]


class Server:
    """The app on one database, restarted after each kill."""

    def __init__(self, workdir: Path, url: str) -> None:
        self.workdir = workdir
        self.url = url
        self.starts = 0
        self.app = self._start()

    def _start(self) -> AppProcess:
        self.starts += 1
        app = launch(
            self.workdir,
            f"app-{self.starts}",
            DATABASE_URL=self.url,
            WORKERS="1",
            ACCESS_LOG="false",
            OPERATION_TIMEOUT_S="30",
            # One row per staging transaction: an import runs for a while.
            IMPORT_CHUNK_SIZE="1",
        )
        wait_ready(app)
        return app

    def restart(self) -> None:
        self.app.kill()
        self.app = self._start()

    def kill_during(self, query: str, variables: dict[str, Any], delay: float) -> None:
        """Send the request, SIGKILL the server `delay` s later, start it again."""
        sent = threading.Thread(target=self._send, args=(query, variables))
        sent.start()
        time.sleep(delay)
        self.app.kill()
        sent.join(30)
        assert not sent.is_alive()
        self.app = self._start()

    def _send(self, query: str, variables: dict[str, Any]) -> None:
        with contextlib.suppress(httpx.TransportError):  # killed before it answered
            self.app.post(query, variables)

    def stop(self) -> None:
        self.app.kill()


@pytest.fixture
def server(backend: str, scratch_url: str, tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path, scratch_url)
    yield running
    running.stop()


def test_a_killed_batch_is_all_or_nothing_and_its_retry_completes_it(
    server: Server,
) -> None:
    create_student(server.app, "K00001", "k@example.org", 9)
    # The time one batch takes, to draw the kill moments around it.
    started = time.monotonic()
    first = data(
        server.app, GRADES_ADD_QUERY, {"input": rows_for("K00001", 0), "key": "k-0"}
    )["gradesAdd"]
    took = time.monotonic() - started
    assert first == {
        "__typename": "GradesAddSuccess",
        "inserted": ROWS,
        "replayed": False,
    }
    draw = random.Random(SEED)
    outcomes = []
    for trial in range(1, TRIALS + 1):
        before, _ = counts(server.app)
        key = f"k-{trial}"
        variables = {"input": rows_for("K00001", trial), "key": key}
        delay = draw.uniform(0, took * 1.3)
        server.kill_during(GRADES_ADD_QUERY, variables, delay)
        after, _ = counts(server.app)
        assert after in (before, before + ROWS), (trial, delay, before, after)
        committed = after == before + ROWS
        retry = data(server.app, GRADES_ADD_QUERY, variables)["gradesAdd"]
        assert retry == {
            "__typename": "GradesAddSuccess",
            "inserted": ROWS,
            "replayed": committed,
        }, (trial, delay, committed)
        assert counts(server.app)[0] == before + ROWS
        outcomes.append(committed)
    # The kills fell both before and after the commit (else the test proves less).
    assert True in outcomes and False in outcomes, outcomes


def test_a_killed_cascade_delete_is_all_or_nothing(server: Server) -> None:
    draw = random.Random(SEED + 1)
    took = None
    for trial in range(DELETE_TRIALS):
        student = f"D{trial:05d}"
        create_student(server.app, student, f"d{trial}@example.org", 10)
        data(
            server.app,
            GRADES_ADD_QUERY,
            {"input": rows_for(student, trial), "key": f"d-{trial}"},
        )
        grades, students = counts(server.app)
        if took is None:  # the first delete runs to the end: its time
            started = time.monotonic()
            deleted = data(server.app, STUDENT_DELETE, {"id": student})
            took = time.monotonic() - started
            assert deleted["studentDelete"]["__typename"] == "StudentDeleteSuccess"
            assert counts(server.app) == (grades - ROWS, students - 1)
            continue
        server.kill_during(STUDENT_DELETE, {"id": student}, draw.uniform(0, took * 1.3))
        after = counts(server.app)
        assert after in ((grades, students), (grades - ROWS, students - 1)), after
        if after == (grades, students):  # not deleted: deleting again does it
            retry = data(server.app, STUDENT_DELETE, {"id": student})
            assert retry["studentDelete"]["__typename"] == "StudentDeleteSuccess"
        assert counts(server.app) == (grades - ROWS, students - 1)


IMPORT_ROWS = 2000
LEASE_BOUND_S = 40.0  # the job's lease (10 s) and the keeper's sweep, with room
IMPORT = (
    "mutation($csv: String!) { gradesImport(csv: $csv) "
    "{ ... on GradesImportSuccess { job { id } } } }"
)
JOB = "query($id: ID!) { importJob(jobId: $id) { status processed total failureCode } }"


def job_of(app: AppProcess, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = data(app, JOB, {"id": job_id})["importJob"]
    return job


def test_an_import_killed_while_staging_ends_failed_with_nothing_imported(
    server: Server,
) -> None:
    create_student(server.app, "I00001", "i@example.org", 9)
    csv = "student_id,subject,score,max_score,recorded_at\n" + "".join(
        f"I00001,S{n},50,100,2025-10-01T09:00:00Z\n" for n in range(IMPORT_ROWS)
    )
    job_id = data(server.app, IMPORT, {"csv": csv})["gradesImport"]["job"]["id"]
    deadline = time.monotonic() + 30
    while (job := job_of(server.app, job_id))["processed"] == 0:
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    assert job["status"] == "RUNNING"
    server.restart()  # SIGKILL while it stages, then the same server again
    stopped = time.monotonic()
    while (job := job_of(server.app, job_id))["status"] in ("QUEUED", "RUNNING"):
        assert time.monotonic() - stopped < LEASE_BOUND_S, job
        time.sleep(0.2)
    grades, _ = counts(server.app)
    if job["status"] == "SUCCEEDED":  # it had staged and checked every row
        assert grades == IMPORT_ROWS
        return
    assert (job["status"], job["failureCode"]) == ("FAILED", "WORKER_LOST"), job
    assert 0 < job["processed"] < IMPORT_ROWS
    assert grades == 0  # nothing half-imported
    again = data(server.app, IMPORT, {"csv": csv})["gradesImport"]["job"]["id"]
    deadline = time.monotonic() + 60
    while (job := job_of(server.app, again))["status"] in ("QUEUED", "RUNNING"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    assert job["status"] == "SUCCEEDED", job
    assert counts(server.app)[0] == IMPORT_ROWS
