"""Verdicts that need no history: verification failures, deny lists, report-only rules, targets."""

from __future__ import annotations

import datetime as dt

import pytest

from tlspin.exceptions import PolicyError
from tlspin.monitor import Target, alert_for, load_targets, policy_targets
from tlspin.monitor.evaluate import reason_codes
from tlspin.monitor.targets import targets_from_data
from tlspin.policy import PinPolicy, PinRule
from tlspin.testing.servers import TLSServer

HOST = "api.example.test"


def test_untrusted_chain_is_red_even_when_its_key_is_pinned(pki, run) -> None:
    """A chain that fails CA verification never counts as pinned, though it is recorded."""
    rogue = pki.untrusted.issue(HOST)
    trusted = pki.int1.issue(HOST, key=rogue.key)
    policy = PinPolicy([PinRule([HOST], [rogue.pin, pki.backup.pin])])
    with TLSServer(rogue) as server:
        (bad,) = run(policy, [Target(HOST, server.port, "127.0.0.1")]).results
        server.set_leaf(trusted)
        (good,) = run(policy, [Target(HOST, server.port, "127.0.0.1")]).results
    assert bad.status == "red"
    assert reason_codes(bad.reasons) == {"cert-invalid"}
    assert bad.verified is False
    assert bad.matched == ()
    assert bad.redundant is None
    assert bad.chain[0].pin == rogue.pin  # the served chain is shown for diagnosis
    assert good.status == "green", good.reasons
    assert good.matched == ((rogue.pin, 0),)


def test_wrong_host_name_is_red(pki, run) -> None:
    """A certificate for another name fails host name verification: red."""
    other = pki.int1.issue("other.example.test")
    policy = PinPolicy([PinRule([HOST], [other.pin, pki.backup.pin])])
    with TLSServer(other) as server:
        (result,) = run(policy, [Target(HOST, server.port, "127.0.0.1")]).results
    assert result.status == "red"
    assert reason_codes(result.reasons) == {"cert-invalid"}
    assert result.matched == ()


def test_expired_certificate_is_red(pki, run) -> None:
    """An expired leaf is red with the expiry date, though its key is pinned."""
    expired = pki.int1.issue(
        HOST, not_before=dt.timedelta(days=-30), not_after=dt.timedelta(days=-2)
    )
    policy = PinPolicy([PinRule([HOST], [expired.pin, pki.backup.pin])])
    with TLSServer(expired) as server:
        (result,) = run(policy, [Target(HOST, server.port, "127.0.0.1")]).results
    assert result.status == "red"
    assert reason_codes(result.reasons) == {"cert-expired"}
    assert result.leaf_days_left is not None
    assert result.leaf_days_left < 0
    assert result.matched == ()


def test_denied_key_is_red(pki, run) -> None:
    """A denied intermediate in the verified chain is red even when another pin matches."""
    leaf = pki.int1.issue(HOST)
    allowed = PinPolicy([PinRule([HOST], [leaf.pin, pki.backup.pin])])
    denied = PinPolicy([PinRule([HOST], [leaf.pin, pki.backup.pin], deny=[pki.int1.pin])])
    with TLSServer(leaf) as server:
        (ok,) = run(allowed, [Target(HOST, server.port, "127.0.0.1")]).results
        (bad,) = run(denied, [Target(HOST, server.port, "127.0.0.1")]).results
    assert ok.status == "green"
    assert bad.status == "red"
    assert reason_codes(bad.reasons) == {"pin-denied"}


def test_report_only_mismatch_is_amber(pki, run) -> None:
    """A report-only rule that would refuse the chain is amber, not red: clients connect."""
    leaf = pki.int1.issue(HOST)
    report = PinPolicy([PinRule([HOST], [pki.int2.pin, pki.backup.pin], mode="report")])
    enforce = PinPolicy([PinRule([HOST], [pki.int2.pin, pki.backup.pin])])
    with TLSServer(leaf) as server:
        (soft,) = run(report, [Target(HOST, server.port, "127.0.0.1")]).results
        (hard,) = run(enforce, [Target(HOST, server.port, "127.0.0.1")]).results
    assert soft.status == "amber"
    assert reason_codes(soft.reasons) == {"pin-unenforced"}
    assert hard.status == "red"


def test_each_edge_ip_gets_its_own_result_with_sni(pki, run) -> None:
    """Listing IPs probes each edge by address, sending the host name as SNI."""
    default = pki.untrusted.issue("fallback.example.test")
    leaf = pki.int1.issue(HOST)
    policy = PinPolicy([PinRule([HOST], [leaf.pin, pki.backup.pin])])
    with TLSServer(default, sni={HOST: leaf}) as v4:
        data = {"policy_hosts": False,
                "endpoint": [{"host": HOST, "port": v4.port, "ips": ["127.0.0.1"]}]}
        targets = targets_from_data(data, policy)
        result = run(policy, targets)
        assert HOST in v4.server_names
    assert [t.endpoint for t in targets] == [f"{HOST}:{v4.port}@127.0.0.1"]
    assert [r.status for r in result.results] == ["green"]


def test_targets_from_policy_and_endpoints_file(tmp_path) -> None:
    """Policy hosts default to 443, and the endpoints file replaces a host's defaults."""
    policy = PinPolicy([
        PinRule(["a.example.test", "*.wild.example.test"], ["sha256/" + "A" * 43 + "=",
                                                             "sha256/" + "B" * 43 + "="]),
        PinRule(["b.example.test"], ["sha256/" + "C" * 43 + "=", "sha256/" + "D" * 43 + "="]),
    ])
    assert policy_targets(policy) == [Target("a.example.test"), Target("b.example.test")]
    on_ports = policy.with_rules([
        PinRule(["a.example.test"], policy.rules[0].pins, ports=[8443, 9443]), policy.rules[1]
    ])
    assert policy_targets(on_ports) == [
        Target("a.example.test", 8443), Target("a.example.test", 9443), Target("b.example.test")
    ]
    path = tmp_path / "endpoints.toml"
    path.write_text(
        '[[endpoint]]\nhost = "A.example.test"\nport = 8443\nips = ["192.0.2.1", "[2001:db8::1]"]\n'
        '[[endpoint]]\nhost = "x.wild.example.test"\n'
    )
    targets = load_targets(policy, path)
    assert [t.endpoint for t in targets] == [
        "b.example.test:443",
        "a.example.test:8443@192.0.2.1",
        "a.example.test:8443@2001:db8::1",
        "x.wild.example.test:443",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[endpoint]]\nhost = "unpinned.example.org"\n', "not covered by any rule"),
        ('[[endpoint]]\nhost = "a.example.test"\nport = 70000\n', "'port' must be"),
        ('[[endpoint]]\nhost = "a.example.test"\nips = ["not-an-ip"]\n', "IPv4 or IPv6"),
        ('[[endpoint]]\nhost = "a.example.test"\nproto = "h3"\n', "unknown key"),
        ("endpoint = 3\n", "array of tables"),
        ("[[endpoint\n", "invalid TOML"),
    ],
)
def test_bad_endpoints_file_is_refused(tmp_path, text: str, message: str) -> None:
    """A malformed endpoints file raises a PolicyError that says what is wrong."""
    policy = PinPolicy([PinRule(["a.example.test"], ["sha256/" + "A" * 43 + "=",
                                                     "sha256/" + "B" * 43 + "="])])
    path = tmp_path / "endpoints.toml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=message):
        load_targets(policy, path)


def test_alert_decision_by_reason_code() -> None:
    """Alerts fire on turning red and on a new amber code, not on changed day counts."""
    base = {"endpoint": "h:443", "host": "h", "port": 443, "ip": None}
    amber5 = {**base, "status": "amber", "reasons": ["rule-expiring: expires in 5 days"]}
    amber4 = {**base, "status": "amber", "reasons": ["rule-expiring: expires in 4 days"]}
    amber_more = {**amber4, "reasons": [*amber4["reasons"], "no-redundancy: only the leaf"]}
    red = {**base, "status": "red", "reasons": ["unreachable: refused"]}
    green = {**base, "status": "green", "reasons": []}
    assert alert_for(amber5, None) is not None
    assert alert_for(amber4, amber5) is None
    alert = alert_for(amber_more, amber4)
    assert alert is not None
    assert alert.payload["new_reasons"] == ["no-redundancy: only the leaf"]
    assert alert_for(red, green) is not None
    assert alert_for(red, red) is None
    assert alert_for(green, red) is None
