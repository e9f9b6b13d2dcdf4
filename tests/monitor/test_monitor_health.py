"""Pin-health scenarios against real loopback TLS servers that change between runs."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tlspin.collector.alerts import AlertSender
from tlspin.monitor import EndpointResult, MonitorRun, Target, send_alerts
from tlspin.monitor.evaluate import reason_codes
from tlspin.policy import PinInfo, PinPolicy, PinRule
from tlspin.testing.servers import TLSServer

HOST = "api.example.test"


def target(server: TLSServer, host: str = HOST) -> Target:
    """The endpoint of *server*, reached by IP with *host* as SNI."""
    return Target(host, server.port, "127.0.0.1")


def only(run: MonitorRun) -> EndpointResult:
    """The single result of a one-endpoint run."""
    (result,) = run.results
    return result


def codes(result: EndpointResult) -> frozenset[str]:
    """The reason codes of *result*."""
    return reason_codes(result.reasons)


def previous_of(run: MonitorRun) -> dict[str, dict[str, Any]]:
    """A run's results in the form the next run reads as its previous run."""
    return {r.target.endpoint: r.as_dict() for r in run.results}


def test_renewal_with_same_key_stays_green(pki, run) -> None:
    """A renewal that keeps the pinned key is green, with no key change recorded."""
    leaf = pki.int1.issue(HOST)
    policy = PinPolicy([PinRule([HOST], [leaf.pin, pki.backup.pin])])
    with TLSServer(leaf) as server:
        first = only(run(policy, [target(server)]))
        server.set_leaf(pki.int1.reissue(leaf, same_key=True))
        second = only(run(policy, [target(server)], previous=previous_of_result(first)))
    assert first.status == "green", first.reasons
    assert second.status == "green", second.reasons
    assert second.matched == ((leaf.pin, 0),)
    assert second.redundant is True
    assert second.changes == ()


def previous_of_result(result: EndpointResult) -> dict[str, dict[str, Any]]:
    """One result as a previous-run mapping."""
    return {result.target.endpoint: result.as_dict()}


def test_renewal_with_unpinned_key_goes_red_and_alerts(pki, run, webhook) -> None:
    """A renewal with a new, unpinned key is red, records the new key, and fires one alert."""
    leaf = pki.int1.issue(HOST)
    policy = PinPolicy([PinRule([HOST], [leaf.pin, pki.backup.pin])])
    sender = AlertSender([webhook.url], backoff=0.05)
    try:
        with TLSServer(leaf) as server:
            first = run(policy, [target(server)])
            assert send_alerts([r.as_dict() for r in first.results], {}, sender) == []
            server.set_leaf(pki.int1.reissue(leaf, same_key=False))
            before = previous_of(first)
            second = run(policy, [target(server)], previous=before)
            sent = send_alerts([r.as_dict() for r in second.results], before, sender)
            # The same condition in the next run is not alerted again.
            third = run(policy, [target(server)], previous=previous_of(second))
            again = send_alerts([r.as_dict() for r in third.results], previous_of(second), sender)
        bodies = webhook.wait_for(1)
        assert sender.flush(10)
    finally:
        sender.close()
    result = only(second)
    assert result.status == "red"
    assert "pin-mismatch" in codes(result)
    assert result.matched == ()
    assert any(c.startswith("new-key:") for c in result.changes)
    assert [a.kind for a in sent] == ["monitor.red"]
    assert again == []
    assert len(bodies) == 1
    assert bodies[0]["kind"] == "monitor.red"
    assert bodies[0]["payload"]["endpoint"] == result.target.endpoint
    assert bodies[0]["payload"]["previous_status"] == "green"


def test_alert_for_new_amber_reason_only(pki, run, webhook) -> None:
    """An amber endpoint alerts once for a new reason, not again while the reason persists."""
    leaf = pki.int1.issue(HOST)
    old = PinInfo(role="leaf")
    # Only the served leaf key can match: no redundancy (amber).
    policy = PinPolicy([PinRule([HOST], [leaf.pin, pki.int2.pin],
                                pin_info={pki.int2.pin: PinInfo(role="intermediate"),
                                          leaf.pin: old})])
    sender = AlertSender([webhook.url])
    try:
        with TLSServer(leaf) as server:
            first = run(policy, [target(server)])
            sent_first = send_alerts([r.as_dict() for r in first.results], {}, sender)
            second = run(policy, [target(server)], previous=previous_of(first))
            sent_second = send_alerts(
                [r.as_dict() for r in second.results], previous_of(first), sender
            )
        webhook.wait_for(1)
        assert sender.flush(10)
    finally:
        sender.close()
    assert only(first).status == "amber"
    assert codes(only(first)) == {"no-redundancy"}
    assert [a.kind for a in sent_first] == ["monitor.amber"]
    assert sent_second == []
    assert len(webhook.bodies) == 1


def test_expiring_leaf_without_next_key_goes_amber(pki, run) -> None:
    """A leaf expiring within the window is amber when its renewal key is not pinned."""
    soon = pki.int1.issue(HOST, not_after=dt.timedelta(days=5))
    stale = PinInfo(role="leaf")
    policy = PinPolicy([PinRule([HOST], [soon.pin, pki.int2.pin],
                                pin_info={pki.int2.pin: PinInfo(role="intermediate"),
                                          soon.pin: stale})])
    with TLSServer(soon) as server:
        result = only(run(policy, [target(server)], warn_days=30))
        short_window = only(run(policy, [target(server)], warn_days=3))
    assert result.status == "amber"
    assert "cert-expiring" in codes(result)
    assert result.leaf_days_left is not None
    assert 3 < result.leaf_days_left <= 5
    # Outside a 3-day window the same certificate is not an expiry problem.
    assert "cert-expiring" not in codes(short_window)


def test_expiring_leaf_with_backup_pin_is_green(pki, run) -> None:
    """A leaf expiring soon is no pin risk when a backup key for the renewal is pinned."""
    soon = pki.int1.issue(HOST, not_after=dt.timedelta(days=5))
    policy = PinPolicy([PinRule([HOST], [soon.pin, pki.backup.pin])])
    with TLSServer(soon) as server:
        result = only(run(policy, [target(server)], warn_days=30))
    assert result.status == "green", result.reasons
    assert result.leaf_days_left is not None
    assert result.leaf_days_left <= 5


def test_rule_expiring_soon_goes_amber(pki, run) -> None:
    """A rule whose expires date is within the window is amber with its days left."""
    leaf = pki.int1.issue(HOST)
    expires = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=10)
    policy = PinPolicy([PinRule([HOST], [leaf.pin, pki.backup.pin], expires=expires)])
    with TLSServer(leaf) as server:
        result = only(run(policy, [target(server)], warn_days=30))
        later = only(run(policy, [target(server)], warn_days=5))
    assert result.status == "amber"
    assert codes(result) == {"rule-expiring"}
    assert result.rule_days_left == 10
    assert later.status == "green"


def test_intermediate_replaced_red_unless_root_pin_still_matches(pki, run) -> None:
    """A swapped intermediate is red with only its pin, amber when a root pin still matches."""
    leaf = pki.int1.issue(HOST)
    moved = pki.int2.issue(HOST, key=leaf.key)
    roles = {pki.int1.pin: PinInfo(role="intermediate"), pki.root.pin: PinInfo(role="root")}
    intermediate_only = PinPolicy([PinRule([HOST], [pki.int1.pin, pki.backup.pin])])
    with_root = PinPolicy([PinRule([HOST], [pki.int1.pin, pki.root.pin], pin_info=roles)])
    with TLSServer(leaf) as server:
        before_a = only(run(intermediate_only, [target(server)]))
        before_b = only(run(with_root, [target(server)]))
        server.set_leaf(moved)
        after_a = only(run(intermediate_only, [target(server)],
                           previous=previous_of_result(before_a)))
        after_b = only(run(with_root, [target(server)], previous=previous_of_result(before_b)))
    assert before_a.status == "green", before_a.reasons
    assert before_b.status == "green", before_b.reasons
    assert after_a.status == "red"
    assert "pin-mismatch" in codes(after_a)
    assert after_b.status == "amber"
    assert codes(after_b) == {"no-redundancy"}
    assert after_b.matched == ((pki.root.pin, 2),)
    assert any(c.startswith("new-issuer:") and "Issuing CA 2" in c for c in after_b.changes)


def test_pin_that_stopped_matching_is_not_a_backup(pki, run) -> None:
    """Without roles, a pin that matched last run and no longer does counts as stale."""
    leaf = pki.int1.issue(HOST)
    moved = pki.int2.issue(HOST, key=leaf.key)
    policy = PinPolicy([PinRule([HOST], [pki.int1.pin, pki.root.pin])])
    with TLSServer(leaf) as server:
        before = only(run(policy, [target(server)]))
        server.set_leaf(moved)
        with_history = only(run(policy, [target(server)], previous=previous_of_result(before)))
        without_history = only(run(policy, [target(server)]))
    assert with_history.status == "amber"
    assert with_history.redundant is False
    # With no history the unmatched intermediate pin looks like a spare key.
    assert without_history.redundant is True
    assert without_history.status == "green"


def test_unreachable_port_is_red(pki, run, closed_port) -> None:
    """A port with nothing listening is red with the connection error, and no chain."""
    leaf = pki.int1.issue(HOST)
    policy = PinPolicy([PinRule([HOST], [leaf.pin, pki.backup.pin])])
    result = only(run(policy, [Target(HOST, closed_port, "127.0.0.1")]))
    assert result.status == "red"
    assert codes(result) == {"unreachable"}
    assert result.chain == ()
    assert result.error is not None


def test_slow_endpoint_times_out_without_stalling_others(pki, run, silent_server) -> None:
    """A server that never answers times out while the other probes all finish before it."""
    leaf = pki.int1.issue(HOST)
    names = [f"n{i}.example.test" for i in range(6)]
    policy = PinPolicy([PinRule([HOST, *names], [leaf.pin, pki.backup.pin])])
    finished: list[str] = []
    slow = Target(HOST, silent_server.port, "127.0.0.1")
    with TLSServer(leaf) as fast:
        # Distinct fast endpoints: one server answering several SNI names.
        for name in names:
            fast.set_leaf(pki.int1.issue(name, key=leaf.key), server_name=name)
        quick = [Target(name, fast.port, "127.0.0.1") for name in names]
        result = run(policy, [slow, *quick], concurrency=2, timeout=1.5,
                     on_result=lambda r: finished.append(r.target.endpoint))
    by_endpoint = {r.target.endpoint: r for r in result.results}
    assert by_endpoint[slow.endpoint].status == "red"
    assert codes(by_endpoint[slow.endpoint]) == {"timeout"}
    assert all(by_endpoint[t.endpoint].status == "green" for t in quick)
    # With two slots, every fast probe completed while the slow one held the other slot.
    assert finished[-1] == slow.endpoint
    assert sorted(finished[:-1]) == sorted(t.endpoint for t in quick)
    assert silent_server.accepted  # the slow server really took the connection
