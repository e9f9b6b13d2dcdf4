"""A small RFC 6962 log client: ``get-sth`` and ``get-entries`` over HTTP(S).

Only the standard library is used (``urllib``), so ``tlspin ct`` needs no HTTP dependency.
Responses are size-limited and strictly parsed: a log is a remote party like any other.
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
import struct
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

__all__ = ["CTError", "CTVerificationError", "LogClient", "SignedTreeHead"]

_MAX_RESPONSE = 32 * 1024 * 1024
_SHA256, _RSA, _ECDSA = 4, 1, 3


class CTError(Exception):
    """The log could not be read, or answered something that is not RFC 6962."""


class CTVerificationError(CTError):
    """The log's answer fails a cryptographic check (signature, Merkle root, shrinking tree)."""


@dataclass(frozen=True, slots=True)
class SignedTreeHead:
    """A log's signed tree head (RFC 6962 §4.3).

    Attributes:
        tree_size: number of entries in the tree.
        timestamp: milliseconds since the epoch.
        root_hash: the Merkle tree hash (32 bytes).
        signature: the TLS ``DigitallySigned`` structure over the tree head.
    """

    tree_size: int
    timestamp: int
    root_hash: bytes
    signature: bytes

    def signed_data(self) -> bytes:
        """The ``TreeHeadSignature`` bytes the log signs (version v1, type tree_hash)."""
        return struct.pack(">BBQQ", 0, 1, self.timestamp, self.tree_size) + self.root_hash

    def verify(self, public_key_pem: bytes) -> None:
        """Check the tree head signature with the log's public key (PEM).

        Raises:
            CTVerificationError: the signature does not verify.
        """
        try:
            key = serialization.load_pem_public_key(public_key_pem)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise CTError(f"the log key is not a PEM public key: {exc}") from None
        if len(self.signature) < 4:
            msg = "the tree head signature is truncated"
            raise CTVerificationError(msg)
        hash_alg, sig_alg = self.signature[0], self.signature[1]
        size = int.from_bytes(self.signature[2:4], "big")
        raw = self.signature[4:]
        if size != len(raw) or hash_alg != _SHA256:
            raise CTVerificationError(
                f"expected a SHA-256 DigitallySigned of {len(raw)} bytes, found hash algorithm "
                f"{hash_alg} and length {size}"
            )
        try:
            if sig_alg == _ECDSA and isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(raw, self.signed_data(), ec.ECDSA(hashes.SHA256()))
            elif sig_alg == _RSA and isinstance(key, rsa.RSAPublicKey):
                key.verify(raw, self.signed_data(), padding.PKCS1v15(), hashes.SHA256())
            else:
                raise CTVerificationError(
                    f"the tree head is signed with algorithm {sig_alg}, which does not fit the "
                    f"log key ({type(key).__name__})"
                )
        except InvalidSignature:
            raise CTVerificationError(
                f"the signature on the tree head (size {self.tree_size}) does not verify with "
                "the log key"
            ) from None


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise CTError(f"expected {what} as a base64 string, found {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise CTError(f"{what} is not valid base64") from None


class LogClient:
    """Read an RFC 6962 log.

    Args:
        url: the log's base URL (the part before ``/ct/v1/``).
        timeout: seconds per request.
        cafile: CA file for an HTTPS log (default: the system store).
        public_key: the log's PEM public key; when given, every tree head is verified.
    """

    def __init__(
        self, url: str, *, timeout: float = 30.0, cafile: str | None = None,
        public_key: bytes | None = None,
    ) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"expected an http(s) log URL, found {url!r}")
        base = url.rstrip("/")
        if base.endswith("/ct/v1"):
            base = base[: -len("/ct/v1")]
        self.url = base + "/"
        self._timeout = timeout
        self._context = ssl.create_default_context(cafile=cafile) if cafile else None
        self._public_key = public_key

    def _get(self, path: str, query: dict[str, int] | None = None) -> Any:
        target = self.url + "ct/v1/" + path
        if query:
            target += "?" + urllib.parse.urlencode(query)
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            target, headers={"Accept": "application/json", "User-Agent": "tlspin-ct"}
        )
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=self._timeout, context=self._context
            ) as response:
                body = response.read(_MAX_RESPONSE + 1)
        except urllib.error.HTTPError as exc:
            exc.close()  # it carries the open response; see monitor.store
            raise CTError(f"{target}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CTError(f"cannot reach the log at {target}: {reason}") from None
        if len(body) > _MAX_RESPONSE:
            raise CTError(f"{target}: the response is larger than {_MAX_RESPONSE} bytes")
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CTError(f"{target}: the response is not JSON ({exc})") from None

    def get_sth(self) -> SignedTreeHead:
        """Fetch (and, with a log key, verify) the latest signed tree head.

        Raises:
            CTError: the log is unreachable or the answer is malformed.
            CTVerificationError: the signature does not verify.
        """
        data = self._get("get-sth")
        if not isinstance(data, dict):
            raise CTError(f"get-sth: expected a JSON object, found {type(data).__name__}")
        size, stamp = data.get("tree_size"), data.get("timestamp")
        for name, value in (("tree_size", size), ("timestamp", stamp)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
                raise CTError(f"get-sth: expected a non-negative integer {name}, found {value!r}")
        root = _b64(data.get("sha256_root_hash"), "get-sth sha256_root_hash")
        if len(root) != 32:
            raise CTError(f"get-sth: expected a 32-byte root hash, found {len(root)} bytes")
        signature = _b64(data.get("tree_head_signature"), "get-sth tree_head_signature")
        assert isinstance(size, int)
        assert isinstance(stamp, int)
        sth = SignedTreeHead(size, stamp, root, signature)
        if self._public_key is not None:
            sth.verify(self._public_key)
        return sth

    def get_entries(self, start: int, end: int) -> list[tuple[bytes, bytes]]:
        """Fetch entries *start*..*end* inclusive; a log may return fewer than asked.

        Returns:
            ``(leaf_input, extra_data)`` pairs, in index order from *start*.

        Raises:
            CTError: the log is unreachable or the answer is malformed.
        """
        data = self._get("get-entries", {"start": start, "end": end})
        entries = data.get("entries") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            msg = "get-entries: expected an object with an 'entries' list"
            raise CTError(msg)
        if len(entries) > end - start + 1:
            raise CTError(
                f"get-entries: asked for {end - start + 1} entries, the log sent {len(entries)}"
            )
        out = []
        for offset, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise CTError(f"get-entries: entry {start + offset} is not an object")
            out.append(
                (
                    _b64(entry.get("leaf_input"), f"entry {start + offset} leaf_input"),
                    _b64(entry.get("extra_data", ""), f"entry {start + offset} extra_data"),
                )
            )
        return out
