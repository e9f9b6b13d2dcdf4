"""Alembic migrations: upgrading from the first schema keeps data; head matches the models."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from tlspin.collector import queries
from tlspin.collector.formats import parse_report
from tlspin.collector.models import Base
from tlspin.collector.storage import Database, alembic_config

from .conftest import HOST

_V1_INCIDENTS = sa.table(
    "incidents", sa.column("id", sa.Integer), sa.column("key", sa.String),
    sa.column("hostname", sa.String), sa.column("observed_pins", sa.JSON),
    sa.column("expected_pins", sa.JSON), sa.column("first_seen", sa.DateTime),
    sa.column("last_seen", sa.DateTime), sa.column("count", sa.Integer),
)
_V1_REPORTS = sa.table(
    "reports", *(sa.column(n, t) for n, t in [
        ("id", sa.Integer), ("received_at", sa.DateTime), ("client_time", sa.DateTime),
        ("kind", sa.String), ("hostname", sa.String), ("port", sa.Integer),
        ("noted_hostname", sa.String), ("include_subdomains", sa.Boolean), ("mode", sa.String),
        ("reason", sa.String), ("app_id", sa.String), ("app_version", sa.String),
        ("client_ip", sa.String), ("observed_pins", sa.JSON), ("known_pins", sa.JSON),
        ("chain", sa.JSON), ("incident_id", sa.Integer), ("raw", sa.Text),
    ]),
)


def test_upgrade_from_first_schema_keeps_data(empty_db_url: str, make_report: Any) -> None:
    """Rows written at revision 0001 survive the upgrade to head, backfilled and still usable."""
    import json

    parsed = parse_report(json.dumps(make_report()).encode())
    first_seen = dt.datetime(2024, 5, 1, 12, 0, 0)
    db = Database(empty_db_url)
    try:
        db.migrate("0001")
        assert db.revision() == "0001"
        with db.write() as conn:
            incident_id = conn.execute(sa.insert(_V1_INCIDENTS).values(
                key=parsed.incident_key(), hostname=HOST, observed_pins=parsed.observed_pins,
                expected_pins=sorted(parsed.known_pins), first_seen=first_seen,
                last_seen=first_seen, count=1,
            ).returning(_V1_INCIDENTS.c.id)).scalar_one()
            conn.execute(sa.insert(_V1_REPORTS).values(
                received_at=first_seen, client_time=None, kind="tlspin", hostname=HOST, port=443,
                noted_hostname=HOST, include_subdomains=False, mode="report", reason="mismatch",
                app_id="com.example.app", app_version="1.0", client_ip="127.0.0.1",
                observed_pins=parsed.observed_pins, known_pins=list(parsed.known_pins),
                chain=parsed.chain, incident_id=incident_id, raw=parsed.raw,
            ))

        db.migrate()

        assert db.revision() == "0005"
        reports, _ = queries.list_reports(db, queries.Filters(host=HOST), limit=10)
        assert len(reports) == 1
        old = reports[0]
        assert (old["app_id"], old["received_at"]) == ("com.example.app", "2024-05-01T12:00:00Z")
        assert old["issuer"] == "CN=mitmproxy,O=tlspin testing"  # backfilled from the chain
        incident = queries.incident_detail(db, incident_id)
        assert incident is not None
        assert (incident["status"], incident["opened_at"]) == ("open", "2024-05-01T12:00:00Z")
        # New reports of the same failure land on the incident created under the old schema.
        stored = db.store_report(parsed, received_at=dt.datetime.now(dt.UTC), client_ip=None)
        assert (stored.incident_id, stored.incident_count, stored.opened) == (incident_id, 2, False)
    finally:
        db.dispose()


def test_head_schema_matches_the_models(empty_db_url: str) -> None:
    """After migrating, Alembic finds no difference between the database and the models."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    db = Database(empty_db_url)
    try:
        db.migrate()
        with db.read() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        db.dispose()
    assert diff == []


def test_concurrent_migrators_agree(empty_db_url: str) -> None:
    """Two processes' worth of migrators racing on one empty database both end at head."""
    errors: list[BaseException] = []
    databases = [Database(empty_db_url) for _ in range(2)]

    def run(db: Database) -> None:
        try:
            db.migrate()
        except BaseException as exc:  # the test reports it below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(db,)) for db in databases]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        assert [db.revision() for db in databases] == ["0005", "0005"]
    finally:
        for db in databases:
            db.dispose()


def _downgrade(db: Database, revision: str) -> None:
    from alembic import command

    config = alembic_config()
    with db.write() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


def _raw_compression(db: Database) -> str:
    with db.read() as conn:
        return str(conn.exec_driver_sql(
            "SELECT attcompression FROM pg_attribute "
            "WHERE attrelid = 'reports'::regclass AND attname = 'raw'"
        ).scalar_one())


@pytest.mark.postgres
def test_raw_reports_compress_with_lz4_and_old_rows_still_read(pg_url: str,
                                                               make_report: Any) -> None:
    """0004 switches ``reports.raw`` to lz4; a row compressed with pglz before still reads
    back whole, and the downgrade restores the default."""
    import json

    db = Database(pg_url)
    try:
        with db.read() as conn:
            values = conn.exec_driver_sql("SELECT enumvals FROM pg_settings "
                                          "WHERE name = 'default_toast_compression'").scalar()
        if "lz4" not in (values or []):
            pytest.skip(f"this PostgreSQL has no lz4 (compression methods: {values})")
        db.migrate("0003")
        assert _raw_compression(db) == ""  # the server's default (pglz)
        body = make_report()
        body["x-note"] = "tlspin " * 1000  # long enough to be compressed
        parsed = parse_report(json.dumps(body).encode())
        before = db.store_report(parsed, received_at=dt.datetime.now(dt.UTC), client_ip=None)

        db.migrate()
        assert _raw_compression(db) == "l"
        after = db.store_report(parsed, received_at=dt.datetime.now(dt.UTC), client_ip=None)
        with db.read() as conn:
            rows = dict(conn.execute(
                sa.text("SELECT id, raw FROM reports WHERE id IN (:a, :b)"),
                {"a": before.report_id, "b": after.report_id},
            ).all())
            methods = {r[0] for r in conn.exec_driver_sql(
                "SELECT pg_column_compression(raw) FROM reports").all()}
        assert rows == {before.report_id: parsed.raw, after.report_id: parsed.raw}
        assert methods == {"pglz", "lz4"}

        _downgrade(db, "0003")
        assert _raw_compression(db) == ""
    finally:
        db.dispose()
