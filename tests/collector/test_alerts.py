"""Alert webhooks: new incidents, host rate threshold, retries with backoff, storm dedup."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tlspin.collector.alerts import AlertSender

from .conftest import LiveServer, WebhookReceiver, unique_host


def test_new_incident_alerts_once_and_again_when_reopened(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any,
    webhook: Callable[..., WebhookReceiver],
) -> None:
    """A new incident posts one alert; repeats do not; a reopened incident alerts again."""
    hook = webhook()
    server = serve(db_url=sqlite_url, webhooks=(hook.url,))
    with server.client() as client:
        incident = client.post("/reports", json=make_report()).json()["incident"]
        assert hook.wait(1)
        for _ in range(3):
            client.post("/reports", json=make_report())
        client.post(f"/api/incidents/{incident}/resolve")
        client.post("/reports", json=make_report())
        assert hook.wait(2)
    assert server.state.alerts.flush(5)
    kinds = [b["kind"] for b in hook.bodies]
    assert kinds == ["incident.opened", "incident.opened"]
    first = hook.bodies[0]
    assert first["payload"]["incident_id"] == incident
    assert first["payload"]["issuer"] == "CN=mitmproxy,O=tlspin testing"
    assert "new pin failure incident" in first["text"]


def test_host_rate_threshold_alerts(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any,
    webhook: Callable[..., WebhookReceiver],
) -> None:
    """A host over its report-rate threshold raises one host.rate alert; a quiet host none."""
    hook = webhook()
    server = serve(db_url=sqlite_url, webhooks=(hook.url,), alert_rate_threshold=(4, 60.0))
    loud, quiet = unique_host(), unique_host()
    with server.client() as client:
        client.post("/reports", json=make_report(hostname=quiet))
        for _ in range(4):
            client.post("/reports", json=make_report(hostname=loud))
            server.state.rate_checked.clear()  # let every report re-check the rate
        assert hook.wait(3)
        for _ in range(3):
            client.post("/reports", json=make_report(hostname=loud))
            server.state.rate_checked.clear()
    assert server.state.alerts.flush(5)
    rate = [b for b in hook.bodies if b["kind"] == "host.rate"]
    assert [b["payload"]["hostname"] for b in rate] == [loud]  # deduplicated, quiet host absent
    assert rate[0]["payload"]["reports"] >= 4


def test_storms_are_deduplicated(webhook: Callable[..., WebhookReceiver]) -> None:
    """The same key is sent once per window, and a per-minute cap stops a storm of new keys."""
    hook = webhook()
    sender = AlertSender([hook.url], max_per_minute=5)
    try:
        sent = [sender.send("monitor.red", "endpoint-a", {"n": i}) for i in range(4)]
        more = [sender.send("monitor.red", f"endpoint-{i}", {}) for i in range(10)]
        assert sender.flush(10)
    finally:
        sender.close()
    assert sent == [True, False, False, False]
    assert more.count(True) == 4  # 5 per minute, one already used
    assert len(hook.bodies) == 5
    assert sender.stats.suppressed == 3 + 6


def test_failed_deliveries_retry_with_backoff(webhook: Callable[..., WebhookReceiver]) -> None:
    """5xx answers are retried after growing delays until the webhook accepts."""
    hook = webhook(statuses=[500, 503])
    sender = AlertSender([hook.url], backoff=0.2)
    try:
        sender.send("incident.opened", "incident:1", {})
        assert hook.wait(3)
        assert sender.flush(5)
    finally:
        sender.close()
    first_gap = hook.times[1] - hook.times[0]
    second_gap = hook.times[2] - hook.times[1]
    assert first_gap >= 0.2
    assert second_gap >= 0.4
    stats = sender.stats
    assert (stats.delivered, stats.retried, stats.failed) == (1, 2, 0)


def test_client_errors_are_not_retried(webhook: Callable[..., WebhookReceiver]) -> None:
    """A 4xx answer is final: no retry, counted as failed."""
    hook = webhook(statuses=[400])
    sender = AlertSender([hook.url], backoff=0.01)
    try:
        sender.send("incident.opened", "incident:2", {})
        assert sender.flush(5)
    finally:
        sender.close()
    assert len(hook.bodies) == 1
    assert (sender.stats.delivered, sender.stats.failed) == (0, 1)


def test_failed_webhook_logs_name_the_host_but_not_the_secret_path(
    webhook: Callable[..., WebhookReceiver], caplog: pytest.LogCaptureFixture
) -> None:
    """A refused delivery is logged with the webhook's origin, never its secret-bearing path."""
    hook = webhook(statuses=[403])
    secret = "T0ALERTS/B0HOOK/s3cr3tWebhookPathToken"
    url = hook.url.replace("/hook", f"/services/{secret}?sig=s3cr3tQuery")
    sender = AlertSender([url], backoff=0.01)
    with caplog.at_level("WARNING", logger="tlspin.collector.alerts"):
        try:
            sender.send("incident.opened", "incident:3", {})
            assert sender.flush(5)
        finally:
            sender.close()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    origin = hook.url.removesuffix("/hook")
    assert f"alert webhook {origin}/… answered HTTP 403" in logged
    assert "s3cr3t" not in logged
    assert len(hook.bodies) == 1


def test_webhook_urls_are_checked() -> None:
    """Plain-HTTP webhooks are refused unless they are on loopback."""
    with pytest.raises(ValueError, match="https"):
        AlertSender(["http://hooks.example.com/x"])
    AlertSender(["http://127.0.0.1:9/x", "https://hooks.example.com/x"]).close(0)
