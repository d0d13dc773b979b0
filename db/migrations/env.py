"""Alembic's environment: migrations run on the connection that db.migrations hands
over (inside `connection.run_sync`, under its lock); no URL is read here."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from db import models  # noqa: F401  (registers the tables on SQLModel.metadata)

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "db/migrations runs through db.migrations (python -m cli.migrate), "
        "which hands Alembic a connection"
    )
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    # SQLite alters a table by copying it: autogenerate writes batch operations there.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
