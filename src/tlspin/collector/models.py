"""The collector's tables (the head schema; migrations build the same thing step by step)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Base", "Incident", "MonitorResult", "MonitorRun", "Report", "RevokedSession", "UTCDateTime",
]


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timestamps stored as naive UTC and read back as aware UTC, the same on every database.

    SQLite has no time zones; storing naive UTC everywhere keeps comparisons and indexes simple.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # Defensive: raw SQLite text from an older writer.
            value = dt.datetime.fromisoformat(value)
        assert isinstance(value, dt.datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    """Declarative base of the collector's tables."""


_ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only


class Incident(Base):
    """Reports grouped by host, the pins of the served chain and the expected pins."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    hostname: Mapped[str] = mapped_column(String(253), index=True)
    observed_pins: Mapped[list[str]] = mapped_column(JSON)
    expected_pins: Mapped[list[str]] = mapped_column(JSON)
    first_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    count: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), server_default="open", index=True)
    opened_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)

    # The dashboard groups open incidents by host: this index answers it without the rows.
    __table_args__ = (
        Index("ix_incidents_status_hostname", "status", "hostname", "last_seen", "count"),
    )


class RevokedSession(Base):
    """A dashboard session logged out before its expiry (kept until then)."""

    __tablename__ = "revoked_sessions"

    sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)


class Report(Base):
    """One received report: normalised fields plus the raw JSON as it arrived (up to
    :data:`tlspin.collector.formats.RAW_KEEP` characters; see ``ParsedReport.raw``)."""

    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    client_time: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    kind: Mapped[str] = mapped_column(String(32))
    hostname: Mapped[str] = mapped_column(String(253))
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    noted_hostname: Mapped[str | None] = mapped_column(String(253), nullable=True)
    include_subdomains: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    mode: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    app_id: Mapped[str | None] = mapped_column(String(256), nullable=True, index=True)
    app_version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    client_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    observed_pins: Mapped[list[str]] = mapped_column(JSON)
    known_pins: Mapped[list[str]] = mapped_column(JSON)
    chain: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    issuer: Mapped[str | None] = mapped_column(String(512), nullable=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    raw: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        Index("ix_reports_hostname_received_at", "hostname", "received_at"),
        Index("ix_reports_received_at_issuer", "received_at", "issuer"),
    )


class MonitorRun(Base):
    """One run of ``tlspin monitor`` over a policy's endpoints."""

    __tablename__ = "monitor_runs"

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    policy_name: Mapped[str | None] = mapped_column(String(256), nullable=True)


class MonitorResult(Base):
    """The health of one endpoint in one monitor run."""

    __tablename__ = "monitor_results"

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("monitor_runs.id"), index=True)
    endpoint: Mapped[str] = mapped_column(String(400))
    host: Mapped[str] = mapped_column(String(253))
    port: Mapped[int] = mapped_column(Integer)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(8))
    reasons: Mapped[list[str]] = mapped_column(JSON)
    chain: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    matched: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    leaf_days_left: Mapped[int | None] = mapped_column(Integer, nullable=True)
    min_intermediate_days_left: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rule_days_left: Mapped[int | None] = mapped_column(Integer, nullable=True)
    redundant: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    changes: Mapped[list[str]] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    probed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_monitor_results_endpoint_id", "endpoint", "id"),)
