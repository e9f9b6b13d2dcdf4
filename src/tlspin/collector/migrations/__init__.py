"""Alembic migrations of the collector database, run by tlspin.collector.storage.migrate()."""
