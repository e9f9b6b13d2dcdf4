"""Alert webhooks: new incidents, host rate threshold, retries with backoff, storm dedup."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from tlspin.collector.alerts import AlertSender, chat_text
from tlspin.testing.pki import CA

from .conftest import HOST, PKI, LiveServer, WebhookReceiver, unique_host

# What a chat tool reading an alert's "text" would act on: Slack control sequences
# (<!channel>, <url|label>), Markdown mentions, links and images, and anything that breaks
# the line or hides text.
_ACTIVE = re.compile(r"[<>\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e]|&(?!amp;|lt;|gt;)"
                     r"|@(?:here|channel|all|everyone)|\]\(|!\[")


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


def _post_and_check_rate(server: LiveServer, client: Any, report: dict[str, Any]) -> None:
    """Post *report* and wait for its host-rate check, then forget that check, so that the
    next report checks the rate again (a host is checked at most every few seconds). The
    check runs after the response: clearing before it ran would race with it."""
    assert client.post("/reports", json=report).status_code == 201
    checked = server.state.rate_checked
    deadline = time.monotonic() + 10
    while report["hostname"] not in checked:
        assert time.monotonic() < deadline, "the rate check never ran"
        time.sleep(0.005)
    checked.clear()


def test_host_rate_threshold_alerts(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any,
    webhook: Callable[..., WebhookReceiver],
) -> None:
    """A host over its report-rate threshold raises one host.rate alert; a quiet host none."""
    hook = webhook()
    server = serve(db_url=sqlite_url, webhooks=(hook.url,), alert_rate_threshold=(4, 60.0))
    loud, quiet = unique_host(), unique_host()
    with server.client() as client:
        _post_and_check_rate(server, client, make_report(hostname=quiet))
        for _ in range(4):
            _post_and_check_rate(server, client, make_report(hostname=loud))
        assert hook.wait(3)
        for _ in range(3):
            _post_and_check_rate(server, client, make_report(hostname=loud))
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
    # The five alerts, and one summary of what the cap held back (sent once a minute).
    assert len(hook.bodies) == 6
    summary = [b for b in hook.bodies if b["kind"] == "alerts.suppressed"]
    assert len(summary) == 1
    assert summary[0]["payload"]["keys"] == ["endpoint-4"]
    assert sender.stats.suppressed == 3 + 6
    assert sender.stats.capped == 6


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


def test_alert_text_from_a_hostile_certificate_is_inert(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any, pki: PKI,
    webhook: Callable[..., WebhookReceiver],
) -> None:
    """A MITM CA named with Slack and Markdown markup, a mention and a line break cannot
    format, mention, link or break the line of either alert the collector sends; the JSON
    payload keeps the name exactly."""
    from tlspin.reporting import _pem

    name = "<!channel> @here\n[login](http://127.0.0.1:9/) ![p](http://h/p) &"  # ≤ 64
    hostile = CA.root(name)
    chain = [_pem(hostile.issue(HOST).cert_der), _pem(hostile.cert_der)]
    hook = webhook()
    server = serve(db_url=sqlite_url, webhooks=(hook.url,), alert_rate_threshold=(2, 60.0))
    with server.client() as client:
        for _ in range(2):
            _post_and_check_rate(server, client, make_report(served_certificate_chain=chain))
        assert hook.wait(2)
    assert server.state.alerts.flush(5)
    assert sorted(b["kind"] for b in hook.bodies) == ["host.rate", "incident.opened"]
    for body in hook.bodies:
        assert _ACTIVE.findall(body["text"]) == [], body["text"]
    opened = next(b for b in hook.bodies if b["kind"] == "incident.opened")
    assert opened["payload"]["issuer"] == hostile.cert.subject.rfc4514_string()
    assert ("@\u200bhere\\x0a[login]\u200b(http:\u200b//127.0.0.1:9/) !\u200b[p]"
            in opened["text"])
    assert "://" not in opened["text"]  # no bare link either


def test_alert_text_of_an_ordinary_report_reads_as_before(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any,
    webhook: Callable[..., WebhookReceiver],
) -> None:
    """Twin: an ordinary report's alert text is unchanged by the escaping."""
    hook = webhook()
    server = serve(db_url=sqlite_url, webhooks=(hook.url,))
    with server.client() as client:
        assert client.post("/reports", json=make_report()).status_code == 201
        assert hook.wait(1)
    assert server.state.alerts.flush(5)
    assert hook.bodies[0]["text"] == (
        f"tlspin: new pin failure incident for {HOST} (served by CN=mitmproxy,O=tlspin testing)"
    )


def test_zone_id_host_names_never_reach_a_webhook(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any,
    webhook: Callable[..., WebhookReceiver],
) -> None:
    """A host name carrying a zone ID full of markup is refused (400) before any alert; the
    next, valid report alerts as usual."""
    hook = webhook()
    server = serve(db_url=sqlite_url, webhooks=(hook.url,))
    smuggled = "::1%\n*ALERT* sign in again <!channel> @here"  # no "/": ipaddress refuses it
    with server.client() as client:
        refused = client.post("/reports", json=make_report(hostname=smuggled))
        accepted = client.post("/reports", json=make_report(hostname="::1"))
        assert hook.wait(1)
    assert server.state.alerts.flush(5)
    assert (refused.status_code, accepted.status_code) == (400, 201)
    assert [b["payload"]["hostname"] for b in hook.bodies] == ["::1"]


@pytest.mark.parametrize(
    ("text", "shown"),
    [("a\nb\r\u2028c", "a\\x0ab\\x0d\\u2028c"),
     ("<!here> & <@U1>", "&lt;!here&gt; &amp; &lt;@\u200bU1&gt;"),
     ("@all [x](y) ![i](j)", "@\u200ball [x]\u200b(y) !\u200b[i]\u200b(j)"),
     ("ok: 3 reports for api.example.com", "ok: 3 reports for api.example.com")],
)
def test_chat_text(text: str, shown: str) -> None:
    """chat_text escapes for Slack, defuses Markdown mentions, links and images, and keeps
    plain text as it is."""
    assert chat_text(text) == shown
