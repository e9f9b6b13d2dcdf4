"""Monitor runs and their per-endpoint results in the collector's database.

``tlspin monitor --collector`` uploads them (``POST /api/monitor-runs``), and the dashboard's
monitor pages read them back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, insert, select

from tlspin.collector.models import MonitorResult, MonitorRun
from tlspin.collector.storage import Target, _connection

__all__ = ["latest_monitor_results", "monitor_history", "save_monitor_run"]


def _when(value: object, what: str) -> dt.datetime:
    moment: dt.datetime | None = None
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            moment = None
    if moment is None:
        raise ValueError(f"{what} must be a datetime or an ISO 8601 string, found {value!r:.80}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError(f"{what} is out of range: {value!r:.80}") from None


_RESULT_FIELDS = (
    "endpoint", "host", "port", "ip", "status", "reasons", "chain", "matched", "leaf_days_left",
    "min_intermediate_days_left", "rule_days_left", "redundant", "changes", "error", "probed_at",
)


def save_monitor_run(
    target: Target, run: Mapping[str, Any], results: Sequence[Mapping[str, Any]]
) -> int:
    """Store one monitor run and its per-endpoint results; return the run id.

    Args:
        target: a :class:`Database`, an Engine (committed here), a Connection or a Session
            (the caller commits).
        run: ``started_at``, ``finished_at`` (datetimes or ISO strings) and ``policy_name``.
        results: one mapping per endpoint with the ``monitor_results`` columns
            (``endpoint``, ``host``, ``port``, ``status`` …; ``probed_at`` defaults to
            ``finished_at``).

    Raises:
        ValueError: a value is missing or of the wrong kind.
    """
    started = _when(run.get("started_at"), "run started_at")
    finished = run.get("finished_at")
    finished_at = _when(finished, "run finished_at") if finished is not None else None
    rows = []
    for index, result in enumerate(results):
        unknown = set(result) - set(_RESULT_FIELDS)
        if unknown:
            raise ValueError(f"monitor result {index} has unknown fields {sorted(unknown)}")
        status = result.get("status")
        if status not in ("green", "amber", "red"):
            raise ValueError(
                f"monitor result {index}: status must be green, amber or red, found {status!r}"
            )
        for name in ("endpoint", "host"):
            if not isinstance(result.get(name), str) or not result[name]:
                raise ValueError(f"monitor result {index}: {name} must be a non-empty string")
        row = {name: result.get(name) for name in _RESULT_FIELDS}
        for name in ("reasons", "chain", "matched", "changes"):
            row[name] = list(row[name] or [])
        row["probed_at"] = _when(
            result.get("probed_at") or finished_at or started, f"monitor result {index} probed_at"
        )
        rows.append(row)
    with _connection(target, write=True) as conn:
        run_id = int(
            conn.execute(
                insert(MonitorRun)
                .values(started_at=started, finished_at=finished_at,
                        policy_name=run.get("policy_name"))
                .returning(MonitorRun.id)
            ).scalar_one()
        )
        if rows:
            conn.execute(insert(MonitorResult), [{**row, "run_id": run_id} for row in rows])
    return run_id


def _result_dict(row: Any) -> dict[str, Any]:
    out = {name: getattr(row, name) for name in ("id", "run_id", *_RESULT_FIELDS)}
    out["probed_at"] = out["probed_at"].isoformat() if out["probed_at"] else None
    return out


def latest_monitor_results(target: Target) -> list[dict[str, Any]]:
    """The most recent result of every endpoint ever probed, sorted by endpoint."""
    latest = (
        select(func.max(MonitorResult.id).label("id"))
        .group_by(MonitorResult.endpoint)
        .subquery()
    )
    query = (
        select(MonitorResult)
        .join(latest, MonitorResult.id == latest.c.id)
        .order_by(MonitorResult.endpoint)
    )
    with _connection(target, write=False) as conn:
        return [_result_dict(row) for row in conn.execute(query)]


def monitor_history(target: Target, endpoint: str, *, limit: int = 200) -> list[dict[str, Any]]:
    """Results of one endpoint, newest first."""
    query = (
        select(MonitorResult)
        .where(MonitorResult.endpoint == endpoint)
        .order_by(MonitorResult.id.desc())
        .limit(limit)
    )
    with _connection(target, write=False) as conn:
        return [_result_dict(row) for row in conn.execute(query)]
