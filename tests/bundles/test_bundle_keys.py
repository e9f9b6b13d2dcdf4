"""Signing keys: text forms, key ids, key sets and private key files."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tlspin.bundles import BundleError, KeySet, PublicKey, load_private_key, write_private_key

from .conftest import public, seed_key


def test_public_key_forms_agree() -> None:
    """Base64, the ed25519: prefix and PEM all give the same key, whose id is SHA-256 of raw."""
    key = public(seed_key(1))
    pem = (
        seed_key(1)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    assert PublicKey.parse(key.b64) == PublicKey.parse(f"ed25519:{key.b64}") == PublicKey.parse(pem)
    assert key.keyid == hashlib.sha256(key.raw).hexdigest()
    assert str(key) == key.b64


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not base64!",
        "AAAA",
        "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1x=",
        "-----BEGIN PUBLIC KEY-----\nAA",
    ],
)
def test_public_key_garbage_is_refused(text: str) -> None:
    """Bad base64, wrong lengths, non-canonical padding bits and broken PEM are refused."""
    with pytest.raises(BundleError) as info:
        PublicKey.parse(text)
    assert info.value.reason == "key"


def test_ec_public_key_pem_is_refused() -> None:
    """A PEM public key that is not Ed25519 is refused with a message naming its type."""
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(BundleError, match="Ed25519"):
        PublicKey.parse(pem.decode())


def test_key_set_rules() -> None:
    """A key set needs distinct keys and 1 <= threshold <= len(keys)."""
    a, b = public(seed_key(1)), public(seed_key(2))
    assert KeySet([a, b], 2).keyids == {a.keyid, b.keyid}
    for keys, threshold in (([a, a], 1), ([a], 2), ([a], 0), ([], 1)):
        with pytest.raises(BundleError):
            KeySet(keys, threshold)
    assert KeySet([a.b64, b.raw]).by_id(b.keyid) == b


def test_private_key_file_round_trip(tmp_path: Path) -> None:
    """Keys are written 0600 even over an existing file, and read back; non-Ed25519 is refused."""
    path = tmp_path / "k.pem"
    path.write_bytes(b"old")
    path.chmod(0o644)
    with pytest.raises(BundleError, match="exists"):
        write_private_key(path, seed_key(3))
    write_private_key(path, seed_key(3), overwrite=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert public(load_private_key(path)) == public(seed_key(3))
    other = tmp_path / "ec.pem"
    other.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(BundleError, match="Ed25519"):
        load_private_key(other)
    with pytest.raises(BundleError, match="cannot read"):
        load_private_key(tmp_path / "missing.pem")


def test_encrypted_private_key(tmp_path: Path) -> None:
    """An encrypted key needs the right passphrase; errors never show key material."""
    path = tmp_path / "k.pem"
    write_private_key(path, seed_key(4), passphrase=b"pw")
    with pytest.raises(BundleError, match="passphrase is needed"):
        load_private_key(path)
    with pytest.raises(BundleError, match="passphrase is wrong"):
        load_private_key(path, passphrase=b"nope")
    assert public(load_private_key(path, passphrase=b"pw")) == public(seed_key(4))


def test_public_key_load_reads_files_but_refuses_private_keys(tmp_path: Path) -> None:
    """PublicKey.load reads a .pub file; given a private key file it refuses and says why."""
    pub = tmp_path / "k.pub"
    pub.write_text(public(seed_key(5)).b64 + "\n")
    assert PublicKey.load(str(pub)) == public(seed_key(5))
    write_private_key(tmp_path / "k.key", seed_key(5))
    with pytest.raises(BundleError, match="private key"):
        PublicKey.load(str(tmp_path / "k.key"))
