"""The cost meter in the database: the open period and running totals per environment
(cost_meters), the closed periods and whether each is in costs.csv (cost_periods),
and the cost of each operation name (cost_operations).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def _counts(*names: str) -> list[sa.Column[int]]:
    return [sa.Column(name, sa.BigInteger(), nullable=False) for name in names]


def upgrade() -> None:
    op.create_table(
        "cost_meters",
        sa.Column("environment", sa.String(length=32), nullable=False),
        sa.Column("period_start", sa.DateTime(), nullable=False),
        *_counts(
            "db_queries",
            "api_requests",
            "db_cost",
            "api_cost",
            "total_db_queries",
            "total_api_requests",
            "total_db_cost",
            "total_api_cost",
        ),
        sa.PrimaryKeyConstraint("environment"),
    )
    op.create_table(
        "cost_periods",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("environment", sa.String(length=32), nullable=False),
        sa.Column("period_start", sa.DateTime(), nullable=False),
        sa.Column("period_end", sa.DateTime(), nullable=False),
        *_counts("db_queries", "api_requests", "db_cost", "api_cost"),
        sa.Column("written_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_cost_periods_environment", "cost_periods", ["environment", "id"]
    )
    op.create_table(
        "cost_operations",
        sa.Column("environment", sa.String(length=32), nullable=False),
        sa.Column("operation", sa.String(length=200), nullable=False),
        *_counts("count", "db_cost", "api_cost"),
        sa.PrimaryKeyConstraint("environment", "operation"),
    )


def downgrade() -> None:
    for table in ("cost_operations", "cost_periods", "cost_meters"):
        op.drop_table(table)  # the table's indexes go with it
