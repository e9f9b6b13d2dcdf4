"""Tests for tlspin.testing.pki: certificates that real verifiers accept (and reject)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import shutil
import ssl
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from tlspin.testing.pki import (
    CA,
    KEY_KINDS,
    KeyKind,
    Leaf,
    backup_key,
    client_trust_context,
    generate_key,
    server_context,
    spki_der_of,
    spki_pin,
)

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command")
RSASSA_PSS = ObjectIdentifier("1.2.840.113549.1.1.10")
RSA_ENCRYPTION = ObjectIdentifier("1.2.840.113549.1.1.1")


def _openssl(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    assert OPENSSL is not None
    return subprocess.run([OPENSSL, *args], input=stdin, capture_output=True, check=False)


def _openssl_verify(tmp_path: Path, anchor: CA, leaf: Leaf) -> subprocess.CompletedProcess[bytes]:
    anchor_path = anchor.write(tmp_path, name="anchor")
    chain_path, _ = leaf.write(tmp_path)
    untrusted = tmp_path / "untrusted.pem"
    untrusted.write_bytes(leaf.chain_pem[len(leaf.cert_pem) :] or leaf.cert_pem)
    return _openssl(
        "verify", "-CAfile", str(anchor_path), "-untrusted", str(untrusted), str(chain_path)
    )


def _openssl_pin(cert_pem: bytes) -> str:
    """Pin computed the way RFC 7469 suggests, entirely by the openssl command."""
    pubkey = _openssl("x509", "-pubkey", "-noout", stdin=cert_pem).stdout
    der = _openssl("pkey", "-pubin", "-outform", "der", stdin=pubkey).stdout
    return "sha256/" + base64.b64encode(hashlib.sha256(der).digest()).decode()


@needs_openssl
@pytest.mark.parametrize("kind", KEY_KINDS)
def test_every_key_kind_verifies_with_openssl(
    tmp_path: Path, root: CA, intermediate: CA, stranger: CA, kind: KeyKind
) -> None:
    """A leaf of each key kind verifies against its root and not against another root."""
    leaf = intermediate.issue("localhost", key_kind=kind)
    assert _openssl_verify(tmp_path, root, leaf).returncode == 0
    assert _openssl_verify(tmp_path, stranger, leaf).returncode != 0


@needs_openssl
@pytest.mark.parametrize("kind", KEY_KINDS)
def test_pin_matches_openssl(intermediate: CA, kind: KeyKind) -> None:
    """The leaf pin equals openssl's SPKI hash for every key kind, RSA-PSS included."""
    leaf = intermediate.issue("localhost", key_kind=kind)
    assert leaf.pin == _openssl_pin(leaf.cert_pem)
    assert leaf.pin != _openssl_pin(intermediate.cert_pem)


@needs_openssl
def test_rsa_pss_leaf_carries_id_rsassa_pss_spki(intermediate: CA) -> None:
    """An rsa-pss leaf has an id-RSASSA-PSS SPKI; cryptography re-encodes it as rsaEncryption."""
    leaf = intermediate.issue("localhost", key_kind="rsa-pss")
    assert leaf.cert.public_key_algorithm_oid == RSASSA_PSS
    text = _openssl("x509", "-noout", "-text", stdin=leaf.cert_pem).stdout.decode()
    assert "Public Key Algorithm: rsassaPss" in text
    reencoded = leaf.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert reencoded != leaf.spki_der
    plain = intermediate.issue("localhost", key_kind="rsa2048", key=leaf.key)
    assert plain.cert.public_key_algorithm_oid == RSA_ENCRYPTION
    assert plain.spki_der == reencoded


@needs_openssl
def test_rsa_pss_root_signs_with_pss(tmp_path: Path) -> None:
    """A root of kind rsa-pss signs with RSASSA-PSS and its leaves verify under openssl."""
    pss_root = CA.root("pss root", key_kind="rsa-pss")
    leaf = pss_root.issue("localhost")
    assert pss_root.cert.signature_algorithm_oid == RSASSA_PSS
    assert leaf.cert.signature_algorithm_oid == RSASSA_PSS
    assert _openssl_verify(tmp_path, pss_root, leaf).returncode == 0
    assert _openssl_verify(tmp_path, CA.root(), leaf).returncode != 0


def test_webpki_verifier_accepts_chain_for_its_names(root: CA, origin_leaf: Leaf) -> None:
    """cryptography's default WebPKI policy builds the chain for a listed name only."""
    store = verification.Store([root.cert])
    builder = verification.PolicyBuilder().store(store)
    intermediates = origin_leaf.chain[1:]
    built = builder.build_server_verifier(x509.DNSName("api.example.test")).verify(
        origin_leaf.cert, intermediates
    )
    assert [c.subject for c in built] == [c.subject for c in [*origin_leaf.chain, root.cert]]
    with pytest.raises(verification.VerificationError):
        builder.build_server_verifier(x509.DNSName("evil.example.test")).verify(
            origin_leaf.cert, intermediates
        )


def test_leaf_and_ca_extensions(intermediate: CA, origin_leaf: Leaf) -> None:
    """Leaves are non-CA serverAuth certs with SAN; CAs are critical CA=true with keyCertSign."""
    ext = origin_leaf.cert.extensions
    assert ext.get_extension_for_class(x509.BasicConstraints).critical
    assert not ext.get_extension_for_class(x509.BasicConstraints).value.ca
    san = ext.get_extension_for_class(x509.SubjectAlternativeName)
    assert not san.critical
    assert origin_leaf.names == (
        "localhost",
        "127.0.0.1",
        "::1",
        "api.example.test",
        "other.example.test",
    )
    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = intermediate.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    ca_constraints = intermediate.cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert ca_constraints.critical
    assert ca_constraints.value.ca
    usage = intermediate.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign


def test_chains_exclude_the_root(root: CA) -> None:
    """`chain` lists a CA and its parents but never the root; leaf chains start at the leaf."""
    first = root.intermediate("first")
    second = first.intermediate("second")
    leaf = second.issue("localhost")
    assert root.chain == []
    assert first.chain == [first.cert]
    assert second.chain == [second.cert, first.cert]
    assert leaf.chain == [leaf.cert, second.cert, first.cert]
    assert leaf.chain_der == [c.public_bytes(serialization.Encoding.DER) for c in leaf.chain]
    assert leaf.chain_pem.count(b"BEGIN CERTIFICATE") == 3
    assert second.root_ca is root
    assert second.parent is first


def test_path_length_zero_cannot_issue_cas(root: CA) -> None:
    """A CA with path length 0 issues leaves but refuses to create intermediates."""
    issuing = root.intermediate("issuing", path_length=0)
    assert issuing.issue("localhost").cert.issuer == issuing.cert.subject
    with pytest.raises(ValueError, match="path length 0"):
        issuing.intermediate("too deep")


def test_reissue_keeps_or_replaces_the_key(intermediate: CA, origin_leaf: Leaf) -> None:
    """Reissue with same_key keeps the pin and changes the serial; without it the pin changes."""
    same = intermediate.reissue(origin_leaf)
    assert same.pin == origin_leaf.pin
    assert same.cert.serial_number != origin_leaf.cert.serial_number
    assert same.names == origin_leaf.names
    fresh = intermediate.reissue(origin_leaf, same_key=False)
    assert fresh.pin != origin_leaf.pin
    assert isinstance(fresh.key, ec.EllipticCurvePrivateKey)


@needs_openssl
def test_cross_signed_root_bridges_trust(tmp_path: Path, root: CA) -> None:
    """A leaf of a new root verifies under the old root only through the cross certificate."""
    new_root = CA.root("tlspin new root")
    cross = root.cross_sign(new_root)
    assert cross.subject == new_root.cert.subject
    assert cross.issuer == root.cert.subject
    assert spki_der_of(cross) == new_root.spki_der
    leaf = new_root.issue("localhost")
    anchor = root.write(tmp_path, name="old")
    chain_path, _ = leaf.write(tmp_path)
    served = leaf.with_intermediates([cross])
    assert served.chain == [leaf.cert, cross]
    assert served.pin == leaf.pin
    bridge = tmp_path / "bridge.pem"
    bridge.write_bytes(served.chain_pem[len(leaf.cert_pem) :])
    with_bridge = _openssl(
        "verify", "-CAfile", str(anchor), "-untrusted", str(bridge), str(chain_path)
    )
    assert with_bridge.returncode == 0
    assert _openssl("verify", "-CAfile", str(anchor), str(chain_path)).returncode != 0


def test_backup_key_has_csr_and_can_be_certified_later(intermediate: CA) -> None:
    """The backup CSR carries the key's SPKI, so its pin survives into a later certificate."""
    key, csr = backup_key(names=["api.example.test"])
    assert csr.is_signature_valid
    csr_spki = csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    leaf = intermediate.issue("api.example.test", key=key)
    assert leaf.spki_der == csr_spki
    assert leaf.pin != intermediate.issue("api.example.test").pin
    with pytest.raises(ValueError, match="rsa-pss"):
        backup_key("rsa-pss")


def test_validity_arguments(intermediate: CA) -> None:
    """not_before/not_after accept datetimes and offsets from now."""
    now = datetime.datetime.now(datetime.UTC)
    expired = intermediate.issue("localhost", not_after=datetime.timedelta(days=-1))
    assert expired.cert.not_valid_after_utc < now
    future = intermediate.issue("localhost", not_before=now + datetime.timedelta(days=2))
    assert future.cert.not_valid_before_utc > now
    assert future.cert.not_valid_after_utc > future.cert.not_valid_before_utc


def test_idn_and_ip_names(intermediate: CA) -> None:
    """IDNs become A-labels, IP strings become iPAddress entries; no name is an error."""
    leaf = intermediate.issue("bücher.example.test", "::1")
    san = leaf.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["xn--bcher-kva.example.test"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["::1"]
    with pytest.raises(ValueError, match="at least one"):
        intermediate.issue()


def test_generate_key_rejects_unknown_kind() -> None:
    """Known kinds produce keys; an unknown kind names the valid choices."""
    assert isinstance(generate_key(), ec.EllipticCurvePrivateKey)
    with pytest.raises(ValueError, match="ec256"):
        generate_key("dsa")  # type: ignore[arg-type]


def test_write_files_load_into_ssl(tmp_path: Path, origin_leaf: Leaf) -> None:
    """Written chain and key load into an SSLContext and the key file is private."""
    chain_path, key_path = origin_leaf.write(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(chain_path, key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    other = CA.root().issue("localhost")
    mismatched = tmp_path / "other-key.pem"
    mismatched.write_bytes(other.key_pem)
    with pytest.raises(ssl.SSLError):
        ctx.load_cert_chain(chain_path, mismatched)


def test_server_context_accepts_chain_and_key_tuple(origin_leaf: Leaf) -> None:
    """server_context takes (chain, key) as well as a Leaf, and refuses an empty chain."""
    ctx = server_context((origin_leaf.chain, origin_leaf.key), alpn=None)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    with pytest.raises(ValueError, match="at least the leaf"):
        server_context(([], origin_leaf.key))


def test_client_trust_context_trusts_exactly_the_given_cas(root: CA, stranger: CA) -> None:
    """The client context holds exactly the given CA certs and verifies hostnames."""
    ctx = client_trust_context(root, stranger.cert)
    ders = ctx.get_ca_certs(binary_form=True)
    assert sorted(ders) == sorted([root.cert_der, stranger.cert_der])
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname
    assert client_trust_context().get_ca_certs() == []


def test_spki_pin_is_standard_base64_of_sha256(origin_leaf: Leaf) -> None:
    """spki_pin hashes the raw SPKI slice; a different certificate gives a different pin."""
    digest = hashlib.sha256(origin_leaf.spki_der).digest()
    assert spki_pin(origin_leaf.cert) == "sha256/" + base64.b64encode(digest).decode()
    assert spki_pin(origin_leaf.chain[1]) != origin_leaf.pin


def test_leaf_key_file_is_0600_and_never_written_through_a_symlink(tmp_path: Path) -> None:
    """Leaf.write gives the key mode 0600 even over an existing 0644 file, and replaces a
    planted symbolic link instead of writing the key into its target."""
    leaf = CA.root("key files").issue("localhost")
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "leaf-key.pem").symlink_to(victim)
    _, key_path = leaf.write(tmp_path)
    assert victim.read_text() == "precious"
    assert not key_path.is_symlink()
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key_path.chmod(0o644)
    leaf.write(tmp_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
