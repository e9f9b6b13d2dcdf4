"""An RFC 6962 log on loopback, written independently of tlspin's client, and test certificates.

The log speaks the real wire format: ``get-sth`` with ``tree_size``, ``timestamp``,
``sha256_root_hash`` and an ECDSA ``tree_head_signature`` (TLS DigitallySigned), and
``get-entries`` with base64 ``leaf_input`` (MerkleTreeLeaf) and ``extra_data``. The root is the
recursive Merkle tree hash of RFC 6962 §2.1. Pages are short on purpose (3 entries), as real
logs cap them.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import struct
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from _httpd import HTTPThread, QuietHandler
from tlspin.testing.pki import CA, PrivateKey, generate_key

PAGE = 3


def mth(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 §2.1 Merkle tree hash, written as the RFC states it (recursive split)."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((n - 1).bit_length() - 1)  # the largest power of two smaller than n
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def u24(data: bytes) -> bytes:
    """A TLS opaque<1..2^24-1> vector."""
    return len(data).to_bytes(3, "big") + data


def chain_vector(chain: Sequence[bytes]) -> bytes:
    """An ASN.1Cert list<0..2^24-1>."""
    return u24(b"".join(u24(c) for c in chain))


def der(cert: x509.Certificate) -> bytes:
    """DER of a certificate."""
    return cert.public_bytes(serialization.Encoding.DER)


class LogServer(HTTPThread):
    """A minimal RFC 6962 log over HTTP on 127.0.0.1."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.leaves: list[bytes] = []
        self.extra: list[bytes] = []
        self.served_override: dict[int, bytes] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.lock = threading.Lock()
        log = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(parsed.query))
                with log.lock:
                    log.requests.append((parsed.path, query))
                    if parsed.path == "/log/ct/v1/get-sth":
                        body, status = log.sth(), 200
                    elif parsed.path == "/log/ct/v1/get-entries":
                        body, status = log.entries(query)
                    else:
                        body, status = {"error": "not found"}, 404
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        super().__init__(Handler)
        self.url = f"http://127.0.0.1:{self.port}/log/"

    @property
    def public_key_pem(self) -> bytes:
        """The log's public key."""
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sth(self) -> dict[str, Any]:
        """The signed tree head over every entry."""
        stamp = int(time.time() * 1000)
        root = mth(self.leaves)
        signed = struct.pack(">BBQQ", 0, 1, stamp, len(self.leaves)) + root
        signature = self.key.sign(signed, ec.ECDSA(hashes.SHA256()))
        digitally_signed = bytes([4, 3]) + len(signature).to_bytes(2, "big") + signature
        return {
            "tree_size": len(self.leaves),
            "timestamp": stamp,
            "sha256_root_hash": base64.b64encode(root).decode(),
            "tree_head_signature": base64.b64encode(digitally_signed).decode(),
        }

    def entries(self, query: dict[str, str]) -> tuple[dict[str, Any], int]:
        """One page of entries."""
        try:
            start, end = int(query["start"]), int(query["end"])
        except (KeyError, ValueError):
            return {"error": "start and end are required"}, 400
        if start < 0 or end < start or start >= len(self.leaves):
            return {"error": "bad range"}, 400
        end = min(end, len(self.leaves) - 1, start + PAGE - 1)
        return {
            "entries": [
                {
                    "leaf_input": base64.b64encode(
                        self.served_override.get(i, self.leaves[i])
                    ).decode(),
                    "extra_data": base64.b64encode(self.extra[i]).decode(),
                }
                for i in range(start, end + 1)
            ]
        }, 200

    def add_x509(self, cert: bytes, chain: Sequence[bytes]) -> int:
        """Log a certificate; return its index."""
        stamp = int(time.time() * 1000)
        leaf = b"\x00\x00" + struct.pack(">QH", stamp, 0) + u24(cert) + b"\x00\x00"
        return self._add(leaf, chain_vector(chain))

    def add_precert(self, tbs: bytes, issuer_spki: bytes, precert: bytes,
                    chain: Sequence[bytes]) -> int:
        """Log a precertificate; return its index."""
        stamp = int(time.time() * 1000)
        leaf = (b"\x00\x00" + struct.pack(">QH", stamp, 1) + hashlib.sha256(issuer_spki).digest()
                + u24(tbs) + b"\x00\x00")
        return self._add(leaf, u24(precert) + chain_vector(chain))

    def _add(self, leaf: bytes, extra: bytes) -> int:
        with self.lock:
            self.leaves.append(leaf)
            self.extra.append(extra)
            return len(self.leaves) - 1

    def get_entries_starts(self) -> list[int]:
        """The start index of every get-entries request so far."""
        return [int(q["start"]) for p, q in self.requests if p.endswith("get-entries")]


@pytest.fixture
def log() -> Iterator[LogServer]:
    """A fresh, empty log."""
    server = LogServer()
    yield server
    server.close()


@dataclass
class CTPKI:
    """A pinned hierarchy and a rogue CA that is trusted but not pinned."""

    root: CA
    pinned_int: CA
    rogue_root: CA
    rogue_int: CA
    backup: CA


@pytest.fixture(scope="session")
def ct_pki() -> CTPKI:
    """The certificate authorities the CT tests issue from."""
    root = CA.root("pinned root")
    rogue = CA.root("other public CA")
    return CTPKI(root, root.intermediate("pinned issuing CA"), rogue,
                 rogue.intermediate("other issuing CA"), CA.root("backup key"))


def make_precert(issuer: CA, *names: str, key: PrivateKey | None = None
                 ) -> tuple[bytes, bytes, PrivateKey]:
    """Issue a precertificate (with the poison extension); return (precert DER, TBS, key).

    The TBS is the precertificate's TBSCertificate without the poison extension, as a log
    records it (RFC 6962 §3.2).
    """
    key = key or generate_key()
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
    )
    tbs = builder.sign(issuer.key, hashes.SHA256()).tbs_certificate_bytes
    precert = builder.add_extension(x509.PrecertPoison(), critical=True).sign(
        issuer.key, hashes.SHA256()
    )
    return der(precert), tbs, key
