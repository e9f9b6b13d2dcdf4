"""The first schema: reports and incidents.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create ``incidents`` and ``reports``."""
    op.create_table(
        "incidents",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("key", sa.String(64), nullable=False, unique=True),
        sa.Column("hostname", sa.String(253), nullable=False),
        sa.Column("observed_pins", sa.JSON(), nullable=False),
        sa.Column("expected_pins", sa.JSON(), nullable=False),
        sa.Column("first_seen", sa.DateTime(), nullable=False),
        sa.Column("last_seen", sa.DateTime(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_incidents_hostname", "incidents", ["hostname"])
    op.create_index("ix_incidents_last_seen", "incidents", ["last_seen"])
    op.create_table(
        "reports",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("client_time", sa.DateTime(), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("hostname", sa.String(253), nullable=False),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("noted_hostname", sa.String(253), nullable=True),
        sa.Column("include_subdomains", sa.Boolean(), nullable=True),
        sa.Column("mode", sa.String(16), nullable=True),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("app_id", sa.String(256), nullable=True),
        sa.Column("app_version", sa.String(128), nullable=True),
        sa.Column("client_ip", sa.String(64), nullable=True),
        sa.Column("observed_pins", sa.JSON(), nullable=False),
        sa.Column("known_pins", sa.JSON(), nullable=False),
        sa.Column("chain", sa.JSON(), nullable=False),
        sa.Column("incident_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
    )
    op.create_index("ix_reports_received_at", "reports", ["received_at"])
    op.create_index("ix_reports_app_id", "reports", ["app_id"])
    op.create_index("ix_reports_incident_id", "reports", ["incident_id"])
    op.create_index("ix_reports_hostname_received_at", "reports", ["hostname", "received_at"])


def downgrade() -> None:
    """Drop everything."""
    op.drop_table("reports")
    op.drop_table("incidents")
