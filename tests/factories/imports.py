"""Helpers of the test_imports* modules: documents, CSV text, starting and awaiting
import jobs, and reading import_jobs straight from the database."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import text

JOB_FIELDS = (
    "id status processed total failureCode errors { index line field code message }"
)
GRADES_IMPORT = f"""
    mutation Import($file: Upload, $csv: String, $key: String) {{
      gradesImport(file: $file, csv: $csv, idempotencyKey: $key) {{
        __typename
        ... on GradesImportSuccess {{ replayed job {{ {JOB_FIELDS} }} }}
        ... on InvalidInputError {{ message field code }}
        ... on IdempotencyKeyReusedError {{ message }}
      }}
    }}
"""
IMPORT_JOB = f"query Job($jobId: ID!) {{ importJob(jobId: $jobId) {{ {JOB_FIELDS} }} }}"
IMPORT_CANCEL = f"""
    mutation Cancel($jobId: ID!) {{
      importCancel(jobId: $jobId) {{
        __typename
        ... on ImportCancelSuccess {{ job {{ {JOB_FIELDS} }} }}
        ... on NotFoundError {{ message }}
      }}
    }}
"""
HEADER = "student_id,subject,score,max_score,recorded_at\n"
FINISHED = {"SUCCEEDED", "FAILED", "CANCELLED"}


def csv_of(rows: list[tuple[str, str, float]]) -> str:
    return HEADER + "".join(
        f"{student},{subject},{score},100,2025-10-01T09:00:00Z\n"
        for student, subject, score in rows
    )


async def start(api: Any, **variables: Any) -> dict[str, Any]:
    body = await api.post(GRADES_IMPORT, variables)
    assert "errors" not in body, body
    result: dict[str, Any] = body["data"]["gradesImport"]
    return result


async def read_job(api: Any, job_id: str) -> dict[str, Any] | None:
    body = await api.post(IMPORT_JOB, {"jobId": job_id})
    assert "errors" not in body, body
    job: dict[str, Any] | None = body["data"]["importJob"]
    return job


async def wait_for_job(api: Any, job_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """Poll importJob until the job has finished (AssertionError after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        job = await read_job(api, job_id)
        assert job is not None
        if job["status"] in FINISHED:
            return job
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.02)


async def count_rows(api: Any, table: str) -> int:
    async with api.services.database.sessions() as session:
        result = await session.execute(text(f"SELECT count(*) FROM {table}"))
        return int(result.scalar_one())


async def job_columns(api: Any, job_id: str, *columns: str) -> tuple[Any, ...]:
    async with api.services.database.sessions() as session:
        result = await session.execute(
            text(f"SELECT {', '.join(columns)} FROM import_jobs WHERE id = :id"),
            {"id": job_id},
        )
        return tuple(result.one())
