"""Ed25519 signing keys: public key text form, key ids, key sets and private key files.

A public key travels as the standard, padded base64 of its raw 32 bytes (44 characters; an
``ed25519:`` prefix is accepted and ignored). Its key id is the lower-case hex SHA-256 of the same
32 raw bytes. Private keys live in PKCS#8 PEM files with mode 0600, optionally encrypted.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tlspin.bundles.errors import BundleError

__all__ = [
    "MAX_KEYS",
    "KeySet",
    "PublicKey",
    "generate_private_key",
    "load_private_key",
    "point_problem",
    "write_private_key",
]

#: A key set holds at most this many keys (it bounds the work a bundle can cause).
MAX_KEYS = 16
_PREFIX = "ed25519:"


def b64decode_strict(text: str, what: str, *, length: int | None = None) -> bytes:
    """Decode standard padded base64, refusing anything else (URL-safe, missing padding, junk)."""
    if not isinstance(text, str) or not text.isascii():
        raise BundleError(f"{what} must be a base64 string, found {text!r:.80}", reason="schema")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(
            f"{what} must be standard padded base64, found {text!r:.80}", reason="schema"
        ) from None
    if base64.b64encode(raw).decode("ascii") != text:
        # Non-canonical encodings (stray bits in the padding) would let one value have two forms.
        raise BundleError(f"{what} is not in canonical base64 form: {text!r:.80}", reason="schema")
    if length is not None and len(raw) != length:
        raise BundleError(
            f"{what} must decode to {length} bytes, found {len(raw)}", reason="schema"
        )
    return raw


# edwards25519 (RFC 8032 §5.1): the field prime and the curve constant d.
_P = 2**255 - 19
_D = -121665 * pow(121666, -1, _P) % _P
# The points of order dividing 8 (the torsion subgroup, exactly 8 points) by their y coordinate:
# the identity (y = 1, order 1), (0, -1) (order 2), the two points with y = 0 (order 4), and four
# points of order 8 (x = ±, for y = _Y8 and p - _Y8). The x sign bit is ignored, as libsodium's
# blocklist does: with x = 0 a set sign bit is only another, non-canonical, spelling.
_Y8 = 2707385501144840649318225287225658788936804267575313519463743609750303402022
_SMALL_ORDER_Y = frozenset({1, _P - 1, 0, _Y8, _P - _Y8})


def point_problem(raw: bytes) -> str | None:
    """Why the 32 bytes *raw* are not a safe Ed25519 public key, or None.

    Refused (docs/bundle-format.md §5.1): an encoding whose y coordinate is not below the field
    prime (a second spelling of a point: libraries disagree on whether it verifies), a point of
    small order (for the identity, or any point of order dividing 8, a signature with R = the
    identity and S = 0 verifies for every message, so anyone could sign as that "key"), and 32
    bytes that are not a point of the curve at all.
    """
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    if y >= _P:
        return (
            "its encoding is not canonical (y coordinate 2^255 - 19 or more, another spelling "
            f"of y = {y - _P}); expected a key as Ed25519 key generation writes it"
        )
    if y in _SMALL_ORDER_Y:
        return (
            "it is a point of small order (the identity or another point of order dividing 8): "
            "anyone can make signatures that verify under it without a private key"
        )
    # x^2 = (y^2 - 1) / (d y^2 + 1): a point exists only if that is a square (Euler's criterion).
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    if pow(x2, (_P - 1) // 2, _P) != 1:
        return "it is not a point of the Ed25519 curve"
    return None


@dataclass(frozen=True, slots=True)
class PublicKey:
    """An Ed25519 public key (raw 32 bytes) that may sign bundles.

    ``str(key)`` is the base64 text form; :attr:`keyid` is hex SHA-256 of the raw bytes.

    Raises:
        BundleError: ``reason="key"``: not 32 bytes, or not a safe key (:func:`point_problem`).
    """

    raw: bytes
    _key: Ed25519PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != 32:
            raise BundleError(
                f"an Ed25519 public key is 32 raw bytes, found {self.raw!r:.80}", reason="key"
            )
        problem = point_problem(self.raw)
        if problem is not None:
            raise BundleError(
                f"refusing the Ed25519 public key {base64.b64encode(self.raw).decode()}: {problem}",
                reason="key",
            )
        try:
            key = Ed25519PublicKey.from_public_bytes(self.raw)
        except ValueError as exc:
            raise BundleError(f"not a valid Ed25519 public key: {exc}", reason="key") from None
        object.__setattr__(self, "_key", key)

    @property
    def keyid(self) -> str:
        """Lower-case hex SHA-256 of the raw 32-byte key."""
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def b64(self) -> str:
        """Standard padded base64 of the raw key (the text form)."""
        return base64.b64encode(self.raw).decode("ascii")

    def __str__(self) -> str:
        return self.b64

    def verify(self, signature: bytes, data: bytes) -> bool:
        """Return True if *signature* is this key's Ed25519 signature of *data*."""
        try:
            self._key.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    @classmethod
    def parse(cls, text: str) -> PublicKey:
        """Read the base64 text form (``ed25519:`` prefix optional) or a PEM ``PUBLIC KEY``.

        Raises:
            BundleError: the text is neither, or the key is not Ed25519.
        """
        text = text.strip()
        if text.startswith("-----BEGIN"):
            try:
                key = serialization.load_pem_public_key(text.encode("ascii"))
            except (ValueError, UnsupportedAlgorithm) as exc:
                raise BundleError(f"cannot read the PEM public key: {exc}", reason="key") from None
            if not isinstance(key, Ed25519PublicKey):
                raise BundleError(
                    f"expected an Ed25519 public key, found {type(key).__name__}", reason="key"
                )
            return cls.from_key(key)
        if text.startswith(_PREFIX):
            text = text[len(_PREFIX) :]
        try:
            raw = b64decode_strict(text, "a public key", length=32)
        except BundleError as exc:
            raise BundleError(str(exc), reason="key") from None
        return cls(raw)

    @classmethod
    def load(cls, spec: str | os.PathLike[str]) -> PublicKey:
        """Read a key given as text, or as the path of a file holding the text or a PEM.

        Raises:
            BundleError: neither a readable file nor a key.
        """
        path = Path(spec)
        if isinstance(spec, os.PathLike) or (len(str(spec)) < 4096 and path.is_file()):
            try:
                data = path.read_bytes()[: 64 * 1024]
            except OSError as exc:
                raise BundleError(
                    f"cannot read key file {path}: {exc.strerror}", reason="key"
                ) from None
            if b"PRIVATE KEY" in data:
                raise BundleError(
                    f"{path} holds a private key; give the public key (the .pub file)", reason="key"
                )
            try:
                return cls.parse(data.decode("ascii"))
            except UnicodeDecodeError:
                raise BundleError(f"{path} is not a text key file", reason="key") from None
        return cls.parse(str(spec))

    @classmethod
    def from_key(cls, key: Ed25519PublicKey | Ed25519PrivateKey) -> PublicKey:
        """The public key of a `cryptography` Ed25519 key object."""
        pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
        return cls(pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


@dataclass(frozen=True, slots=True)
class KeySet:
    """Keys trusted to sign bundles, and how many of them must sign (the threshold)."""

    keys: tuple[PublicKey, ...]
    threshold: int = 1

    def __init__(self, keys: Iterable[PublicKey | str | bytes], threshold: int = 1) -> None:
        parsed: list[PublicKey] = []
        for key in keys:
            if isinstance(key, PublicKey):
                parsed.append(key)
            elif isinstance(key, bytes):
                parsed.append(PublicKey(key))
            elif isinstance(key, str):
                # Text only, never a path: code that passes a key should not read files.
                parsed.append(PublicKey.parse(key))
            else:
                raise BundleError(
                    f"a trusted key is a PublicKey, base64 text or 32 bytes, found "
                    f"{type(key).__name__}",
                    reason="key",
                )
        if not parsed:
            msg = "a key set needs at least one key, found none"
            raise BundleError(msg, reason="key")
        if len(parsed) > MAX_KEYS:
            raise BundleError(
                f"a key set holds at most {MAX_KEYS} keys, found {len(parsed)}", reason="key"
            )
        if len({k.raw for k in parsed}) != len(parsed):
            msg = "a key set lists the same key twice"
            raise BundleError(msg, reason="key")
        if isinstance(threshold, bool) or not isinstance(threshold, int):
            raise BundleError(
                f"the threshold must be an integer, found {threshold!r}", reason="key"
            )
        if not 1 <= threshold <= len(parsed):
            raise BundleError(
                f"the threshold must be between 1 and the number of keys ({len(parsed)}), "
                f"found {threshold}",
                reason="key",
            )
        object.__setattr__(self, "keys", tuple(parsed))
        object.__setattr__(self, "threshold", threshold)

    @property
    def keyids(self) -> frozenset[str]:
        """The key ids of the set."""
        return frozenset(k.keyid for k in self.keys)

    def by_id(self, keyid: str) -> PublicKey | None:
        """Return the key with this key id, if it is in the set."""
        for key in self.keys:
            if key.keyid == keyid:
                return key
        return None


def generate_private_key() -> Ed25519PrivateKey:
    """Make a new Ed25519 signing key.

    Its public key is a multiple of the base point by a random scalar, never a point of small
    order; :class:`PublicKey` checks it all the same, so no unsafe key can come out of here.
    """
    key = Ed25519PrivateKey.generate()
    PublicKey.from_key(key)
    return key


def write_private_key(
    path: str | os.PathLike[str],
    key: Ed25519PrivateKey,
    *,
    passphrase: bytes | None = None,
    overwrite: bool = False,
) -> None:
    """Write *key* as PKCS#8 PEM with mode 0600 (encrypted when a passphrase is given).

    The file is created with mode 0600 from the start, so the key is never readable by others,
    not even for a moment, and a symbolic link planted at *path* is never written through: a
    new file is created exclusively (``O_EXCL``, which fails on any existing name, links
    included), and *overwrite* writes a private temporary file and renames it over *path*
    (a rename replaces the link itself).

    Raises:
        BundleError: the file exists (and *overwrite* is false) or cannot be written.
    """
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    target = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        if overwrite:
            from tlspin._shared.policyio import atomic_write

            atomic_write(target, data, mode=0o600)  # mkstemp: 0600 from the start
            return
        fd = os.open(target, flags, 0o600)
    except FileExistsError:
        raise BundleError(
            f"{path} exists already; refusing to overwrite a key", reason="key"
        ) from None
    except OSError as exc:
        raise BundleError(f"cannot create {path}: {exc.strerror}", reason="key") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        with contextlib.suppress(OSError):
            target.unlink()
        raise BundleError(f"cannot write {path}: {exc.strerror}", reason="key") from None


def load_private_key(
    path: str | os.PathLike[str], *, passphrase: bytes | None = None
) -> Ed25519PrivateKey:
    """Read an Ed25519 private key from a PEM file.

    Raises:
        BundleError: unreadable, wrong passphrase, encrypted without one, or not Ed25519
            (``reason="key"``; the message says which, and never shows key material).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read key file {path}: {exc.strerror}", reason="key") from None
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:
        if passphrase is None:
            raise BundleError(
                f"{path} is encrypted; a passphrase is needed", reason="key"
            ) from None
        raise BundleError(
            f"{path} is not encrypted; do not give a passphrase", reason="key"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise BundleError(
            f"cannot read {path}: not a PEM private key, or the passphrase is wrong", reason="key"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(
            f"{path} holds a {type(key).__name__}; bundles are signed with Ed25519 keys",
            reason="key",
        )
    return key
