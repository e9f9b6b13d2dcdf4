"""A minimal DER reader, just enough to slice fields out of certificates without re-encoding.

Pins are defined on the SubjectPublicKeyInfo bytes exactly as they appear in the certificate
(RFC 7469 §2.4). Re-encoding through a key object changes them for some keys (RSA-PSS comes back as
rsaEncryption), and slicing is several times faster than parsing, so the hot path slices. The
path to the SubjectPublicKeyInfo also reads the non-minimal (BER) lengths that OpenSSL accepts
in certificates it verifies, so such a certificate gets the pin OpenSSL's tools print for it.
"""

from __future__ import annotations

__all__ = ["DERError", "children", "encode_tlv", "read_tlv", "spki_from_certificate"]


class DERError(ValueError):
    """The bytes are not the DER structure that was expected."""


def read_tlv(data: bytes, offset: int = 0) -> tuple[int, int, int]:
    """Read one tag-length-value at *offset*.

    Returns:
        ``(tag, value_start, value_end)``.
    """
    if offset + 2 > len(data):
        msg = "truncated DER: expected a tag and a length"
        raise DERError(msg)
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        msg = "unsupported DER: multi-byte tags"
        raise DERError(msg)
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4:
            msg = f"unsupported DER length encoding (0x{first:02x})"
            raise DERError(msg)
        if pos + n > len(data):
            msg = "truncated DER length"
            raise DERError(msg)
        length = int.from_bytes(data[pos : pos + n], "big")
        if length < 0x80 or data[pos] == 0:
            msg = "non-minimal DER length"
            raise DERError(msg)
        pos += n
    end = pos + length
    if end > len(data):
        msg = f"truncated DER: value needs {length} bytes, {len(data) - pos} left"
        raise DERError(msg)
    return tag, pos, end


def children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """List the TLVs inside ``data[start:end]`` as ``(tag, tlv_start, value_start, value_end)``."""
    out = []
    pos = start
    while pos < end:
        tag, vstart, vend = read_tlv(data, pos)
        if vend > end:
            msg = "DER element overruns its parent"
            raise DERError(msg)
        out.append((tag, pos, vstart, vend))
        pos = vend
    return out


_SEQUENCE = 0x30


def _span(data: bytes, pos: int, limit: int) -> tuple[int, int]:
    """Return ``(value_start, value_end)`` of the TLV at *pos*, which must end by *limit*.

    Unlike :func:`read_tlv`, a non-minimal definite length (``81 05`` for 5) is read: OpenSSL
    accepts such BER lengths in a certificate it verifies, and they are unambiguous, so both
    readers find the same SubjectPublicKeyInfo (whose bytes are taken as they are). Indefinite
    lengths and multi-byte tags stay unreadable.
    """
    # Hot path for uncached certificates: inline the length decoding of read_tlv().
    if pos + 2 > limit:
        msg = "truncated DER: expected a tag and a length"
        raise DERError(msg)
    if data[pos] & 0x1F == 0x1F:
        msg = "unsupported DER: multi-byte tags"
        raise DERError(msg)
    first = data[pos + 1]
    if first < 0x80:
        vstart = pos + 2
        vend = vstart + first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + 2 + n > limit:
            msg = f"unsupported or truncated DER length (0x{first:02x})"
            raise DERError(msg)
        length = int.from_bytes(data[pos + 2 : pos + 2 + n], "big")
        vstart = pos + 2 + n
        vend = vstart + length
    if vend > limit:
        msg = "truncated DER: a value runs past its container"
        raise DERError(msg)
    return vstart, vend


def spki_from_certificate(cert_der: bytes) -> bytes:
    """Return the SubjectPublicKeyInfo bytes of an X.509 certificate, exactly as encoded."""
    size = len(cert_der)
    if size < 2 or cert_der[0] != _SEQUENCE:
        msg = "not a DER certificate: expected one outer SEQUENCE"
        raise DERError(msg)
    start, end = _span(cert_der, 0, size)
    if end != size:
        msg = "not a DER certificate: trailing bytes after the outer SEQUENCE"
        raise DERError(msg)
    if start >= end or cert_der[start] != _SEQUENCE:
        msg = "not a DER certificate: expected a TBSCertificate SEQUENCE"
        raise DERError(msg)
    pos, tbs_end = _span(cert_der, start, end)
    # version [0] EXPLICIT is optional; skip it so the count below is fixed.
    if pos < tbs_end and cert_der[pos] == 0xA0:
        pos = _span(cert_der, pos, tbs_end)[1]
    # serialNumber, signature, issuer, validity, subject, then subjectPublicKeyInfo.
    for _ in range(5):
        pos = _span(cert_der, pos, tbs_end)[1]
    if pos >= tbs_end or cert_der[pos] != _SEQUENCE:
        msg = "not a DER certificate: no SubjectPublicKeyInfo where expected"
        raise DERError(msg)
    return cert_der[pos : _span(cert_der, pos, tbs_end)[1]]


def spki_from_csr(csr_der: bytes) -> bytes:
    """Return the SubjectPublicKeyInfo bytes of a PKCS#10 request, exactly as encoded."""
    tag, start, end = read_tlv(csr_der)
    if tag != _SEQUENCE or end != len(csr_der):
        msg = "not a DER CSR: expected one outer SEQUENCE"
        raise DERError(msg)
    info_tag, info_start, info_end = read_tlv(csr_der, start)
    if info_tag != _SEQUENCE:
        msg = "not a DER CSR: expected a CertificationRequestInfo SEQUENCE"
        raise DERError(msg)
    fields = children(csr_der, info_start, info_end)
    # version, subject, subjectPKInfo, attributes
    if len(fields) < 3 or fields[2][0] != _SEQUENCE:
        msg = "not a DER CSR: no SubjectPublicKeyInfo where expected"
        raise DERError(msg)
    _, tlv_start, _, tlv_end = fields[2]
    return csr_der[tlv_start:tlv_end]


def pkcs8_algorithm(pkcs8_der: bytes) -> bytes:
    """Return the AlgorithmIdentifier TLV of a PKCS#8 PrivateKeyInfo."""
    tag, start, end = read_tlv(pkcs8_der)
    if tag != _SEQUENCE:
        msg = "not a PKCS#8 key"
        raise DERError(msg)
    fields = children(pkcs8_der, start, end)
    if len(fields) < 2 or fields[1][0] != _SEQUENCE:
        msg = "not a PKCS#8 key: no AlgorithmIdentifier"
        raise DERError(msg)
    return pkcs8_der[fields[1][1] : fields[1][3]]


def encode_tlv(tag: int, value: bytes) -> bytes:
    """Encode one DER tag-length-value."""
    n = len(value)
    if n < 0x80:
        return bytes((tag, n)) + value
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(body))) + body + value
