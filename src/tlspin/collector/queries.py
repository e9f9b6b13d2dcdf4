"""Read-side queries shared by the JSON API, the CSV export and the dashboard.

Every value read back went through a report, so every string is passed through
:func:`~tlspin.collector.formats.clean_value` on its way out: whatever a database holds (a lone
surrogate inside a JSON column, say), every view can encode it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, exists, func, select

from tlspin.collector.formats import clean_value
from tlspin.collector.models import Incident, Report
from tlspin.collector.storage import Database

__all__ = [
    "REPORT_LIST_COLUMNS", "Filters", "incident_detail", "list_incidents", "list_reports",
    "overview",
]


@dataclass(frozen=True, slots=True)
class Filters:
    """Filters of the query API; every field is optional."""

    host: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    app: str | None = None
    status: str | None = None
    incident: int | None = None


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def report_dict(row: Any, *, raw: bool = False) -> dict[str, Any]:
    """The JSON form of a report row (strings cleaned: see the module)."""
    out: dict[str, Any] = {
        "id": row.id,
        "received_at": _iso(row.received_at),
        "client_time": _iso(row.client_time),
        "kind": row.kind,
        "hostname": row.hostname,
        "port": row.port,
        "noted_hostname": row.noted_hostname,
        "include_subdomains": row.include_subdomains,
        "mode": row.mode,
        "reason": row.reason,
        "app_id": row.app_id,
        "app_version": row.app_version,
        "client_ip": row.client_ip,
        "issuer": row.issuer,
        "observed_pins": list(row.observed_pins or []),
        "known_pins": list(row.known_pins or []),
        "incident_id": row.incident_id,
    }
    if raw:
        out["chain"] = list(row.chain or [])
        out["raw"] = row.raw
    cleaned: dict[str, Any] = clean_value(out)
    return cleaned


def incident_dict(row: Any) -> dict[str, Any]:
    """The JSON form of an incident row (strings cleaned: see the module)."""
    out: dict[str, Any] = clean_value({
        "id": row.id,
        "hostname": row.hostname,
        "observed_pins": list(row.observed_pins or []),
        "expected_pins": list(row.expected_pins or []),
        "first_seen": _iso(row.first_seen),
        "last_seen": _iso(row.last_seen),
        "count": row.count,
        "status": row.status,
        "opened_at": _iso(row.opened_at),
        "resolved_at": _iso(row.resolved_at),
    })
    return out


#: The report columns of lists and exports: all but the chain and the raw text, the bulk of
#: a row, which only the detail views show.
REPORT_LIST_COLUMNS = tuple(
    c for c in Report.__table__.columns if c.name not in ("chain", "raw")
)


def _report_query(filters: Filters) -> Select[Any]:
    query = select(*REPORT_LIST_COLUMNS)
    if filters.host:
        query = query.where(Report.hostname == filters.host.lower())
    if filters.since:
        query = query.where(Report.received_at >= filters.since)
    if filters.until:
        query = query.where(Report.received_at < filters.until)
    if filters.app:
        query = query.where(Report.app_id == filters.app)
    if filters.incident is not None:
        query = query.where(Report.incident_id == filters.incident)
    return query


def list_reports(
    db: Database, filters: Filters, *, limit: int, cursor: int | None = None
) -> tuple[list[dict[str, Any]], int | None]:
    """Reports newest first, ``limit`` at a time; returns the page and the next cursor.

    The cursor is the id below which the next page starts (keyset pagination, so deep pages
    cost the same as the first).
    """
    query = _report_query(filters)
    if cursor is not None:
        query = query.where(Report.id < cursor)
    query = query.order_by(Report.id.desc()).limit(limit + 1)
    with db.read() as conn:
        rows = conn.execute(query).all()
    page = [report_dict(r) for r in rows[:limit]]
    return page, (rows[limit - 1].id if len(rows) > limit else None)


def list_incidents(
    db: Database, filters: Filters, *, limit: int, cursor: int | None = None
) -> tuple[list[dict[str, Any]], int | None]:
    """Incidents, most recently seen first (ties by id); keyset-paginated by id."""
    query = select(Incident)
    if filters.host:
        query = query.where(Incident.hostname == filters.host.lower())
    if filters.since:
        query = query.where(Incident.last_seen >= filters.since)
    if filters.until:
        query = query.where(Incident.first_seen < filters.until)
    if filters.status:
        query = query.where(Incident.status == filters.status)
    if filters.app:
        query = query.where(
            exists().where(Report.incident_id == Incident.id, Report.app_id == filters.app)
        )
    if cursor is not None:
        query = query.where(Incident.id < cursor)
    query = query.order_by(Incident.id.desc()).limit(limit + 1)
    with db.read() as conn:
        rows = conn.execute(query).all()
    page = [incident_dict(r) for r in rows[:limit]]
    return page, (rows[limit - 1].id if len(rows) > limit else None)


def incident_detail(db: Database, incident_id: int) -> dict[str, Any] | None:
    """An incident with the chain of its latest report (each certificate marked matched or
    not) and its most recent reports."""
    with db.read() as conn:
        incident = conn.execute(select(Incident).where(Incident.id == incident_id)).first()
        if incident is None:
            return None
        recent = conn.execute(
            select(*REPORT_LIST_COLUMNS)
            .where(Report.incident_id == incident_id)
            .order_by(Report.id.desc())
            .limit(20)
        ).all()
        latest_chain = conn.execute(
            select(Report.chain).where(Report.id == recent[0].id)
        ).scalar() if recent else None
        apps = conn.execute(
            select(Report.app_id, func.count())
            .where(Report.incident_id == incident_id)
            .group_by(Report.app_id)
            .order_by(func.count().desc())
            .limit(10)
        ).all()
    out = incident_dict(incident)
    expected = set(out["expected_pins"])
    chain = clean_value(list(latest_chain or []))
    out["chain"] = [
        {
            "subject": c.get("subject"),
            "issuer": c.get("issuer"),
            "pin": c.get("pin"),
            "not_after": c.get("not_after"),
            "matched": c.get("pin") in expected,
        }
        for c in chain
        if isinstance(c, dict)
    ]
    out["reports"] = [report_dict(r) for r in recent]
    out["apps"] = [{"app_id": clean_value(a), "count": n} for a, n in apps]
    return out


def report_detail(db: Database, report_id: int) -> dict[str, Any] | None:
    """One report with its chain and raw JSON."""
    with db.read() as conn:
        row = conn.execute(select(Report).where(Report.id == report_id)).first()
    return report_dict(row, raw=True) if row is not None else None


def _bucket(db: Database, hours: int) -> Any:
    if db.is_sqlite:
        fmt = "%Y-%m-%dT%H:00:00" if hours == 1 else "%Y-%m-%dT00:00:00"
        return func.strftime(fmt, Report.received_at)
    return func.date_trunc("hour" if hours == 1 else "day", Report.received_at)


def overview(db: Database, *, since: dt.datetime, bucket_hours: int) -> dict[str, Any]:
    """Everything the dashboard's front page shows, for reports received since *since*."""
    bucket = _bucket(db, bucket_hours).label("bucket")
    with db.read() as conn:
        series = conn.execute(
            select(bucket, func.count())
            .where(Report.received_at >= since)
            .group_by(bucket)
            .order_by(bucket)
        ).all()
        hosts = conn.execute(
            select(
                Incident.hostname,
                func.count(),
                func.sum(Incident.count),
                func.max(Incident.last_seen),
            )
            .where(Incident.status == "open")
            .group_by(Incident.hostname)
            .order_by(func.max(Incident.last_seen).desc())
            .limit(50)
        ).all()
        issuers = conn.execute(
            select(Report.issuer, func.count())
            .where(Report.received_at >= since, Report.issuer.is_not(None))
            .group_by(Report.issuer)
            .order_by(func.count().desc())
            .limit(10)
        ).all()
        incidents = conn.execute(
            select(Incident).order_by(Incident.last_seen.desc()).limit(25)
        ).all()
        total = conn.execute(
            select(func.count()).select_from(Report).where(Report.received_at >= since)
        ).scalar_one()
        open_count = conn.execute(
            select(func.count()).select_from(Incident).where(Incident.status == "open")
        ).scalar_one()
    points = []
    for key, count in series:
        if isinstance(key, dt.datetime):
            moment = key if key.tzinfo else key.replace(tzinfo=dt.UTC)
        else:
            moment = dt.datetime.fromisoformat(str(key)).replace(tzinfo=dt.UTC)
        points.append((moment.astimezone(dt.UTC), int(count)))
    return {
        "series": points,
        "hosts": [
            {"hostname": clean_value(h), "incidents": n, "reports": int(r or 0), "last_seen": _iso(
                last if last is None or last.tzinfo else last.replace(tzinfo=dt.UTC))}
            for h, n, r, last in hosts
        ],
        "issuers": [{"issuer": clean_value(i), "count": n} for i, n in issuers],
        "incidents": [incident_dict(r) for r in incidents],
        "total": int(total),
        "open_incidents": int(open_count),
    }
