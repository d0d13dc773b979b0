"""The schema's field usage by UTC hour (field_usage): how many operations selected
each field in each hour and when the last one ran, added to by every worker, read by
fieldUsage(since:).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "field_usage",
        sa.Column("type_name", sa.String(length=128), nullable=False),
        sa.Column("field_name", sa.String(length=200), nullable=False),
        sa.Column("hour", sa.DateTime(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("type_name", "field_name", "hour"),
    )
    op.create_index("ix_field_usage_hour", "field_usage", ["hour"])


def downgrade() -> None:
    op.drop_table("field_usage")  # its index goes with it
