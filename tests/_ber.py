"""Certificates with BER encodings that OpenSSL verifies and DER forbids (hostile-input tests)."""

from __future__ import annotations

import base64
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from tlspin._der import children, encode_tlv, read_tlv
from tlspin.testing.pki import CA, Leaf
from tlspin.testing.servers import TLSServer

MakeServer = Callable[..., TLSServer]


def _ber(leaf: Leaf, issuer: CA, how: str) -> bytes:
    """*leaf* re-encoded with BER inside its TBSCertificate, re-signed by *issuer* (EC).

    ``"long-length"``: the serial number's length in the non-minimal long form (``81 nn``);
    ``"indefinite"``: the issuer Name with an indefinite length (``30 80 … 00 00``).
    """
    der = leaf.cert_der
    _, start, _ = read_tlv(der)
    _, tbs_start, tbs_end = read_tlv(der, start)
    fields = children(der, tbs_start, tbs_end)  # version, serial, sigalg, issuer, ...
    _, serial_tlv, serial_start, serial_end = fields[1]
    _, issuer_tlv, issuer_start, issuer_end = fields[3]
    if how == "long-length":
        size = serial_end - serial_start
        body = (
            der[tbs_start:serial_tlv] + bytes([0x02, 0x81, size]) + der[serial_start:tbs_end]
        )
    else:
        body = (
            der[tbs_start:issuer_tlv]
            + b"\x30\x80" + der[issuer_start:issuer_end] + b"\x00\x00"
            + der[issuer_end:tbs_end]
        )  # fmt: skip
    tbs = encode_tlv(0x30, body)
    key = issuer.key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    signature = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    _, _, algorithm_end = read_tlv(der, tbs_end)
    signed = tbs + der[tbs_end:algorithm_end] + encode_tlv(0x03, b"\0" + signature)
    return encode_tlv(0x30, signed)


def _pem(der: bytes) -> bytes:
    body = base64.encodebytes(der)
    return b"-----BEGIN CERTIFICATE-----\n" + body + b"-----END CERTIFICATE-----\n"


def _serve(server: TLSServer, chain: list[bytes], key_pem: bytes) -> None:
    """Make *server* present *chain* (DER, leaf first), which cryptography may not parse.

    TLSServer builds its contexts from cryptography certificates; this one is loaded from PEM.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # resumption by session id, on every run
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "chain.pem").write_bytes(b"".join(_pem(c) for c in chain))
        (Path(tmp) / "key.pem").write_bytes(key_pem)
        ctx.load_cert_chain(Path(tmp) / "chain.pem", Path(tmp) / "key.pem")
    ctx.set_alpn_protocols(["http/1.1"])
    with server._cond:
        server._contexts[None] = ctx


def ber_server(
    make_tls_server: MakeServer, leaf: Leaf, issuer: CA, how: str, *, chain: tuple[CA, ...] = ()
) -> tuple[TLSServer, bytes]:
    """A started server presenting *leaf* re-encoded by :func:`_ber` (and *chain*'s CAs)."""
    der = _ber(leaf, issuer, how)
    server = make_tls_server(leaf)
    _serve(server, [der, *(ca.cert_der for ca in chain)], leaf.key_pem)
    return server, der
