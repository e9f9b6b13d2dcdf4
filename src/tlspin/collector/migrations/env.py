"""Alembic environment: tlspin runs migrations programmatically on an open connection."""

from __future__ import annotations

from alembic import context

from tlspin.collector.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # Defensive: the alembic CLI without tlspin's runner.
    msg = (
        "tlspin's migrations run through tlspin.collector.storage.Database.migrate(), which "
        "passes an open connection; found none (do not run the alembic command line on them)"
    )
    raise RuntimeError(msg)
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite cannot ALTER most things in place
)
with context.begin_transaction():
    context.run_migrations()
