"""Private building blocks of `tlspin.testing.pki`: keys, extensions, signing and DER surgery.

The DER helpers exist for one reason: `cryptography` cannot emit an id-RSASSA-PSS
SubjectPublicKeyInfo, so ``"rsa-pss"`` certificates and PKCS#8 keys are re-encoded here (see the
`tlspin.testing.pki` module docstring).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
from collections.abc import Iterable
from typing import Literal, TypeAlias, get_args

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

KeyKind: TypeAlias = Literal["ec256", "ec384", "ec521", "rsa2048", "rsa-pss", "ed25519", "ed448"]
KEY_KINDS: tuple[KeyKind, ...] = get_args(KeyKind)

PrivateKey: TypeAlias = (
    ec.EllipticCurvePrivateKey
    | rsa.RSAPrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)
#: A point in time, or an offset from now (``timedelta(days=-1)`` means "yesterday").
Moment: TypeAlias = datetime.datetime | datetime.timedelta

_CURVES: dict[str, ec.EllipticCurve] = {
    "ec256": ec.SECP256R1(),
    "ec384": ec.SECP384R1(),
    "ec521": ec.SECP521R1(),
}
# AlgorithmIdentifier DER: SEQUENCE { OID rsaEncryption, NULL } and SEQUENCE { OID id-RSASSA-PSS }.
_RSA_ENCRYPTION_ALGID = bytes.fromhex("300d06092a864886f70d0101010500")
_RSA_PSS_ALGID = bytes.fromhex("300b06092a864886f70d01010a")
_PSS_PADDING = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
_CLOCK_SKEW = datetime.timedelta(hours=1)


def generate_key(kind: KeyKind = "ec256") -> PrivateKey:
    """Generate a fresh private key.

    Args:
        kind: one of `KEY_KINDS`; ``"rsa-pss"`` yields an ordinary 2048-bit RSA key (the PSS
            part lives in how certificates and PKCS#8 encode it).

    Raises:
        ValueError: for an unknown kind.
    """
    if kind in _CURVES:
        return ec.generate_private_key(_CURVES[kind])
    if kind in ("rsa2048", "rsa-pss"):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "ed448":
        return ed448.Ed448PrivateKey.generate()
    raise ValueError(f"expected a key kind out of {', '.join(KEY_KINDS)}; found {kind!r}")


def spki_der_of(cert: x509.Certificate | bytes) -> bytes:
    """Return the SubjectPublicKeyInfo exactly as encoded in *cert* (no re-encoding)."""
    der = cert if isinstance(cert, bytes) else cert.public_bytes(serialization.Encoding.DER)
    tbs = _der_children(der)[0]
    fields = _der_children(tbs)
    # TBSCertificate: [0] version (absent in v1), serial, signature, issuer, validity,
    # subject, SPKI, ...
    return fields[6] if fields[0][0] == 0xA0 else fields[5]


def spki_pin(cert: x509.Certificate | bytes) -> str:
    """Return the RFC 7469 pin ``sha256/<base64>`` of *cert*'s SPKI, computed independently."""
    digest = hashlib.sha256(spki_der_of(cert)).digest()
    return "sha256/" + base64.b64encode(digest).decode("ascii")


def key_and_kind(key: PrivateKey | None, kind: KeyKind | None) -> tuple[PrivateKey, KeyKind]:
    if key is None:
        chosen: KeyKind = kind or "ec256"
        return generate_key(chosen), chosen
    return key, kind_of(key, pss=kind == "rsa-pss")


def kind_of(key: PrivateKey, *, pss: bool) -> KeyKind:
    if isinstance(key, rsa.RSAPrivateKey):
        return "rsa-pss" if pss else "rsa2048"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, ed448.Ed448PrivateKey):
        return "ed448"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        for name, curve in _CURVES.items():
            if curve.name == key.curve.name:
                return name  # type: ignore[return-value]
    raise ValueError(f"expected an RSA, P-256/384/521, Ed25519 or Ed448 key; found {key!r}")


def hash_for(kind: KeyKind) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None:
    if kind in ("ed25519", "ed448"):
        return None
    if kind == "ec384":
        return hashes.SHA384()
    if kind == "ec521":
        return hashes.SHA512()
    return hashes.SHA256()


def validity(
    not_before: Moment | None, not_after: Moment | None, default_days: int
) -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)

    def resolve(moment: Moment | None, default: datetime.datetime) -> datetime.datetime:
        if moment is None:
            return default
        if isinstance(moment, datetime.timedelta):
            return now + moment
        return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)

    # Defaults follow the explicit bound, so `not_after=timedelta(days=-1)` alone makes a
    # certificate that expired yesterday rather than an invalid interval.
    end = resolve(not_after, now) if not_after is not None else None
    default_start = now - _CLOCK_SKEW
    if end is not None and end <= default_start:
        default_start = end - datetime.timedelta(days=default_days)
    start = resolve(not_before, default_start)
    if end is None:
        end = max(start, now) + datetime.timedelta(days=default_days)
    return start, end


def x509_name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tlspin testing"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def general_names(names: Iterable[str]) -> list[x509.GeneralName]:
    result: list[x509.GeneralName] = []
    for name in names:
        try:
            result.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            # Non-ASCII names become A-labels; wildcard labels pass through untouched.
            ascii_name = ".".join(
                label if label.isascii() else label.encode("idna").decode("ascii")
                for label in name.split(".")
            )
            result.append(x509.DNSName(ascii_name))
    return result


def san_strings(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(
        str(entry.value) for entry in san if isinstance(entry, x509.DNSName | x509.IPAddress)
    )


def leaf_key_usage(kind: KeyKind) -> x509.KeyUsage:
    rsa_kind = kind in ("rsa2048", "rsa-pss")
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=rsa_kind,  # RSA key transport exists only for RSA keys
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def ca_builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: PrivateKey,
    *,
    path_length: int | None,
    not_before: Moment | None,
    not_after: Moment | None,
    default_days: int,
) -> x509.CertificateBuilder:
    start, end = validity(not_before, not_after, default_days)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )


def sign_builder(
    builder: x509.CertificateBuilder,
    issuer_key: PrivateKey,
    issuer_kind: KeyKind,
    subject_kind: KeyKind,
) -> x509.Certificate:
    if issuer_kind == "rsa-pss":
        assert isinstance(issuer_key, rsa.RSAPrivateKey)
        cert = builder.sign(issuer_key, hashes.SHA256(), rsa_padding=_PSS_PADDING)
    else:
        cert = builder.sign(issuer_key, hash_for(issuer_kind))
    if subject_kind == "rsa-pss":
        cert = _with_pss_spki(cert, issuer_key, issuer_kind)
    return cert


def _sign_bytes(key: PrivateKey, kind: KeyKind, data: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm = hash_for(kind)
        assert algorithm is not None
        return key.sign(data, ec.ECDSA(algorithm))
    if isinstance(key, rsa.RSAPrivateKey):
        pad = _PSS_PADDING if kind == "rsa-pss" else padding.PKCS1v15()
        return key.sign(data, pad, hashes.SHA256())
    return key.sign(data)


def _with_pss_spki(
    cert: x509.Certificate, issuer_key: PrivateKey, issuer_kind: KeyKind
) -> x509.Certificate:
    """Re-encode *cert* with an id-RSASSA-PSS SPKI and sign it again (see module docstring)."""
    tbs, signature_algorithm, _ = _der_children(cert.public_bytes(serialization.Encoding.DER))
    fields = _der_children(tbs)
    index = 6 if fields[0][0] == 0xA0 else 5
    algid, public_key_bits = _der_children(fields[index])
    if algid != _RSA_ENCRYPTION_ALGID:
        raise ValueError(f"expected an rsaEncryption SPKI to make RSA-PSS; found {algid.hex()}")
    fields[index] = _der_tlv(0x30, _RSA_PSS_ALGID + public_key_bits)
    new_tbs = _der_tlv(0x30, b"".join(fields))
    signature = _sign_bytes(issuer_key, issuer_kind, new_tbs)
    der = _der_tlv(0x30, new_tbs + signature_algorithm + _der_tlv(0x03, b"\x00" + signature))
    return x509.load_der_x509_certificate(der)


def is_pss_spki(spki: bytes) -> bool:
    return _der_children(spki)[0] == _RSA_PSS_ALGID


def pkcs8_der(key: PrivateKey, *, pss: bool) -> bytes:
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    if not pss:
        return der
    version, algid, *rest = _der_children(der)
    if algid != _RSA_ENCRYPTION_ALGID:
        raise ValueError(f"expected an RSA key for an RSA-PSS certificate; found {algid.hex()}")
    return _der_tlv(0x30, version + _RSA_PSS_ALGID + b"".join(rest))


def pem(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    begin, end = f"-----BEGIN {label}-----".encode(), f"-----END {label}-----".encode()
    return b"\n".join([begin, *lines, end, b""])


def _der_tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def _der_children(tlv: bytes) -> list[bytes]:
    """Split the contents of one constructed DER element into its child elements (raw bytes)."""
    _, start, end = _der_header(tlv, 0)
    children = []
    offset = start
    while offset < end:
        _, _, content_end = _der_header(tlv, offset)
        children.append(tlv[offset:content_end])
        offset = content_end
    return children


def _der_header(data: bytes, offset: int) -> tuple[int, int, int]:
    """Return ``(tag, content_start, content_end)`` of the element at *offset*."""
    if offset + 2 > len(data):
        raise ValueError(f"expected a DER element at offset {offset}; found end of data")
    tag, first = data[offset], data[offset + 1]
    if first < 0x80:
        start, size = offset + 2, first
    else:
        count = first & 0x7F
        if not 1 <= count <= 4:
            raise ValueError(f"expected a DER length of 1-4 octets; found {count}")
        start = offset + 2 + count
        size = int.from_bytes(data[offset + 2 : start], "big")
    if start + size > len(data):
        raise ValueError(f"expected {size} content bytes at offset {start}; data is shorter")
    return tag, start, start + size
