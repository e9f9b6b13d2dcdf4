"""PostgreSQL: compress the raw report text with lz4 instead of pglz.

The raw JSON of a report (a few KiB, with its base64 chains) is the one value the database
compresses on every insert. pglz made that about a fifth of the database's CPU time per
stored report; lz4 costs a fraction of it. Rows stored before keep their pglz data, and
PostgreSQL reads both. Older servers (before 14) and builds without lz4 keep pglz; SQLite
does not compress.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _lz4_available() -> bool:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    values = bind.exec_driver_sql(
        "SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'"
    ).scalar()
    return "lz4" in (values or [])


def upgrade() -> None:
    """Use lz4 for ``reports.raw`` where the server has it."""
    if _lz4_available():
        op.execute("ALTER TABLE reports ALTER COLUMN raw SET COMPRESSION lz4")


def downgrade() -> None:
    """Back to the server's default compression."""
    if _lz4_available():
        op.execute("ALTER TABLE reports ALTER COLUMN raw SET COMPRESSION DEFAULT")
