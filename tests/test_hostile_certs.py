"""Certificates a server controls: read as OpenSSL reads them, refused and reported when they
cannot be read, and never hoarded in memory.

OpenSSL verifies certificates with BER encodings that DER forbids (non-minimal lengths,
indefinite lengths), as long as a trusted CA signed them: an attacker with such a CA can serve
one, and a sloppy genuine CA may. Every connection here is a real handshake on loopback.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
import shutil
import ssl
import subprocess
from collections.abc import Callable, Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

import tlspin
from _ber import ber_server
from _engine import HOST, fetch, open_socket, stranger_pins
from tlspin import PinMismatchError, PinningUnavailableError, PinPolicy, PinRule, pins
from tlspin.integrations._common import find_pin_error
from tlspin.testing.pki import CA, Leaf
from tlspin.testing.scenarios import ServerPKI
from tlspin.testing.servers import TLSServer

MakeServer = Callable[..., TLSServer]


def _refused(server: TLSServer, call: Callable[[], object]) -> tlspin.PinVerificationError:
    with pytest.raises(ssl.SSLError) as excinfo:  # a TLS error, as every client expects
        call()
    error = find_pin_error(excinfo.value)
    assert error is not None, repr(excinfo.value)
    server.wait_idle()
    assert server.received == b""
    return error


@pytest.fixture(autouse=True)
def _nothing_injected() -> Iterator[None]:
    yield
    tlspin.extract()


# -- unreadable: refused, and reported -----------------------------------------------------------


def _observed(pki: ServerPKI, mode: str = "enforce") -> tuple[PinPolicy, list[tlspin.Violation]]:
    seen: list[tlspin.Violation] = []
    rule = PinRule(HOST, [pki.leaf_pin, pki.intermediate_pin], mode=mode)  # type: ignore[arg-type]
    return PinPolicy([rule], observers=[seen.append]), seen


def test_unreadable_verified_certificate_is_refused_and_reported(
    pki: ServerPKI, make_tls_server: MakeServer
) -> None:
    """A leaf OpenSSL verifies (a trusted CA signed its BER) but whose key tlspin cannot
    locate is a pin refusal, an ssl.SSLError, with a Violation for the observers; 0 bytes."""
    server, der = ber_server(
        make_tls_server, pki.attacker.issue(HOST), pki.attacker, "indefinite"
    )
    plain = ssl.create_default_context(cafile=pki.cafile)
    fetch(plain, server)  # OpenSSL verifies it: only tlspin stands in the way
    server.wait_idle()
    server.reset()
    policy, seen = _observed(pki)
    ctx = tlspin.create_context(policy, cafile=pki.cafile)
    error = _refused(server, lambda: fetch(ctx, server))
    assert isinstance(error, PinningUnavailableError)
    assert error.reason == "unreadable-certificate"
    assert "cannot be read" in str(error)
    assert [(v.reason, v.mode, v.verified_chain[0]) for v in seen] == [
        ("unreadable-certificate", "enforce", der)
    ]


def test_unreadable_leaf_without_ca_verification_is_refused_and_reported(
    pki: ServerPKI, make_tls_server: MakeServer
) -> None:
    """Under inject, a CERT_NONE client meets the same refusal and report (the leaf-only rule)."""
    server, _ = ber_server(make_tls_server, pki.attacker.issue(HOST), pki.attacker, "indefinite")
    policy, seen = _observed(pki)
    tlspin.inject(policy)
    error = _refused(server, lambda: fetch(ssl._create_stdlib_context(), server))  # type: ignore[attr-defined]
    assert error.reason == "unreadable-certificate"
    assert [v.reason for v in seen] == ["unreadable-certificate"]


def test_resumed_session_with_an_unreadable_leaf_is_refused_and_reported(
    pki: ServerPKI, make_tls_server: MakeServer
) -> None:
    """A session made for an unpinned name and resumed for a pinned one, whose leaf cannot be
    read, is refused and reported (the resumption check)."""
    leaf = pki.attacker.issue(HOST, "localhost")
    server, _ = ber_server(make_tls_server, leaf, pki.attacker, "indefinite")
    policy, seen = _observed(pki)
    tlspin.inject(policy)
    ctx = ssl.create_default_context(cafile=pki.cafile)
    with open_socket(ctx, server, host="localhost") as first:  # unpinned: not checked
        session = first.session
    server.wait_idle()
    server.reset()
    error = _refused(server, lambda: open_socket(ctx, server, session=session))
    assert server.resumed == 1
    assert error.reason == "unreadable-certificate"
    assert [v.reason for v in seen] == ["unreadable-certificate"]


def test_report_only_rule_reports_an_unreadable_certificate_and_lets_it_through(
    pki: ServerPKI, make_tls_server: MakeServer
) -> None:
    """Twin: a report-only rule reports the unreadable certificate and never refuses."""
    server, _ = ber_server(make_tls_server, pki.attacker.issue(HOST), pki.attacker, "indefinite")
    policy, seen = _observed(pki, "report")
    assert fetch(tlspin.create_context(policy, cafile=pki.cafile), server).tlspin_checked  # type: ignore[attr-defined]
    assert [(v.reason, v.mode) for v in seen] == [("unreadable-certificate", "report")]


# -- BER that only moves the key: read as OpenSSL reads it ---------------------------------------


def _openssl_pin(der: bytes) -> str:
    """The pin as OpenSSL's tools compute it: x509 -pubkey | pkey -pubin -outform DER | sha256."""
    openssl = shutil.which("openssl")
    assert openssl, "openssl is installed by scripts/test"
    pem = subprocess.run(
        [openssl, "x509", "-inform", "DER", "-pubkey", "-noout"],
        input=der, capture_output=True, check=True,
    ).stdout  # fmt: skip
    spki = subprocess.run(
        [openssl, "pkey", "-pubin", "-outform", "DER"], input=pem, capture_output=True, check=True
    ).stdout
    return "sha256/" + base64.b64encode(hashlib.sha256(spki).digest()).decode()


def test_ber_lengths_around_the_key_give_the_pin_openssl_gives(
    pki: ServerPKI, make_tls_server: MakeServer
) -> None:
    """A genuine leaf whose serial has a non-minimal length is read: its pin is the one
    `openssl x509 -pubkey` gives, and a policy pinning its key reaches the server."""
    leaf = pki.intermediate.issue(HOST)
    server, der = ber_server(
        make_tls_server, leaf, pki.intermediate, "long-length", chain=(pki.intermediate,)
    )
    assert str(tlspin.Pin(tlspin.spki_sha256(der))) == _openssl_pin(der) == leaf.pin
    policy = PinPolicy.from_mapping({HOST: [leaf.pin, *stranger_pins()]})
    assert fetch(tlspin.create_context(policy, cafile=pki.cafile), server).tlspin_checked  # type: ignore[attr-defined]
    assert server.requests == ["GET / HTTP/1.1"]


def test_a_forged_ber_leaf_is_a_pin_mismatch(pki: ServerPKI, make_tls_server: MakeServer) -> None:
    """Twin: the same encoding from the attacker's CA is an ordinary, reported mismatch."""
    server, _ = ber_server(make_tls_server, pki.attacker.issue(HOST), pki.attacker, "long-length")
    policy, seen = _observed(pki)
    ctx = tlspin.create_context(policy, cafile=pki.cafile)
    error = _refused(server, lambda: fetch(ctx, server))
    assert isinstance(error, PinMismatchError)
    assert [v.reason for v in seen] == ["mismatch"]


# -- memory: the SPKI cache ----------------------------------------------------------------------


@pytest.fixture
def empty_cache() -> Iterator[None]:
    """Start and end with an empty SPKI cache."""
    pins._SPKI_CACHE.clear()
    pins._CacheSize.held = 0
    yield
    pins._SPKI_CACHE.clear()
    pins._CacheSize.held = 0


def _big_leaf(attacker: CA, size: int) -> Leaf:
    """A fresh forged leaf for HOST carrying *size* random bytes in a private extension."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .issuer_name(attacker.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .add_extension(  # Python 3.13's default context (VERIFY_X509_STRICT) needs it
            x509.AuthorityKeyIdentifier.from_issuer_public_key(attacker.key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.UnrecognizedExtension(
                x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), os.urandom(size)
            ),
            critical=False,
        )
        .sign(attacker.key, hashes.SHA256())
    )
    return Leaf(cert, key)


def test_forged_certificates_do_not_pile_up_in_memory(
    pki: ServerPKI, make_tls_server: MakeServer, monkeypatch: pytest.MonkeyPatch, empty_cache: None
) -> None:
    """A MITM answering each attempt with a fresh 90 KB certificate: the cache keeps at most its
    byte budget of certificates (it held 4,096 of them, ~370 MB, before)."""
    budget = 512 * 1024
    monkeypatch.setattr(pins, "_SPKI_CACHE_MAX_BYTES", budget)
    tlspin.inject(PinPolicy.from_mapping({HOST: [pki.leaf_pin, pki.intermediate_pin]}))
    ctx = ssl.create_default_context(cafile=pki.cafile)
    server = make_tls_server(_big_leaf(pki.attacker, 90_000))
    for _ in range(8):  # 8 x 90 KB: past the budget
        server.set_leaf(_big_leaf(pki.attacker, 90_000))
        _refused(server, lambda: fetch(ctx, server))
        assert sum(len(der) for der in pins._SPKI_CACHE) <= budget
    assert pins._CacheSize.held == sum(len(der) for der in pins._SPKI_CACHE)


def test_a_genuine_chain_stays_cached(
    pki: ServerPKI, tls_server: TLSServer, empty_cache: None
) -> None:
    """Twin: the chain of a server that keeps its certificates is looked up, not re-read."""
    ctx = tlspin.create_context(
        PinPolicy.from_mapping({HOST: [pki.leaf_pin, pki.intermediate_pin]}), cafile=pki.cafile
    )
    fetch(ctx, tls_server)
    cached = dict(pins._SPKI_CACHE)
    fetch(ctx, tls_server)
    assert pki.leaf.cert.public_bytes(Encoding.DER) in cached
    assert cached == pins._SPKI_CACHE
