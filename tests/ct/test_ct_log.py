"""``tlspin ct``: reading a real-format RFC 6962 log on loopback and flagging unpinned keys."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tlspin.cli import main
from tlspin.ct import CTError, CTState, CTVerificationError, LogClient, parse_entry, scan_log
from tlspin.policy import PinPolicy, PinRule
from tlspin.testing.pki import CA

from .conftest import der, make_precert

API = "api.example.test"


def pinned_policy(ct_pki, *extra: PinRule) -> PinPolicy:
    """Pins the issuing CA (plus a backup) for the API host and the shop subtree."""
    return PinPolicy([
        PinRule([API, "**.shop.example.test"], [ct_pki.pinned_int.pin, ct_pki.backup.pin]),
        *extra,
    ])


def log_leaf(log, ca: CA, *names: str, key=None) -> int:
    """Issue a leaf from *ca* and log it with its chain."""
    leaf = ca.issue(*names, key=key)
    chain = [der(c) for c in leaf.chain[1:]] + [ca.root_ca.cert_der]
    return log.add_x509(leaf.cert_der, chain)


def test_misissued_certificate_flagged_known_keys_not(ct_pki, log) -> None:
    """Only the certificate for a pinned name whose keys are all unpinned is flagged."""
    pinned_leaf = ct_pki.rogue_int.issue("leafpin.example.test")
    policy = pinned_policy(
        ct_pki,
        PinRule(["leafpin.example.test"], [pinned_leaf.pin, ct_pki.backup.pin]),
    )
    known_issuer = log_leaf(log, ct_pki.pinned_int, API)
    rogue = log_leaf(log, ct_pki.rogue_int, API, "www.unrelated.example.org")
    log_leaf(log, ct_pki.rogue_int, "www.unrelated.example.org")
    # A key pinned on the leaf itself, even when another CA issues for it, is known.
    log_leaf(log, ct_pki.rogue_int, "leafpin.example.test", key=pinned_leaf.key)
    report = scan_log(LogClient(log.url, public_key=log.public_key_pem), policy)
    assert report.records == 4
    assert report.root_verified is True
    assert [f.record.index for f in report.flagged] == [rogue]
    finding = report.flagged[0]
    assert finding.verdict == "unpinned-key"
    assert finding.names == (API,)
    assert finding.record.entry_type == "x509"
    assert known_issuer not in [f.record.index for f in report.findings]


def test_wildcard_certificate_covers_pinned_host(ct_pki, log) -> None:
    """A wildcard certificate from an unpinned CA is flagged for the exact host it covers."""
    policy = pinned_policy(ct_pki)
    wildcard = log_leaf(log, ct_pki.rogue_int, "*.example.test")
    deeper = log_leaf(log, ct_pki.rogue_int, "*.deep.api.example.test")
    report = scan_log(LogClient(log.url), policy)
    assert [f.record.index for f in report.flagged] == [wildcard]
    assert deeper not in [f.record.index for f in report.findings]


def test_precertificates_handled(ct_pki, log) -> None:
    """Precert entries are parsed from their TBS; the issuer key hash counts as the issuer pin."""
    policy = pinned_policy(ct_pki)
    rogue_pre, rogue_tbs, rogue_key = make_precert(ct_pki.rogue_int, "x.shop.example.test")
    good_pre, good_tbs, _ = make_precert(ct_pki.pinned_int, "y.shop.example.test")
    bad = log.add_precert(rogue_tbs, ct_pki.rogue_int.spki_der, rogue_pre,
                          [ct_pki.rogue_int.cert_der, ct_pki.rogue_root.cert_der])
    log.add_precert(good_tbs, ct_pki.pinned_int.spki_der, good_pre,
                    [ct_pki.pinned_int.cert_der, ct_pki.root.cert_der])
    report = scan_log(LogClient(log.url), policy)
    assert report.malformed == []
    assert report.root_verified is True
    (finding,) = report.flagged
    assert finding.record.index == bad
    assert finding.record.entry_type == "precert"
    assert finding.names == ("x.shop.example.test",)
    from tlspin.pins import Pin

    assert finding.record.spki_sha256 == Pin.from_public_key(rogue_key.public_key()).digest


def test_precert_entry_fields_parsed(ct_pki, log) -> None:
    """A precert leaf gives the TBS names, validity and the log's issuer key hash."""
    pre, tbs, _ = make_precert(ct_pki.pinned_int, "p.shop.example.test", "q.shop.example.test")
    log.add_precert(tbs, ct_pki.pinned_int.spki_der, pre, [ct_pki.pinned_int.cert_der])
    record = parse_entry(log.leaves[0], log.extra[0], index=0)
    from tlspin.pins import Pin

    assert record.entry_type == "precert"
    assert record.names == ("p.shop.example.test", "q.shop.example.test")
    assert record.chain_keys[0] == Pin.parse(ct_pki.pinned_int.pin).digest
    assert record.not_after is not None
    assert record.timestamp is not None


def test_resume_from_remembered_position(ct_pki, log, tmp_path) -> None:
    """A second scan reads only the entries added since the first, and verifies the new root."""
    policy = pinned_policy(ct_pki)
    state = CTState(tmp_path / "ct.json")
    client = LogClient(log.url, public_key=log.public_key_pem)
    for _ in range(4):
        log_leaf(log, ct_pki.pinned_int, API)
    first = scan_log(client, policy, state=state)
    log.requests.clear()
    new = [log_leaf(log, ct_pki.rogue_int, API), log_leaf(log, ct_pki.pinned_int, API),
           log_leaf(log, ct_pki.rogue_int, "z.shop.example.test")]
    second = scan_log(client, policy, state=state)
    third = scan_log(client, policy, state=state)
    assert (first.start, first.end, first.root_verified) == (0, 4, True)
    assert first.flagged == []
    assert (second.start, second.end, second.root_verified) == (4, 7, True)
    assert [f.record.index for f in second.flagged] == [new[0], new[2]]
    assert (third.start, third.end, third.records) == (7, 7, 0)
    assert third.root_verified is True
    assert min(log.get_entries_starts()) == 4


def test_max_entries_then_resume_still_verifies_root(ct_pki, log, tmp_path) -> None:
    """Stopping mid-tree defers the root check; the run that reaches the end performs it."""
    policy = pinned_policy(ct_pki)
    state = CTState(tmp_path / "ct.json")
    for _ in range(5):
        log_leaf(log, ct_pki.pinned_int, API)
    part = scan_log(LogClient(log.url), policy, state=state, max_entries=2)
    rest = scan_log(LogClient(log.url), policy, state=state)
    assert (part.end, part.root_verified) == (2, None)
    assert (rest.start, rest.end, rest.root_verified) == (2, 5, True)


def test_log_serving_other_entries_than_signed_is_caught(ct_pki, log, tmp_path) -> None:
    """An entry swapped after signing makes the Merkle root check fail."""
    policy = pinned_policy(ct_pki)
    log_leaf(log, ct_pki.pinned_int, API)
    log_leaf(log, ct_pki.rogue_int, API)
    log_leaf(log, ct_pki.pinned_int, API)
    log.served_override[1] = log.leaves[0]  # hide the rogue certificate
    report = scan_log(LogClient(log.url), policy, state=CTState(tmp_path / "ct.json"))
    assert report.root_verified is False
    assert report.records == 3


def test_tree_head_signature_checked(ct_pki, log) -> None:
    """The tree head verifies with the log's key and fails with another key."""
    log_leaf(log, ct_pki.pinned_int, API)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert LogClient(log.url, public_key=log.public_key_pem).get_sth().tree_size == 1
    with pytest.raises(CTVerificationError, match="does not verify"):
        LogClient(log.url, public_key=other).get_sth()


def test_shrinking_tree_refused(ct_pki, log, tmp_path) -> None:
    """A tree head smaller than one seen before is refused."""
    policy = pinned_policy(ct_pki)
    state = CTState(tmp_path / "ct.json")
    log_leaf(log, ct_pki.pinned_int, API)
    log_leaf(log, ct_pki.pinned_int, API)
    scan_log(LogClient(log.url), policy, state=state)
    log.leaves.pop()
    log.extra.pop()
    with pytest.raises(CTVerificationError, match="shrank"):
        scan_log(LogClient(log.url), policy, state=state)


def test_malformed_entry_reported_and_skipped(ct_pki, log) -> None:
    """A garbage leaf is listed as malformed while the entries around it are still checked."""
    policy = pinned_policy(ct_pki)
    log._add(b"\x00\x00" + b"\xff" * 12, b"")
    rogue = log_leaf(log, ct_pki.rogue_int, API)
    report = scan_log(LogClient(log.url), policy)
    assert [i for i, _ in report.malformed] == [0]
    assert [f.record.index for f in report.flagged] == [rogue]
    assert report.root_verified is True


def test_ct_check_cli(ct_pki, log, tmp_path) -> None:
    """The CLI exits 1 on flagged certificates, 0 when nothing new is flagged, 2 on a bad log."""
    policy = tmp_path / "pins.toml"
    policy.write_text(
        f'[[rule]]\nhosts = ["{API}"]\npins = ["{ct_pki.pinned_int.pin}", "{ct_pki.backup.pin}"]\n'
    )
    key = tmp_path / "log.pem"
    key.write_bytes(log.public_key_pem)
    log_leaf(log, ct_pki.rogue_int, API)
    args = ["ct", "check", str(policy), "--log", log.url, "--log-key", str(key),
            "--state", str(tmp_path / "ct.json")]
    runner = CliRunner()
    first = runner.invoke(main, [*args, "--json"])
    second = runner.invoke(main, args)
    log.served_override[0] = b"\x00" * 20
    log_leaf(log, ct_pki.pinned_int, API)
    tampered = runner.invoke(main, [*args, "--start", "0"])
    both = runner.invoke(main, [*args, "--from-file", str(key)])
    assert first.exit_code == 1, first.output
    doc = json.loads(first.stdout)
    assert doc["flagged"] == 1
    assert doc["findings"][0]["names"] == [API]
    assert doc["root_verified"] is True
    assert second.exit_code == 0, second.output
    assert tampered.exit_code == 2, tampered.output
    assert "Merkle root" in tampered.stderr
    assert both.exit_code == 64, both.output


def test_a_log_error_response_is_closed_at_once(log) -> None:
    """An HTTP error from the log raises CTError with the status and closes the error
    response at once; the twin at the log's right URL answers."""
    import urllib.error

    with pytest.raises(CTError, match="HTTP 404") as caught:
        LogClient(log.url + "missing/").get_sth()
    error = caught.value.__context__
    assert isinstance(error, urllib.error.HTTPError)
    assert error.fp is None or error.fp.closed
    assert LogClient(log.url).get_sth().tree_size == len(log.leaves)
