"""Incident status (open/resolved) and the served leaf's issuer on each report.

Existing incidents become open since their first report; existing reports get their issuer from
the chain already stored with them, so the "top issuers" view covers old data too.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BATCH = 1000


def upgrade() -> None:
    """Add the columns, then backfill them from the data already there."""
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(
            sa.Column("status", sa.String(16), nullable=False, server_default="open")
        )
        batch.add_column(sa.Column("opened_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("resolved_at", sa.DateTime(), nullable=True))
        batch.create_index("ix_incidents_status", ["status"])
    op.execute("UPDATE incidents SET opened_at = first_seen")
    with op.batch_alter_table("reports") as batch:
        batch.add_column(sa.Column("issuer", sa.String(512), nullable=True))
        # "Top issuers in a time range" reads only this index; it also serves every plain
        # time-range query, so the single-column received_at index goes (one less to update
        # per report).
        batch.create_index("ix_reports_received_at_issuer", ["received_at", "issuer"])
        batch.drop_index("ix_reports_received_at")

    # Backfill in batches, in Python, so that it works the same on SQLite and PostgreSQL.
    bind = op.get_bind()
    reports = sa.table(
        "reports", sa.column("id", sa.BigInteger()), sa.column("chain", sa.JSON()),
        sa.column("issuer", sa.String()),
    )
    last = 0
    while True:
        rows = bind.execute(
            sa.select(reports.c.id, reports.c.chain)
            .where(reports.c.id > last)
            .order_by(reports.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            break
        for row_id, chain in rows:
            issuer = None
            if isinstance(chain, list) and chain and isinstance(chain[0], dict):
                value = chain[0].get("issuer")
                issuer = value[:512] if isinstance(value, str) else None
            if issuer is not None:
                bind.execute(
                    sa.update(reports).where(reports.c.id == row_id).values(issuer=issuer)
                )
        last = rows[-1][0]


def downgrade() -> None:
    """Drop the added columns."""
    with op.batch_alter_table("reports") as batch:
        batch.create_index("ix_reports_received_at", ["received_at"])
        batch.drop_index("ix_reports_received_at_issuer")
        batch.drop_column("issuer")
    with op.batch_alter_table("incidents") as batch:
        batch.drop_index("ix_incidents_status")
        batch.drop_column("resolved_at")
        batch.drop_column("opened_at")
        batch.drop_column("status")
