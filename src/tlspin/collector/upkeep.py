"""Upkeep of the collector's database: retention of reports, and revoked dashboard sessions."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, exists, insert, select

from tlspin.collector.models import Incident, Report, RevokedSession
from tlspin.collector.storage import Database

__all__ = ["prune", "revoke_session", "session_revoked"]


def prune(db: Database, cutoff: dt.datetime, *, batch: int = 5000) -> tuple[int, int]:
    """Delete reports received before *cutoff*, then incidents last seen before it that no
    report refers to any more, and expired session revocations; return how many reports and
    incidents went.

    Reports go in batches of *batch*, each its own short transaction, so intake (which waits
    for SQLite's one writer) is never held for long.
    """
    reports = 0
    while True:
        with db.write() as conn:
            ids = conn.execute(
                select(Report.id).where(Report.received_at < cutoff).order_by(Report.id)
                .limit(batch)
            ).scalars().all()
            if ids:
                conn.execute(delete(Report).where(Report.id.in_(ids)))
        reports += len(ids)
        if len(ids) < batch:
            break
    with db.write() as conn:
        incidents = conn.execute(
            delete(Incident).where(
                Incident.last_seen < cutoff,
                ~exists().where(Report.incident_id == Incident.id),
            )
        ).rowcount
        conn.execute(delete(RevokedSession).where(
            RevokedSession.expires_at < dt.datetime.now(dt.UTC)))
    return reports, int(incidents or 0)


def revoke_session(db: Database, sid: str, expires_at: dt.datetime) -> None:
    """Record that session *sid* was logged out (kept until it would have expired)."""
    with db.write() as conn:
        if conn.execute(select(RevokedSession.sid).where(RevokedSession.sid == sid)).first():
            return
        conn.execute(insert(RevokedSession).values(sid=sid, expires_at=expires_at))


def session_revoked(db: Database, sid: str) -> bool:
    """Whether session *sid* was logged out."""
    with db.read() as conn:
        return conn.execute(
            select(RevokedSession.sid).where(RevokedSession.sid == sid)
        ).first() is not None
