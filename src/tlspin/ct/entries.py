"""Parse RFC 6962 log entries: MerkleTreeLeaf, X.509 and precertificate entries, extra_data.

Wire format (RFC 6962 §3.4, §4.6)::

    MerkleTreeLeaf   = version(1) leaf_type(1) TimestampedEntry
    TimestampedEntry = timestamp(8) entry_type(2)
                       x509_entry:    ASN.1Cert            <1..2^24-1>
                       precert_entry: issuer_key_hash[32]  TBSCertificate <1..2^24-1>
                       extensions <0..2^16-1>
    extra_data (x509)    = certificate_chain <0..2^24-1> of ASN.1Cert <1..2^24-1>
    extra_data (precert) = pre_certificate ASN.1Cert, precertificate_chain (as above)

A precertificate entry carries a bare TBSCertificate; to read its names and key we wrap it in a
Certificate SEQUENCE with an empty signature, which ``cryptography`` parses without verifying.
Its ``issuer_key_hash`` is the SHA-256 of the final issuer's SubjectPublicKeyInfo, which is
exactly an SPKI pin of the issuing CA.

Entries are attacker-influenced input: every malformed one raises :class:`CTEntryError`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tlspin import _der
from tlspin.exceptions import InvalidPinError
from tlspin.pins import spki_sha256

__all__ = ["CTEntryError", "CertRecord", "parse_entry", "record_from_certificate"]

EntryType = Literal["x509", "precert", "unknown"]
_EMPTY_BIT_STRING = b"\x03\x01\x00"
# 1.3.6.1.4.1.11129.2.4.4: a Precertificate Signing Certificate (RFC 6962 §3.1); its key signs
# only precertificates and never appears in a chain clients build.
_PRECERT_SIGNING = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.4")


class CTEntryError(ValueError):
    """A log entry or export record is malformed."""


@dataclass(frozen=True, slots=True)
class CertRecord:
    """One certificate (or precertificate) seen in a log or an export.

    Attributes:
        index: the log index (or the export's ``id``).
        entry_type: ``"x509"``, ``"precert"`` or ``"unknown"`` (exports without the body).
        names: DNS names from the subjectAltName (the CN when there is none), as written.
        spki_sha256: SHA-256 of the certificate's SubjectPublicKeyInfo, None when unknown.
        chain_keys: SPKI SHA-256 of issuers whose link to the certificate is known to hold
            (verified signatures, or the log's ``issuer_key_hash``).
        subject: subject DN (or the export's common name).
        issuer: issuer DN.
        serial: serial number in hex.
        not_before: start of validity.
        not_after: end of validity.
        timestamp: when the log added the entry.
    """

    index: int | None
    entry_type: EntryType
    names: tuple[str, ...]
    spki_sha256: bytes | None
    chain_keys: tuple[bytes, ...] = ()
    subject: str = ""
    issuer: str = ""
    serial: str | None = None
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    timestamp: dt.datetime | None = None


class _Reader:
    """A bounds-checked reader of TLS presentation-language structures."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def take(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise CTEntryError(
                f"{self.what} is truncated: needed {size} bytes at offset {self.pos}, "
                f"{len(self.data) - self.pos} left"
            )
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, length_size: int) -> bytes:
        return self.take(self.uint(length_size))

    def done(self) -> bool:
        return self.pos == len(self.data)


def _certificate_list(data: bytes, what: str) -> list[bytes]:
    reader = _Reader(data, what)
    out = []
    while not reader.done():
        cert = reader.vector(3)
        if not cert:
            raise CTEntryError(f"{what} holds an empty certificate")
        out.append(cert)
    return out


def _load(der: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise CTEntryError(f"{what} is not a valid X.509 certificate: {exc}") from None


def _wrap_tbs(tbs: bytes) -> bytes:
    """Turn a TBSCertificate into a parseable Certificate with an empty signature."""
    problem = "the precertificate's TBSCertificate is malformed"
    try:
        tag, start, end = _der.read_tlv(tbs)
        fields = _der.children(tbs, start, end) if tag == 0x30 and end == len(tbs) else []
    except _der.DERError as exc:
        raise CTEntryError(f"{problem}: {exc}") from None
    index = 2 if fields and fields[0][0] == 0xA0 else 1
    if len(fields) <= index or fields[index][0] != 0x30:
        raise CTEntryError(f"{problem}: expected a SEQUENCE with a signature AlgorithmIdentifier")
    algorithm = tbs[fields[index][1] : fields[index][3]]
    return _der.encode_tlv(0x30, tbs + algorithm + _EMPTY_BIT_STRING)


def _names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return tuple(str(n) for n in san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    except ValueError as exc:
        raise CTEntryError(f"the certificate's extensions are malformed: {exc}") from None
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return tuple(str(cn.value) for cn in cns)


def _is_precert_signer(cert: x509.Certificate) -> bool:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        return False
    return _PRECERT_SIGNING in list(eku) and ExtendedKeyUsageOID.SERVER_AUTH not in list(eku)


def _linked_keys(child: x509.Certificate, chain: list[bytes]) -> list[bytes]:
    """SPKI digests of the chain, as far as each certificate really signed the one below."""
    keys = []
    for der in chain:
        try:
            issuer = x509.load_der_x509_certificate(der)
            child.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            break
        if not _is_precert_signer(issuer):
            keys.append(spki_sha256(der))
        child = issuer
    return keys


def record_from_certificate(
    der: bytes,
    *,
    chain: list[bytes] | None = None,
    index: int | None = None,
    entry_type: EntryType = "x509",
    timestamp: dt.datetime | None = None,
    extra_keys: tuple[bytes, ...] = (),
) -> CertRecord:
    """Describe a DER certificate (and the chain that issued it).

    Raises:
        CTEntryError: the certificate cannot be parsed.
    """
    cert = _load(der, "the certificate")
    try:
        digest = spki_sha256(der)
    except InvalidPinError as exc:
        raise CTEntryError(str(exc)) from None
    keys = list(extra_keys)
    keys += [k for k in _linked_keys(cert, chain or []) if k not in keys]
    try:
        subject, issuer = cert.subject.rfc4514_string(), cert.issuer.rfc4514_string()
    except ValueError as exc:
        raise CTEntryError(f"the certificate's names are malformed: {exc}") from None
    return CertRecord(
        index=index,
        entry_type=entry_type,
        names=_names(cert),
        spki_sha256=digest,
        chain_keys=tuple(keys),
        subject=subject,
        issuer=issuer,
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        timestamp=timestamp,
    )


def parse_entry(leaf_input: bytes, extra_data: bytes, *, index: int | None = None) -> CertRecord:
    """Parse one ``get-entries`` entry (already base64-decoded).

    Raises:
        CTEntryError: the entry is malformed or of an unknown type.
    """
    reader = _Reader(leaf_input, "the MerkleTreeLeaf")
    version, leaf_type = reader.uint(1), reader.uint(1)
    if version != 0 or leaf_type != 0:
        raise CTEntryError(
            f"expected a v1 timestamped_entry leaf (0, 0), found version {version}, "
            f"leaf_type {leaf_type}"
        )
    millis = reader.uint(8)
    timestamp = dt.datetime.fromtimestamp(millis / 1000, dt.UTC) if millis < 2**47 else None
    entry_type = reader.uint(2)
    if entry_type == 0:
        der = reader.vector(3)
        chain = _certificate_list(_Reader(extra_data, "extra_data").vector(3), "extra_data")
        reader.vector(2)  # CtExtensions
        if not reader.done():
            msg = "the MerkleTreeLeaf has trailing bytes"
            raise CTEntryError(msg)
        return record_from_certificate(der, chain=chain, index=index, timestamp=timestamp)
    if entry_type == 1:
        issuer_key_hash = reader.take(32)
        tbs = reader.vector(3)
        reader.vector(2)
        if not reader.done():
            msg = "the MerkleTreeLeaf has trailing bytes"
            raise CTEntryError(msg)
        chain = []
        if extra_data:
            extra = _Reader(extra_data, "extra_data")
            pre_certificate = extra.vector(3)
            chain = _certificate_list(extra.vector(3), "extra_data")
            if not extra.done():
                msg = "extra_data has trailing bytes"
                raise CTEntryError(msg)
            # Links are verified from the precertificate itself, which was really signed.
            keys = _linked_keys(_load(pre_certificate, "the precertificate"), chain)
        else:
            keys = []
        return record_from_certificate(
            _wrap_tbs(tbs), index=index, entry_type="precert", timestamp=timestamp,
            extra_keys=(issuer_key_hash, *[k for k in keys if k != issuer_key_hash]),
        )
    raise CTEntryError(f"expected entry_type 0 (x509) or 1 (precert), found {entry_type}")
