"""Reading certificate, key and CSR files (PEM or DER) for the command line tools.

Files are untrusted input: every problem is an :class:`~tlspin.InvalidPinError` (a ``ValueError``)
whose message says what was expected and what was found.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from dataclasses import dataclass
from typing import Literal

from tlspin import _der
from tlspin.exceptions import InvalidPinError
from tlspin.pins import Pin

__all__ = ["CertInfo", "Item", "cert_info", "describe", "load_chain", "pem_blocks"]

Kind = Literal["certificate", "public key", "private key", "certificate request"]

_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END ([A-Z0-9 ]+)-----", re.DOTALL
)
_CERT_LABELS = ("CERTIFICATE", "TRUSTED CERTIFICATE", "X509 CERTIFICATE")
_KINDS: dict[str, Kind] = {
    **dict.fromkeys(_CERT_LABELS, "certificate"),
    "PUBLIC KEY": "public key",
    "RSA PUBLIC KEY": "public key",
    "PRIVATE KEY": "private key",
    "ENCRYPTED PRIVATE KEY": "private key",
    "RSA PRIVATE KEY": "private key",
    "EC PRIVATE KEY": "private key",
    "CERTIFICATE REQUEST": "certificate request",
    "NEW CERTIFICATE REQUEST": "certificate request",
}


@dataclass(frozen=True, slots=True)
class CertInfo:
    """The human-facing fields of a certificate."""

    subject: str
    issuer: str
    not_after: dt.datetime
    self_signed: bool
    is_ca: bool


@dataclass(frozen=True, slots=True)
class Item:
    """One pinnable object found in a file.

    Attributes:
        index: position in the file (0 for single-object files).
        kind: certificate, public key, private key or certificate request.
        pin: its SPKI pin.
        subject: the subject (certificates and CSRs).
        issuer: the issuer (certificates).
        not_after: the end of validity (certificates).
    """

    index: int
    kind: Kind
    pin: Pin
    subject: str | None = None
    issuer: str | None = None
    not_after: dt.datetime | None = None


def pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    """Split PEM text into ``(label, DER)`` pairs.

    Raises:
        InvalidPinError: the text is not PEM, a block is malformed, or binary data is mixed in.
    """
    if b"\x00" in data or not data.isascii():
        msg = "expected PEM text or DER, found PEM blocks mixed with binary data"
        raise InvalidPinError(msg)
    blocks = []
    for match in _PEM_BLOCK.finditer(data):
        label, end_label = match.group(1).decode(), match.group(3).decode()
        if label != end_label:
            msg = f"malformed PEM: BEGIN {label} is closed by END {end_label}"
            raise InvalidPinError(msg)
        body = b"".join(line for line in match.group(2).split() if b":" not in line)
        try:
            der = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            msg = f"malformed PEM: the {label} block is not base64"
            raise InvalidPinError(msg) from None
        blocks.append((label, der))
    if data.count(b"-----BEGIN ") != len(blocks):
        msg = "malformed PEM: a BEGIN line has no matching END line"
        raise InvalidPinError(msg)
    if not blocks:
        msg = "expected PEM blocks (-----BEGIN …-----), found none"
        raise InvalidPinError(msg)
    return blocks


def _is_pem(data: bytes) -> bool:
    return b"-----BEGIN " in data[:65536]


def _der_sequence(data: bytes) -> list[bytes]:
    """Split concatenated DER SEQUENCEs."""
    out = []
    pos = 0
    while pos < len(data):
        if data[pos] != 0x30:
            msg = f"expected PEM or DER, found neither (byte 0x{data[pos]:02x} at offset {pos})"
            raise InvalidPinError(msg)
        try:
            _tag, _start, end = _der.read_tlv(data, pos)
        except _der.DERError as exc:
            msg = f"expected PEM or DER, found malformed DER: {exc}"
            raise InvalidPinError(msg) from None
        out.append(data[pos:end])
        pos = end
    if not out:
        msg = "expected PEM or DER, found an empty file"
        raise InvalidPinError(msg)
    return out


def load_chain(data: bytes) -> list[bytes]:
    """Read certificates (a PEM bundle or concatenated DER), in file order.

    Raises:
        InvalidPinError: the file holds something other than certificates, or nothing.
    """
    if not data.strip():
        msg = "expected certificates, found an empty file"
        raise InvalidPinError(msg)
    if _is_pem(data):
        ders = []
        for label, der in pem_blocks(data):
            if label not in _CERT_LABELS:
                msg = f"expected only CERTIFICATE blocks, found {label}"
                raise InvalidPinError(msg)
            ders.append(der)
    else:
        ders = _der_sequence(data)
    for index, der in enumerate(ders):
        cert_info(der, index=index)  # validates
    return ders


def cert_info(der: bytes, *, index: int = 0) -> CertInfo:
    """Return subject, issuer and expiry of a DER certificate.

    Raises:
        InvalidPinError: *der* is not a certificate.
    """
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
        subject = cert.subject.rfc4514_string()
        issuer = cert.issuer.rfc4514_string()
        not_after = cert.not_valid_after_utc
    except ValueError as exc:
        msg = f"certificate #{index + 1} cannot be read: {exc}"
        raise InvalidPinError(msg) from None
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = basic.ca
    except (x509.ExtensionNotFound, ValueError):
        is_ca = False
    return CertInfo(subject, issuer, not_after, cert.subject == cert.issuer, is_ca)


def _describe_der(der: bytes, index: int, password: bytes | None) -> Item:
    from cryptography import x509

    if der[:1] != b"\x30":
        msg = "expected PEM or DER, found neither"
        raise InvalidPinError(msg)
    try:
        x509.load_der_x509_certificate(der)
    except ValueError:
        pass
    else:
        info = cert_info(der, index=index)
        return Item(
            index,
            "certificate",
            Pin.from_certificate(der),
            info.subject,
            info.issuer,
            info.not_after,
        )
    try:
        csr = x509.load_der_x509_csr(der)
    except ValueError:
        pass
    else:
        return Item(index, "certificate request", Pin.from_csr(der), _csr_subject(der, csr))
    try:
        return Item(index, "public key", Pin.from_public_key(der))
    except InvalidPinError:
        pass
    try:
        return Item(index, "private key", Pin.from_private_key(der, password=password))
    except InvalidPinError as exc:
        if "password" in str(exc).lower() and password is None:
            msg = "the private key is encrypted; give its passphrase (--passphrase-file)"
            raise InvalidPinError(msg) from None
    msg = "expected a certificate, public key, private key or CSR (PEM or DER), found none of them"
    raise InvalidPinError(msg)


def describe(data: bytes, *, password: bytes | None = None) -> list[Item]:
    """Pin every certificate, key or CSR in a PEM or DER file.

    Raises:
        InvalidPinError: the file holds nothing pinnable or is malformed.
    """
    if not data.strip():
        msg = "expected a certificate, key or CSR, found an empty file"
        raise InvalidPinError(msg)
    if not _is_pem(data):
        return [_describe_der(der, i, password) for i, der in enumerate(_der_sequence(data))]
    items = []
    for index, (label, der) in enumerate(pem_blocks(data)):
        kind = _KINDS.get(label)
        if kind is None:
            msg = (
                f"PEM block #{index + 1} is a {label}; expected a certificate, public key, "
                "private key or certificate request"
            )
            raise InvalidPinError(msg)
        if kind == "certificate":
            info = cert_info(der, index=index)
            items.append(
                Item(
                    index,
                    kind,
                    Pin.from_certificate(der),
                    info.subject,
                    info.issuer,
                    info.not_after,
                )
            )
        elif kind == "certificate request":
            items.append(Item(index, kind, Pin.from_csr(der), _csr_subject(der)))
        elif kind == "public key":
            items.append(Item(index, kind, Pin.from_public_key(_pem(label, der))))
        else:
            try:
                pin = Pin.from_private_key(_pem(label, der), password=password)
            except InvalidPinError as exc:
                if label == "ENCRYPTED PRIVATE KEY" and password is None:
                    msg = "the private key is encrypted; give its passphrase (--passphrase-file)"
                    raise InvalidPinError(msg) from None
                if "Password was given but private key is not encrypted" in str(exc):
                    pin = Pin.from_private_key(_pem(label, der))
                else:
                    raise
            items.append(Item(index, kind, pin))
    return items


def _csr_subject(der: bytes, csr: object = None) -> str:
    from cryptography import x509

    try:
        request = (
            csr if isinstance(csr, x509.CertificateSigningRequest) else x509.load_der_x509_csr(der)
        )
        return request.subject.rfc4514_string()
    except ValueError as exc:
        msg = f"the certificate request cannot be read: {exc}"
        raise InvalidPinError(msg) from None


def _pem(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return (
        f"-----BEGIN {label}-----\n".encode()
        + b"\n".join(lines)
        + f"\n-----END {label}-----\n".encode()
    )
