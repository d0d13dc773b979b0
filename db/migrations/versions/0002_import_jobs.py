"""Import jobs in the database: status, counts, row problems, owner and the lease of
the worker running each, so that any worker answers for any job and a live worker
takes over the jobs of one that died.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "import_jobs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("processed", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Text(), nullable=True),
        sa.Column("failure_code", sa.String(length=32), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("validated", sa.Boolean(), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("owner_role", sa.String(length=16), nullable=False),
        sa.Column("owner_levels", sa.String(length=64), nullable=True),
        sa.Column("operation", sa.String(length=200), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("worker_id", sa.String(length=200), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_import_jobs_status_lease_until", "import_jobs", ["status", "lease_until"]
    )
    op.create_index("ix_import_jobs_finished_at", "import_jobs", ["finished_at"])


def downgrade() -> None:
    op.drop_table("import_jobs")  # its indexes go with it
