"""Revoked dashboard sessions, and a covering index for the dashboard's open-incident hosts.

``revoked_sessions`` holds the ids of sessions logged out before their expiry, so every
collector process refuses a copied cookie after the logout. The index on incidents
(status, hostname, last_seen, count) lets the dashboard's "open incidents by host" read the
index alone instead of every incident row.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``revoked_sessions`` and the incidents index."""
    op.create_table(
        "revoked_sessions",
        sa.Column("sid", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_revoked_sessions_expires_at", "revoked_sessions", ["expires_at"])
    op.create_index("ix_incidents_status_hostname", "incidents",
                    ["status", "hostname", "last_seen", "count"])


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_incidents_status_hostname", "incidents")
    op.drop_index("ix_revoked_sessions_expires_at", "revoked_sessions")
    op.drop_table("revoked_sessions")
