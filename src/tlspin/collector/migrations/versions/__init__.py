"""Alembic revisions of the collector schema."""
