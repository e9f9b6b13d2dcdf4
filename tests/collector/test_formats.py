"""Report parsing: tlspin, RFC 7469 and TrustKit (iOS, Android) formats, and malformed input."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tlspin.collector.formats import ReportError, parse_report
from tlspin.testing.pki import spki_pin

from .conftest import HOST, PKI


def _pem(der: bytes) -> str:
    b64 = base64.b64encode(der).decode()
    return "-----BEGIN CERTIFICATE-----\n" + b64 + "\n-----END CERTIFICATE-----\n"


def _body(data: Any) -> bytes:
    return json.dumps(data).encode()


def test_tlspin_report_is_normalised(make_report: Any, pki: PKI) -> None:
    """A tlspin report keeps its host, port, mode, app and the served chain's pins in order."""
    parsed = parse_report(_body(make_report()))
    assert parsed.kind == "tlspin"
    assert (parsed.hostname, parsed.port, parsed.mode, parsed.reason) == (
        HOST, 443, "report", "mismatch"
    )
    assert (parsed.app_id, parsed.app_version) == ("com.example.app", "1.0")
    assert parsed.observed_pins == [spki_pin(d) for d in pki.mitm_chain]
    assert set(parsed.known_pins) == {pki.intermediate.pin, pki.backup_pin}
    assert parsed.issuer == "CN=mitmproxy,O=tlspin testing"


def test_rfc7469_report(pki: PKI) -> None:
    """An HPKP report as RFC 7469 §3 defines it is recognised and read."""
    body = {
        "date-time": "2024-03-01T10:11:12Z",
        "hostname": "API.tlspin.test.",
        "port": 8443,
        "effective-expiration-date": "2024-06-01T00:00:00Z",
        "include-subdomains": True,
        "noted-hostname": "tlspin.test",
        "served-certificate-chain": [_pem(d) for d in pki.mitm_chain],
        "validated-certificate-chain": [_pem(d) for d in pki.mitm_chain],
        "known-pins": [f'pin-sha256="{pki.intermediate.pin[7:]}"',
                       f'pin-sha256="{pki.backup_pin[7:]}"'],
    }
    parsed = parse_report(_body(body))
    assert parsed.kind == "hpkp"
    assert (parsed.hostname, parsed.port, parsed.noted_hostname) == (HOST, 8443, "tlspin.test")
    assert parsed.client_time is not None
    assert parsed.client_time.hour == 10
    assert set(parsed.known_pins) == {pki.intermediate.pin, pki.backup_pin}
    assert parsed.mode is None


def test_trustkit_ios_report(pki: PKI) -> None:
    """TrustKit iOS fields (TSKPinFailureReport.m): bundle id, enforce flag, validation result."""
    body = {
        "app-bundle-id": "com.example.ios",
        "app-version": "4.2",
        "app-platform": "IOS",
        "app-platform-version": "17.4",
        "app-vendor-id": "0A1B2C3D-0000-0000-0000-000000000000",
        "trustkit-version": "3.0.3",
        "date-time": "2024-03-01T10:11:12Z",
        "hostname": HOST,
        "port": 443,
        "noted-hostname": HOST,
        "include-subdomains": False,
        "enforce-pinning": True,
        "validated-certificate-chain": [_pem(d) for d in pki.mitm_chain],
        "known-pins": [f'pin-sha256="{pki.intermediate.pin[7:]}"'],
        "validation-result": 1,
        "known-pins-expiration-date": "2025-01-01",
    }
    parsed = parse_report(_body(body))
    assert parsed.kind == "trustkit-ios"
    assert (parsed.app_id, parsed.app_version, parsed.mode, parsed.reason) == (
        "com.example.ios", "4.2", "enforce", "mismatch"
    )
    # No served chain in iOS reports: the validated chain stands in for it.
    assert parsed.observed_pins == [spki_pin(d) for d in pki.mitm_chain]


def test_trustkit_android_report(pki: PKI) -> None:
    """TrustKit-Android fields (PinningFailureReport.java), including its port 0 and date format."""
    body = {
        "app-bundle-id": "com.example.android",
        "app-version": "7",
        "app-vendor-id": "abc",
        "app-platform": "ANDROID",
        "trustkit-version": "1.1.5",
        "hostname": HOST,
        "port": 0,
        "noted-hostname": HOST,
        "include-subdomains": False,
        "enforce-pinning": False,
        "validation-result": 2,
        "date-time": "2024-03-01T10:11:12-0700",
        "validated-certificate-chain": [_pem(d) for d in pki.mitm_chain],
        "served-certificate-chain": [_pem(d) for d in pki.mitm_chain[:2]],
        "known-pins": [f'pin-sha256="{pki.intermediate.pin[7:]}"'],
    }
    parsed = parse_report(_body(body))
    assert parsed.kind == "trustkit-android"
    assert parsed.port is None
    assert (parsed.mode, parsed.reason) == ("report", "untrusted-chain")
    assert parsed.client_time is not None
    assert parsed.client_time.hour == 17
    assert parsed.observed_pins == [spki_pin(d) for d in pki.mitm_chain[:2]]


def test_incident_key_groups_identical_failures(make_report: Any, pki: PKI) -> None:
    """Same host, chain and pins give one key; another chain gives another key."""
    one = parse_report(_body(make_report(app_version="1.0")))
    two = parse_report(_body(make_report(app_version="2.0", date_time="2020-01-01T00:00:00Z")))
    other = parse_report(_body(make_report(
        served_certificate_chain=[_pem(d) for d in pki.good_chain])))
    assert one.incident_key() == two.incident_key()
    assert one.incident_key() != other.incident_key()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"{not json", "not valid JSON"),
        (b"[" * 100_000, "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b"{}", "hostname is required"),
        (_body({"hostname": 5}), "hostname must be a string"),
        (_body({"hostname": "bad host!"}), "not a valid host name"),
        (_body({"hostname": HOST, "port": 70000}), "port must be"),
        (_body({"hostname": HOST, "port": True}), "port must be"),
        (_body({"hostname": HOST, "known-pins": ["sha1/abc"]}), "not a SHA-256 pin"),
        (_body({"hostname": HOST, "known-pins": "x"}), "known-pins must be a list"),
        (_body({"hostname": HOST, "served-certificate-chain": ["hello"]}), "not a PEM"),
        (_body({"hostname": HOST, "served-certificate-chain": [
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"]}), "not a parsable"),
        (_body({"hostname": HOST, "served-certificate-chain": [""] * 17}), "at most 16"),
        (_body({"hostname": HOST, "date-time": "yesterday"}), "date-time"),
        (_body({"hostname": HOST, "tlspin-version": "1", "mode": "panic"}), "mode must be"),
        (_body({"hostname": HOST, "tlspin-version": "1", "app-id": "a\u0000b"}), "NUL"),
        (_body({"hostname": HOST, "tlspin-version": "1", "app-id": "x" * 300}), "longer than"),
        (_body({"hostname": HOST, "validation-result": "1"}), "validation-result"),
        (b'{"hostname": "a.test", "app-bundle-id": "\\ud800"}', "surrogate"),
        (b'{"hostname": "a.test", "port": 1' + b"0" * 5000 + b"}", "JSON"),
    ],
)
def test_malformed_reports_get_a_reason(body: bytes, reason: str) -> None:
    """Every kind of malformed report raises ReportError naming the problem, nothing else."""
    with pytest.raises(ReportError, match=reason):
        parse_report(body)


def test_cached_chain_and_pins_are_still_validated(make_report: Any) -> None:
    """A report parsed once is parsed again the same way, while a tampered copy is refused."""
    report = make_report()
    first = parse_report(_body(report))
    again = parse_report(_body(report))  # served from the chain and pin caches
    assert (again.observed_pins, again.chain, again.known_pins) == (
        first.observed_pins, first.chain, first.known_pins
    )
    chain = list(report["served-certificate-chain"])
    chain[-1] = chain[-1].replace("-----END", "!-----END")
    with pytest.raises(ReportError, match=r"served-certificate-chain\[1\]"):
        parse_report(_body({**report, "served-certificate-chain": chain}))
    pins = [*report["known-pins"][:-1], report["known-pins"][-1][:-6] + '!"']
    with pytest.raises(ReportError, match="known-pins"):
        parse_report(_body({**report, "known-pins": pins}))
