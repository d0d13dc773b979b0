"""Background grade imports: ImportJob, ImportQuery, -Mutation and -Subscription."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Protocol, cast

import strawberry
from strawberry.file_uploads import Upload

from resolvers import imports
from resolvers.jobs import ImportJob as ImportJobModel
from resolvers.jobs import ImportStatus
from schema.common import ctx, mapped
from schema.errors import (
    IdempotencyKeyReusedError,
    InvalidInputError,
    NotFoundError,
    RowError,
    attempt,
    row_error,
)

# The resolvers' enum is the GraphQL enum itself: no copy to keep in step.
strawberry.enum(
    ImportStatus,
    description="Where an import job is: QUEUED, RUNNING, then SUCCEEDED, FAILED "
    "(nothing written) or CANCELLED (nothing written).",
)

JobId = Annotated[strawberry.ID, strawberry.argument(description="The job's id.")]
OWNER = " Only for the viewer who started the job, and admins: FORBIDDEN for others."


@strawberry.type(description="A background CSV import of grades.")
class ImportJob:
    id: strawberry.ID = strawberry.field(description="The job's id.")
    status: ImportStatus = strawberry.field(description="Where the job is.")
    processed: int = strawberry.field(
        description="Data rows checked so far (staged or refused); equals total when "
        "the job has finished, unless it was cancelled."
    )
    total: int = strawberry.field(
        description="Data rows in the file (blank lines excluded); 0 while QUEUED."
    )
    errors: list[RowError] = strawberry.field(
        description="Every invalid row of a FAILED job, in file order (line = CSV "
        "line, header on line 1)."
    )
    failure_code: str | None = strawberry.field(
        description="Why the job FAILED; null unless it did. INVALID_ROWS: rows were "
        "rejected (errors lists them); WORKER_LOST: the worker running it stopped "
        "before it could finish, and nothing was written; DB_UNAVAILABLE or "
        "INTERNAL_SERVER_ERROR: the database, or the server, failed."
    )

    @classmethod
    def from_model(cls, job: ImportJobModel) -> ImportJob:
        return cls(
            id=strawberry.ID(job.id),
            status=job.status,
            processed=job.processed,
            total=job.total,
            errors=[row_error(problem) for problem in job.errors],
            failure_code=job.failure_code,
        )


@strawberry.type(description="The import was accepted and runs in the background.")
class GradesImportSuccess:
    job: ImportJob = strawberry.field(
        description="The new job (or, replayed, the first one, as it is now); follow "
        "it with importJob or importProgress."
    )
    replayed: bool = strawberry.field(
        description="True when an earlier request with the same idempotencyKey and "
        "the same content started this job (no new job was started)."
    )


@strawberry.type(description="The job was cancelled, or had already finished.")
class ImportCancelSuccess:
    job: ImportJob = strawberry.field(description="The job as it is now.")


GradesImportResult = Annotated[
    GradesImportSuccess | InvalidInputError | IdempotencyKeyReusedError,
    strawberry.union("GradesImportResult", description="Result of gradesImport."),
]
ImportCancelResult = Annotated[
    ImportCancelSuccess | NotFoundError,
    strawberry.union("ImportCancelResult", description="Result of importCancel."),
]


class UploadedFile(Protocol):
    """What an Upload argument holds: the server's uploaded file, read asynchronously."""

    async def read(self) -> bytes: ...

    async def close(self) -> None: ...


async def _read(upload: Upload) -> bytes:
    """The whole upload; closing it now frees its temporary file at once."""
    # Strawberry declares Upload as bytes; the multipart parser hands a file.
    file = cast(UploadedFile, upload)
    try:
        return await file.read()
    finally:
        await file.close()


@strawberry.type
class ImportQuery:
    @strawberry.field(
        description="One import job; null when unknown (or long gone)." + OWNER
    )
    async def import_job(
        self, info: strawberry.Info, job_id: JobId
    ) -> ImportJob | None:
        job = await imports.get_job(ctx(info), str(job_id))
        return ImportJob.from_model(job) if job else None


@strawberry.type
class ImportMutation:
    @strawberry.mutation(
        description="Import grades from CSV (student_id,subject,score[,max_score]"
        "[,recorded_at]) in the background, all or nothing. Give exactly one of file "
        "(a multipart upload, which needs the header X-GradePulse-Upload: 1) and csv. "
        "Admins and teachers only (FORBIDDEN for students); a teacher's job fails "
        "with a FORBIDDEN row error for each row of a student outside their grade "
        "levels, and then writes nothing. Jobs live in the database: any worker "
        "answers for any job, and a live worker takes over the job of one that "
        "stopped (it finishes it, or it ends FAILED with WORKER_LOST and nothing "
        "written)."
    )
    async def grades_import(
        self,
        info: strawberry.Info,
        file: Annotated[
            Upload | None, strawberry.argument(description="The CSV file.")
        ] = None,
        csv: Annotated[
            str | None, strawberry.argument(description="The CSV text.")
        ] = None,
        idempotency_key: Annotated[
            str | None,
            strawberry.argument(
                description="1 to 200 characters, your own (per caller): the same "
                "key with the same content (keys are kept at least 24 h) gives the "
                "first job back (replayed); with other content it is an "
                "IdempotencyKeyReusedError."
            ),
        ] = None,
    ) -> GradesImportResult:
        data = await _read(file) if file is not None else None
        return await attempt(
            imports.start_import(
                ctx(info), file=data, csv=csv, idempotency_key=idempotency_key
            ),
            lambda started: GradesImportSuccess(
                job=ImportJob.from_model(started.job), replayed=started.replayed
            ),
        )

    @strawberry.mutation(
        description="Stop an import job; nothing of it is written. A finished job is "
        "returned as it is." + OWNER
    )
    async def import_cancel(
        self, info: strawberry.Info, job_id: JobId
    ) -> ImportCancelResult:
        return await attempt(
            imports.cancel_import(ctx(info), str(job_id)),
            lambda job: ImportCancelSuccess(job=ImportJob.from_model(job)),
        )


@strawberry.type
class ImportSubscription:
    @strawberry.subscription(
        description="The import job now and at each change, until it has finished; "
        "an unknown id is a NOT_FOUND error." + OWNER
    )
    async def import_progress(
        self, info: strawberry.Info, job_id: JobId
    ) -> AsyncIterator[ImportJob]:
        job = await imports.check_progress(ctx(info), str(job_id))
        return mapped(imports.import_progress(ctx(info), job), ImportJob.from_model)
