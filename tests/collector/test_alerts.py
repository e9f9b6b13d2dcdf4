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
    # The five alerts; a digest of the first one the cap held back, at once; and a digest of
    # the rest, which was due a minute later and went out when the sender closed.
    assert len(hook.bodies) == 7
    summary = [b for b in hook.bodies if b["kind"] == "alerts.suppressed"]
    assert [[a["host"] for a in b["payload"]["held_back"]] for b in summary] == [
        ["endpoint-4"], [f"endpoint-{i}" for i in range(5, 10)]]
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


# -- Alerts held back by the caps: every one named in a digest, listed fairly -----------------

def _digested(bodies: list[Any]) -> list[str]:
    """The hosts the alerts.suppressed digests among *bodies* name, in order."""
    return [a["host"] for b in bodies if b["kind"] == "alerts.suppressed"
            for a in b["payload"]["held_back"]]


def _wait_for_digest_of(hook: WebhookReceiver, host: str) -> dict[str, Any]:
    """The first digest naming *host*; fails if none arrives within a generous timeout."""
    with hook.cond:
        assert hook.cond.wait_for(lambda: host in _digested(hook.bodies), 60), hook.bodies
        return next(b for b in hook.bodies if b["kind"] == "alerts.suppressed"
                    and host in _digested([b]))


def test_decoys_from_many_senders_cannot_keep_an_alert_out_of_the_digests(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any,
    webhook: Callable[..., WebhookReceiver],
) -> None:
    """Attack: decoy incidents from 40 senders, one each (under every per-host and per-sender
    cap), use up the overall cap of 30; the first one held back goes out in a summary at once.
    Then bank.example is reported from another address, and nothing follows. Its alert is held
    back too, and the timed digest names it: every held-back alert is named in a digest."""
    hook = webhook()
    server = serve(db_url=sqlite_url, webhooks=(hook.url,), trust_forwarded_for=True,
                   alert_summary_seconds=5.0)
    decoys = [unique_host() for _ in range(40)]
    with server.client(token=None) as client:
        for i, host in enumerate(decoys):
            assert client.post("/reports", json=make_report(hostname=host),
                               headers={"X-Forwarded-For": f"127.0.1.{i + 1}"}).status_code == 201
        assert client.post("/reports", json=make_report(hostname="bank.example"),
                           headers={"X-Forwarded-For": "127.0.0.77"}).status_code == 201
    digest = _wait_for_digest_of(hook, "bank.example")
    assert "bank.example" in digest["text"]
    assert server.state.alerts.flush(10)
    opened = [b["payload"]["hostname"] for b in hook.bodies if b["kind"] == "incident.opened"]
    assert len(opened) == 30
    assert "bank.example" not in opened
    named = _digested(hook.bodies)
    assert sorted(opened + named) == sorted([*decoys, "bank.example"])
    assert server.state.alerts.stats.capped == 11


def test_thousands_of_decoys_from_a_few_senders_do_not_crowd_the_digest(
    webhook: Callable[..., WebhookReceiver],
) -> None:
    """Attack: six senders flood 3,000 decoy alerts (one host name carrying chat markup),
    filling the caps; then a real alert from another sender and a monitor alert (no sender)
    are held back. The digest lists hosts round-robin over the senders, so both are named in
    its first round, in the text too; the text and payload stay bounded, the counts add up,
    and the decoy's markup is inert."""
    hook = webhook()
    sender = AlertSender([hook.url], summary_interval=0.5)
    try:
        for i in range(3000):
            host = "<!channel> @here [x](http://h/)" if i == 40 else f"d{i}.decoy.test"
            sender.send("incident.opened", f"incident:{i}", {},
                        scopes=(f"host:{host}", f"sender:127.0.2.{i % 6}"))
        assert not sender.send("incident.opened", "incident:real", {},
                               scopes=("host:bank.example", "sender:127.0.0.77"))
        assert not sender.send("monitor.red", "monitor:bank", {"endpoint": "bank.example:443"})
        digest = _wait_for_digest_of(hook, "bank.example:443")
    finally:
        sender.close()
    listed = digest["payload"]["held_back"]
    assert [(a["host"], a["sender"]) for a in listed[6:8]] == [
        ("bank.example", "127.0.0.77"), ("bank.example:443", None)]
    assert [a["sender"] for a in listed[:6]] == [f"127.0.2.{i % 6}" for i in range(31, 37)]
    assert len(listed) == 500
    # 2,970 decoys held back, the first named at once; 100 remembered per sender.
    payload = digest["payload"]
    assert (payload["suppressed"], payload["hosts"], payload["not_itemised"]) == (
        2971, 602, 2971 - 602)
    text = digest["text"]
    assert "bank.example, bank.example:443" in text
    assert text.count(".decoy.test") == 47  # and the markup one
    assert "and 552 more hosts; 2369 more alert(s) not itemised" in text
    assert "&lt;!channel&gt; @\u200bhere [x]\u200b(http:\u200b//h/)" in text
    for body in hook.bodies:
        assert _ACTIVE.findall(body["text"]) == [], body["text"]


def test_an_alert_held_back_after_the_summary_is_named_with_no_traffic_after_it(
    webhook: Callable[..., WebhookReceiver],
) -> None:
    """A capped alert that comes after the immediate summary, with nothing after it, is named
    by the digest the sender's timer sends (here after 0.5 s); alerts with no scopes (the
    monitor's) are named by their endpoint."""
    hook = webhook()
    sender = AlertSender([hook.url], max_per_minute=1, summary_interval=0.5)
    try:
        assert sender.send("monitor.red", "monitor:a", {"endpoint": "a.example:443"})
        assert not sender.send("monitor.red", "monitor:b", {"endpoint": "b.example:443"})
        assert not sender.send("monitor.red", "monitor:c", {"endpoint": "c.example:443"})
        assert hook.wait(3, timeout=60)  # before close(), which would send it too
    finally:
        sender.close()
    assert [b["kind"] for b in hook.bodies] == [
        "monitor.red", "alerts.suppressed", "alerts.suppressed"]
    assert [[(a["host"], a["sender"]) for a in b["payload"]["held_back"]]
            for b in hook.bodies[1:]] == [[("b.example:443", None)], [("c.example:443", None)]]
    assert "c.example:443" in hook.bodies[2]["text"]


def test_closing_the_sender_sends_the_digest_still_due(
    webhook: Callable[..., WebhookReceiver],
) -> None:
    """A run that ends within the minute (``tlspin monitor``) still names what it held back."""
    hook = webhook()
    sender = AlertSender([hook.url], max_per_minute=1)
    for name in "abc":
        sender.send("monitor.red", f"monitor:{name}", {"endpoint": f"{name}.example:443"})
    sender.close()
    assert _digested(hook.bodies) == ["b.example:443", "c.example:443"]


def test_alerts_under_the_caps_go_out_as_themselves_without_a_digest(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any,
    webhook: Callable[..., WebhookReceiver],
) -> None:
    """Twin: eight incidents from four senders stay under every cap: each alert goes out as
    itself, and no digest is sent, not even when the collector stops."""
    hook = webhook()
    server = serve(db_url=sqlite_url, webhooks=(hook.url,), trust_forwarded_for=True,
                   alert_summary_seconds=0.2)
    hosts = [unique_host() for _ in range(8)]
    with server.client(token=None) as client:
        for i, host in enumerate(hosts):
            assert client.post("/reports", json=make_report(hostname=host),
                               headers={"X-Forwarded-For": f"127.0.1.{i % 4 + 1}"}
                               ).status_code == 201
        assert hook.wait(8, timeout=30)
    server.stop()  # closing the alert sender would send a digest still due
    assert [b["kind"] for b in hook.bodies] == ["incident.opened"] * 8
    assert sorted(b["payload"]["hostname"] for b in hook.bodies) == sorted(hosts)
    assert server.state.alerts is not None
    assert server.state.alerts.stats.capped == 0
