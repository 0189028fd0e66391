"""Alembic environment: runs on the connection handed in by :func:`bridge.db.upgrade`."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import bridge.models  # noqa: F401  (registers the tables)

target_metadata = SQLModel.metadata
connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through bridge.db.upgrade(engine)")
context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
