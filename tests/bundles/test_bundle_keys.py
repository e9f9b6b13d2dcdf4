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


# -- weak keys: small order, non-canonical, off the curve --------------------------------------
# A few lines of edwards25519 arithmetic (affine, RFC 8032 §5.1), independent of the code under
# test: the torsion points are found as [L]Q, not taken from its list.
_P = 2**255 - 19
_D = -121665 * pow(121666, -1, _P) % _P
_L = 2**252 + 27742317777372353535851937790883648493
_IDENTITY = (0, 1)


def _add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = a, b
    t = _D * x1 * x2 * y1 * y2 % _P
    x3 = (x1 * y2 + x2 * y1) * pow(1 + t, -1, _P) % _P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, -1, _P) % _P
    return x3, y3


def _times(n: int, point: tuple[int, int]) -> tuple[int, int]:
    out = _IDENTITY
    while n:
        if n & 1:
            out = _add(out, point)
        point = _add(point, point)
        n >>= 1
    return out


def _point(y: int) -> tuple[int, int] | None:
    """The point with this y and an even x, or None (RFC 8032 §5.1.3 square root)."""
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    if v * x * x % _P == (-u) % _P:
        x = x * pow(2, (_P - 1) // 4, _P) % _P
    if v * x * x % _P != u:
        return None
    return (_P - x if x & 1 else x), y


def _encode(point: tuple[int, int]) -> bytes:
    x, y = point
    return (y | (x & 1) << 255).to_bytes(32, "little")


def _torsion_points() -> set[tuple[int, int]]:
    """The eight points of order dividing 8: [L]Q for points Q, and their multiples."""
    found: set[tuple[int, int]] = set()
    y = 2
    while len(found) < 8:
        q = _point(y)
        y += 1
        if q is None:
            continue
        t = _times(_L, q)
        for k in range(8):
            found.add(_times(k, t))
    assert len(found) == 8  # the torsion subgroup of edwards25519 has exactly 8 points
    return found


def test_every_small_order_point_is_refused_in_every_spelling() -> None:
    """All 8 points of order dividing 8 (each checked: [8]T is the identity), with either x
    sign bit, are refused as keys: a signature R = identity, S = 0 verifies under them for any
    message. So is every encoding with y >= p (a second spelling, which libraries disagree on)."""
    torsion = _torsion_points()
    assert _IDENTITY in torsion
    for t in torsion:
        assert _times(8, t) == _IDENTITY
        for raw in (_encode(t), bytes([*_encode(t)[:31], _encode(t)[31] ^ 0x80])):
            with pytest.raises(BundleError) as info:
                PublicKey(raw)
            assert info.value.reason == "key"
            assert "small order" in str(info.value) or "not canonical" in str(info.value)
    for y in range(_P, 2**255):
        for sign in (0, 1):
            with pytest.raises(BundleError, match="not canonical"):
                PublicKey((y | sign << 255).to_bytes(32, "little"))
    with pytest.raises(BundleError, match="not a point"):
        PublicKey((2).to_bytes(32, "little"))
    with pytest.raises(BundleError, match="small order"):
        PublicKey.parse("AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    with pytest.raises(BundleError, match="small order"):
        KeySet(["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="])


def test_real_keys_pass_the_point_checks() -> None:
    """The twin: the fixed test keys, freshly generated ones, and a point of large order that
    is not the public key of anything known all pass."""
    from tlspin.bundles.keys import generate_private_key

    for key in [seed_key(n) for n in (1, 2, 66)] + [generate_private_key() for _ in range(20)]:
        assert PublicKey(public(key).raw) == public(key)
    q = _point(3)
    assert q is not None
    assert _times(8, q) != _IDENTITY
    PublicKey(_encode(q))
