"""Tables for ``tlspin monitor`` runs and per-endpoint results.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create ``monitor_runs`` and ``monitor_results``."""
    op.create_table(
        "monitor_runs",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("policy_name", sa.String(256), nullable=True),
    )
    op.create_index("ix_monitor_runs_started_at", "monitor_runs", ["started_at"])
    op.create_table(
        "monitor_results",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("run_id", _ID, sa.ForeignKey("monitor_runs.id"), nullable=False),
        sa.Column("endpoint", sa.String(400), nullable=False),
        sa.Column("host", sa.String(253), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("chain", sa.JSON(), nullable=False),
        sa.Column("matched", sa.JSON(), nullable=False),
        sa.Column("leaf_days_left", sa.Integer(), nullable=True),
        sa.Column("min_intermediate_days_left", sa.Integer(), nullable=True),
        sa.Column("rule_days_left", sa.Integer(), nullable=True),
        sa.Column("redundant", sa.Boolean(), nullable=True),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("probed_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_monitor_results_run_id", "monitor_results", ["run_id"])
    op.create_index("ix_monitor_results_endpoint_id", "monitor_results", ["endpoint", "id"])


def downgrade() -> None:
    """Drop the monitor tables."""
    op.drop_table("monitor_results")
    op.drop_table("monitor_runs")
