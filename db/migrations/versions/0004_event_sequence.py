"""Each student's grade events in commit order: students.event_seq (the number of the
last published write), event_at and event_prev_at (when it and the one before it
were written, in seconds since the epoch).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("students") as batch:
        batch.add_column(
            sa.Column("event_seq", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("event_at", sa.Float(), nullable=True))
        batch.add_column(sa.Column("event_prev_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("students") as batch:
        batch.drop_column("event_prev_at")
        batch.drop_column("event_at")
        batch.drop_column("event_seq")
