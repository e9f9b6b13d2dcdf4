"""Monitor results in the collector database, directly and through POST /api/monitor-runs."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from tlspin.collector.monitor_runs import latest_monitor_results, monitor_history, save_monitor_run
from tlspin.collector.storage import Database, normalise_url

from .conftest import LiveServer, unique_host


def _result(endpoint: str, status: str, **extra: Any) -> dict[str, Any]:
    host, _, rest = endpoint.partition(":")
    port, _, ip = rest.partition("@")
    return {"endpoint": endpoint, "host": host, "port": int(port), "ip": ip or None,
            "status": status, "reasons": [], "chain": [], "matched": [], "changes": [], **extra}


def test_save_latest_and_history(db_url: str) -> None:
    """Runs stored through a Database, an Engine and a Session all show up, newest first."""
    now = dt.datetime.now(dt.UTC)
    db = Database(db_url)
    engine = create_engine(normalise_url(db_url))
    try:
        db.migrate()
        save_monitor_run(db, {"started_at": now.isoformat()}, [
            _result("a.test:443", "green", leaf_days_left=90),
            _result("b.test:443@127.0.0.2", "amber", reasons=["no-backup: x"]),
        ])
        save_monitor_run(engine, {"started_at": now, "finished_at": now}, [
            _result("a.test:443", "red", reasons=["mismatch: y"],
                    matched=[], chain=[{"subject": "CN=a", "issuer": "CN=b", "pin": "p",
                                        "not_after": "2030-01-01"}]),
        ])
        with Session(engine) as session:
            run_id = save_monitor_run(session, {"started_at": now, "policy_name": "p"}, [])
            session.commit()
        latest = {r["endpoint"]: r for r in latest_monitor_results(db)}
        history = monitor_history(engine, "a.test:443")
    finally:
        engine.dispose()
        db.dispose()
    assert run_id > 0
    assert {k: v["status"] for k, v in latest.items()} == {
        "a.test:443": "red", "b.test:443@127.0.0.2": "amber"}
    assert latest["b.test:443@127.0.0.2"]["ip"] == "127.0.0.2"
    assert latest["a.test:443"]["chain"][0]["issuer"] == "CN=b"
    assert [h["status"] for h in history] == ["red", "green"]
    assert history[1]["leaf_days_left"] == 90


@pytest.mark.parametrize(
    ("run", "result", "message"),
    [
        ({}, None, "started_at"),
        ({"started_at": "yesterday"}, None, "started_at"),
        ({"started_at": "2024-01-01T00:00:00"}, {"status": "blue"}, "status"),
        ({"started_at": "2024-01-01T00:00:00"}, {"endpoint": ""}, "endpoint"),
        ({"started_at": "2024-01-01T00:00:00"}, {"surprise": 1}, "unknown fields"),
    ],
)
def test_bad_monitor_input_is_refused(
    sqlite_url: str, run: dict[str, Any], result: dict[str, Any] | None, message: str
) -> None:
    """Malformed runs and results raise ValueError naming the field, and store nothing."""
    db = Database(sqlite_url)
    results = [] if result is None else [{**_result("a.test:443", "green"), **result}]
    try:
        with pytest.raises(ValueError, match=message):
            save_monitor_run(db, run, results)
        assert latest_monitor_results(db) == []
    finally:
        db.dispose()


def test_monitor_runs_over_http(shared: LiveServer) -> None:
    """POST /api/monitor-runs stores a run (token required) and the API reads it back."""
    endpoint = f"{unique_host()}:443"
    body = {
        "run": {"started_at": "2024-06-01T10:00:00Z", "finished_at": "2024-06-01T10:00:05Z",
                "policy_name": "prod", "status": "red", "endpoints": 1},
        "results": [_result(endpoint, "red", reasons=["unreachable: refused"],
                            error="connection refused", probed_at="2024-06-01T10:00:01Z")],
    }
    with shared.client(token=None) as anonymous:
        assert anonymous.post("/api/monitor-runs", json=body).status_code == 401
    with shared.client() as client:
        created = client.post("/api/monitor-runs", json=body)
        history = client.get("/api/monitor/history", params={"endpoint": endpoint}).json()
        latest = client.get("/api/monitor/latest").json()
    assert created.status_code == 201
    assert created.json()["results"] == 1
    assert [(h["status"], h["error"], h["probed_at"]) for h in history] == [
        ("red", "connection refused", "2024-06-01T10:00:01+00:00")]
    assert endpoint in {r["endpoint"] for r in latest}


@pytest.mark.parametrize(
    "change",
    [{"status": "purple"}, {"port": 70000}, {"reasons": ["a\u0000b"]},
     {"chain": [{"x": float("nan")}]}, {"probed_at": "9999-12-31T23:59:59-23:59"},
     {"endpoint": "x" * 500}],
)
def test_bad_monitor_runs_over_http_are_4xx(shared: LiveServer, change: dict[str, Any]) -> None:
    """Malformed monitor runs get a 4xx on either database, never a 5xx."""
    import json

    result = {**_result(f"{unique_host()}:443", "green"), **change}
    body = json.dumps({"run": {"started_at": "2024-06-01T10:00:00Z"}, "results": [result]},
                      allow_nan=True)
    with shared.client() as client:
        response = client.post("/api/monitor-runs", content=body,
                               headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
