"""Pins: the SHA-256 of a SubjectPublicKeyInfo, and the separate whole-certificate kind.

A :class:`Pin` is what RFC 7469, OkHttp, TrustKit, Android and curl all call a pin: the SHA-256
digest of the DER SubjectPublicKeyInfo, taken from the certificate byte for byte. A
:class:`CertificatePin` is the SHA-256 of a whole certificate (urllib3's ``assert_fingerprint``); it
exists only to migrate from such configurations and never compares equal to a :class:`Pin`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tlspin import _der
from tlspin.exceptions import InvalidPinError

if TYPE_CHECKING:
    from cryptography import x509

# cryptography's X.509 and key modules are imported inside the constructors that need them:
# the hot path (spki_sha256, Pin equality) never does, and `import tlspin` stays cheap.

__all__ = ["CertificatePin", "Pin", "spki_sha256"]

_ACCEPTED = (
    "accepted forms: 'sha256/<base64>' (OkHttp), 'pin-sha256=\"<base64>\"' (HPKP), "
    "'sha256//<base64>' (curl) or a bare base64 SHA-256 digest"
)
_B64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
_PREFIXED = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)//?(.*)$", re.DOTALL)
_HEX = re.compile(r"^[0-9A-Fa-f]{2}(:?[0-9A-Fa-f]{2})*$")

# SPKI digests keyed by certificate DER. Certificates repeat across connections (the same leaf,
# intermediate and root), so this turns the per-connection cost into a dict lookup. The keys are
# whole certificates, some of them an attacker's (a refused chain is cached too), so the cache
# is bounded by the bytes it holds as well as by its entries: a MITM answering every attempt
# with a fresh 100 KiB certificate would otherwise pin ~400 MiB (4,096 entries).
_SPKI_CACHE: dict[bytes, bytes] = {}
_SPKI_CACHE_MAX = 4096
_SPKI_CACHE_MAX_BYTES = 4 * 1024 * 1024


class _CacheSize:
    """The DER bytes held as keys of :data:`_SPKI_CACHE` (approximate under threads)."""

    held = 0


def spki_sha256(cert_der: bytes) -> bytes:
    """Return SHA-256 of the certificate's SubjectPublicKeyInfo, exactly as encoded in it.

    Results are cached by certificate bytes. A certificate whose fields around the key use BER
    lengths that OpenSSL accepts (non-minimal length octets) is read as OpenSSL reads it, so
    the digest is the one ``openssl x509 -pubkey`` gives.

    Raises:
        InvalidPinError: *cert_der* is not a certificate whose key can be located.
    """
    digest = _SPKI_CACHE.get(cert_der)
    if digest is None:
        try:
            spki = _der.spki_from_certificate(cert_der)
        except _der.DERError as exc:
            raise InvalidPinError(f"cannot read the certificate's public key: {exc}") from None
        digest = hashlib.sha256(spki).digest()
        size = len(cert_der)
        entries = len(_SPKI_CACHE)
        if not entries:
            _CacheSize.held = 0  # emptied from outside (a test, a benchmark)
        elif entries >= _SPKI_CACHE_MAX or _CacheSize.held + size > _SPKI_CACHE_MAX_BYTES:
            _SPKI_CACHE.clear()
            _CacheSize.held = 0
        _SPKI_CACHE[cert_der] = digest
        _CacheSize.held += size
    return digest


def _shown(text: object) -> str:
    """``repr(text)``, cut short: errors echo hostile input without carrying megabytes of it."""
    if isinstance(text, str) and len(text) > 100:
        return f"{text[:60]!r}… ({len(text)} characters)"
    return repr(text)


def _hex_message(text: str, original: str) -> str | None:
    """The error for a 64-hex-digit SHA-256, which is not base64; None for anything else."""
    compact = text.replace(":", "")
    if not _HEX.match(text) or len(compact) != 64:
        return None
    as_pin = "sha256/" + base64.b64encode(bytes.fromhex(compact)).decode("ascii")
    # Both kinds circulate as hex; nothing in the digits says which one it is.
    return (
        f"pin {_shown(original)} is 64 hex digits, not base64: a SHA-256 written in hex, either "
        "of the public key (SPKI) or of the whole certificate. If it is the public key's hash "
        "(as 'tlspin pin CERT --form hex' or 'openssl x509 -pubkey -noout | openssl pkey "
        f"-pubin -outform DER | openssl dgst -sha256' print it), the pin is {as_pin} (the same "
        "digest in base64). If it is "
        "the certificate's fingerprint (as 'openssl x509 -noout -fingerprint -sha256' prints it, "
        "colon-separated), it changes at every renewal: pin the key instead ('tlspin pin CERT' "
        "prints its pin), or keep the fingerprint to migrate with CertificatePin.parse() / "
        "'cert-sha256/<hex>'. To tell which it is, compare it with both commands' output for "
        "the certificate."
    )


def _b64decode(text: str, original: str) -> bytes:
    text = text.strip()
    hex_message = _hex_message(text, original)
    if hex_message is not None:
        raise InvalidPinError(hex_message)
    if not text or not _B64.match(text):
        msg = f"pin {_shown(original)} is not base64; {_ACCEPTED}"
        raise InvalidPinError(msg)
    padded = text + "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidPinError(f"pin {_shown(original)} is not valid base64; {_ACCEPTED}") from None
    if len(raw) != 32:
        raise InvalidPinError(
            f"pin {_shown(original)} decodes to {len(raw)} bytes, expected 32 (a SHA-256 digest); "
            f"{_ACCEPTED}"
        )
    return raw


def _to_der(data: bytes | str, pem_labels: tuple[str, ...], what: str) -> tuple[bytes, str | None]:
    """Return (DER, PEM label or None) for PEM text or DER bytes."""
    if isinstance(data, str):
        data = data.encode("ascii", "replace")
    stripped = data.lstrip()
    if stripped.startswith(b"-----BEGIN "):
        match = re.search(
            rb"-----BEGIN ([A-Z0-9 ]+)-----\s*(.*?)\s*-----END \1-----", stripped, re.DOTALL
        )
        if match is None:
            msg = f"cannot read the {what}: malformed PEM block"
            raise InvalidPinError(msg)
        label = match.group(1).decode()
        if label not in pem_labels:
            raise InvalidPinError(
                f"cannot read the {what}: expected a PEM block of type "
                f"{' or '.join(pem_labels)}, found {label}"
            )
        try:
            der = base64.b64decode(b"".join(match.group(2).split()), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidPinError(f"cannot read the {what}: PEM body is not base64") from None
        return der, label
    return bytes(data), None


@dataclass(frozen=True, slots=True)
class Pin:
    """A SHA-256 pin of a SubjectPublicKeyInfo.

    Build one with :meth:`parse` or a ``from_*`` constructor; the constructor takes the raw
    32-byte digest. ``str(pin)`` is the OkHttp form ``sha256/<base64>``.
    """

    digest: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.digest, bytes) or len(self.digest) != 32:
            found = len(self.digest) if isinstance(self.digest, bytes) else type(self.digest)
            msg = f"a pin digest must be 32 bytes of SHA-256, found {found}"
            raise InvalidPinError(msg)

    # -- parsing and formatting -------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> Pin:
        """Parse a pin in any of the common notations.

        Accepts ``sha256/<b64>``, ``pin-sha256="<b64>"``, ``sha256//<b64>`` and a bare base64
        digest, and normalises them.

        Raises:
            InvalidPinError: the text is not a SHA-256 SPKI pin.
        """
        if isinstance(text, Pin):
            return text
        if not isinstance(text, str):
            msg = f"a pin must be a string, found {type(text).__name__}; {_ACCEPTED}"
            raise InvalidPinError(msg)
        s = text.strip()
        lower = s.lower()
        if lower.startswith("pin-"):
            name, sep, value = s.partition("=")
            algo = name[4:].strip().lower()
            if not sep:
                msg = f"pin {_shown(text)} has no '=' after {_shown(name)}; {_ACCEPTED}"
                raise InvalidPinError(msg)
            cls._require_sha256(algo, text)
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return cls(_b64decode(value, text))
        if lower.startswith("cert-sha256"):
            raise InvalidPinError(
                f"{_shown(text)} is a whole-certificate pin; use CertificatePin.parse() for those"
            )
        prefixed = _PREFIXED.match(s)
        if prefixed is not None and not _b64_is_digest(s):
            cls._require_sha256(prefixed.group(1).lower(), text)
            value = prefixed.group(2)
            # "sha256//X" is curl's form, and also OkHttp's form of a digest whose base64
            # starts with "/" (1 pin in 64): take whichever reading is a SHA-256 digest.
            if s[len(prefixed.group(1)) :].startswith("//") and not _b64_is_digest(value.strip()):
                value = "/" + value
            return cls(_b64decode(value, text))
        return cls(_b64decode(s, text))

    @staticmethod
    def _require_sha256(algo: str, text: str) -> None:
        if algo == "sha256":
            return
        if algo in ("sha1", "sha-1"):
            raise InvalidPinError(
                f"pin {_shown(text)} uses SHA-1, which tlspin does not accept (only SHA-256); "
                f"{_ACCEPTED}"
            )
        raise InvalidPinError(
            f"pin {_shown(text)} uses unknown algorithm {_shown(algo)}, expected sha256; "
            f"{_ACCEPTED}"
        )

    @property
    def b64(self) -> str:
        """The base64 digest alone."""
        return base64.b64encode(self.digest).decode("ascii")

    @property
    def hpkp(self) -> str:
        """The HPKP / TrustKit form ``pin-sha256="<b64>"``."""
        return f'pin-sha256="{self.b64}"'

    @property
    def curl(self) -> str:
        """The curl ``--pinnedpubkey`` form ``sha256//<b64>``."""
        return f"sha256//{self.b64}"

    @property
    def hex(self) -> str:
        """The digest in lower-case hex (as Cert Spotter's ``pubkey_sha256``)."""
        return self.digest.hex()

    def __str__(self) -> str:
        return f"sha256/{self.b64}"

    def __repr__(self) -> str:
        return f"Pin('sha256/{self.b64}')"

    def matches(self, other: bytes) -> bool:
        """Compare with a raw digest in constant time."""
        return hmac.compare_digest(self.digest, other)

    # -- constructors -----------------------------------------------------------------------
    @classmethod
    def from_spki(cls, spki_der: bytes) -> Pin:
        """Pin a DER SubjectPublicKeyInfo as given."""
        return cls(hashlib.sha256(spki_der).digest())

    @classmethod
    def from_certificate(cls, data: bytes | str | x509.Certificate) -> Pin:
        """Pin the public key of a certificate given as PEM, DER or a ``cryptography`` object."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        if isinstance(data, x509.Certificate):
            der = data.public_bytes(serialization.Encoding.DER)
        else:
            der, _ = _to_der(data, ("CERTIFICATE", "TRUSTED CERTIFICATE"), "certificate")
        try:
            spki = _der.spki_from_certificate(der)
        except _der.DERError as exc:
            raise InvalidPinError(f"cannot read the certificate: {exc}") from None
        return cls.from_spki(spki)

    @classmethod
    def from_public_key(cls, data: bytes | str | Any) -> Pin:
        """Pin a public key given as PEM (``PUBLIC KEY`` or ``RSA PUBLIC KEY``), DER or an object.

        A DER or PEM SubjectPublicKeyInfo is hashed as given, never re-encoded.
        """
        from cryptography.hazmat.primitives import serialization

        if not isinstance(data, bytes | str):
            return cls._from_key_object(data)
        der, label = _to_der(data, ("PUBLIC KEY", "RSA PUBLIC KEY"), "public key")
        if label == "RSA PUBLIC KEY":
            try:
                key = serialization.load_der_public_key(_der.encode_tlv(0x30, _rsa_spki_body(der)))
            except ValueError as exc:
                raise InvalidPinError(f"cannot read the RSA public key: {exc}") from None
            return cls._from_key_object(key)
        try:
            serialization.load_der_public_key(der)
        except (ValueError, TypeError) as exc:
            raise InvalidPinError(
                f"cannot read the public key: expected a DER/PEM SubjectPublicKeyInfo ({exc})"
            ) from None
        except Exception as exc:  # noqa: BLE001 - unsupported algorithms raise other types
            raise InvalidPinError(f"cannot read the public key: {exc}") from None
        return cls.from_spki(der)

    @classmethod
    def from_private_key(cls, data: bytes | str | Any, password: bytes | str | None = None) -> Pin:
        """Pin the public half of a private key (PEM or DER, optionally encrypted).

        Lets a backup pin exist before any certificate for that key does.
        """
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        if isinstance(password, str):
            password = password.encode()
        if not isinstance(data, bytes | str):
            return cls._from_key_object(data.public_key())
        raw = data.encode() if isinstance(data, str) else bytes(data)
        try:
            if raw.lstrip().startswith(b"-----BEGIN"):
                key = serialization.load_pem_private_key(raw, password=password)
                der, label = _to_der(
                    raw,
                    ("PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"),
                    "private key",
                )
                pkcs8 = der if label == "PRIVATE KEY" else None
            else:
                key = serialization.load_der_private_key(raw, password=password)
                pkcs8 = raw
        except TypeError as exc:
            raise InvalidPinError(f"cannot read the private key: {exc}") from None
        except (ValueError, InvalidPinError) as exc:
            raise InvalidPinError(
                f"cannot read the private key (wrong password, or not a PEM/DER key): {exc}"
            ) from None
        except Exception as exc:  # noqa: BLE001 - unsupported algorithms raise other types
            raise InvalidPinError(f"cannot read the private key: {exc}") from None
        if pkcs8 is not None and isinstance(key, rsa.RSAPrivateKey):
            # RSA-PSS keys carry their own AlgorithmIdentifier; keep it so the pin equals the
            # one of a certificate for this key (cryptography would re-encode as rsaEncryption).
            try:
                alg = _der.pkcs8_algorithm(pkcs8)
            except _der.DERError:
                alg = b""
            if _RSA_PSS_OID in alg:
                pkcs1 = key.public_key().public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.PKCS1
                )
                spki = _der.encode_tlv(0x30, alg + _der.encode_tlv(0x03, b"\x00" + pkcs1))
                return cls.from_spki(spki)
        return cls._from_key_object(key.public_key())

    @classmethod
    def from_csr(cls, data: bytes | str | x509.CertificateSigningRequest) -> Pin:
        """Pin the public key of a certificate signing request (PEM, DER or object)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        if isinstance(data, x509.CertificateSigningRequest):
            der = data.public_bytes(serialization.Encoding.DER)
        else:
            der, _ = _to_der(
                data, ("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"), "certificate request"
            )
        try:
            spki = _der.spki_from_csr(der)
        except _der.DERError as exc:
            raise InvalidPinError(f"cannot read the certificate request: {exc}") from None
        return cls.from_spki(spki)

    @classmethod
    def _from_key_object(cls, key: Any) -> Pin:
        from cryptography.hazmat.primitives import serialization

        try:
            spki = key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        except AttributeError:
            raise InvalidPinError(
                f"expected a public key, PEM or DER, found {type(key).__name__}"
            ) from None
        return cls.from_spki(spki)


# 1.2.840.113549.1.1.10, id-RSASSA-PSS, as its DER OBJECT IDENTIFIER TLV.
_RSA_PSS_OID = bytes.fromhex("06092a864886f70d01010a")
# AlgorithmIdentifier { rsaEncryption, NULL }
_RSA_ALG = bytes.fromhex("300d06092a864886f70d0101010500")


def _rsa_spki_body(pkcs1: bytes) -> bytes:
    return _RSA_ALG + _der.encode_tlv(0x03, b"\x00" + pkcs1)


def _b64_is_digest(text: str) -> bool:
    try:
        return len(base64.b64decode(text + "=" * (-len(text) % 4), validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


@dataclass(frozen=True, slots=True)
class CertificatePin:
    """A SHA-256 fingerprint of a whole DER certificate, as urllib3's ``assert_fingerprint`` uses.

    Kept only to migrate existing configurations: it breaks at every renewal, even with the same
    key. It never equals a :class:`Pin`. ``str()`` gives ``cert-sha256/<hex>``.
    """

    digest: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.digest, bytes) or len(self.digest) != 32:
            msg = "a certificate fingerprint must be 32 bytes of SHA-256"
            raise InvalidPinError(msg)

    @classmethod
    def parse(cls, text: str) -> CertificatePin:
        """Parse ``cert-sha256/<hex>`` or a colon-separated / plain 64-digit hex fingerprint."""
        if isinstance(text, CertificatePin):
            return text
        s = str(text).strip()
        if s.lower().startswith("cert-sha256/"):
            s = s[len("cert-sha256/") :]
        compact = s.replace(":", "")
        if not _HEX.match(s) or len(compact) != 64:
            raise InvalidPinError(
                f"certificate fingerprint {_shown(text)} is not 64 hex digits of SHA-256 "
                "(accepted: 'cert-sha256/<hex>', 'AB:CD:…' or plain hex; MD5 and SHA-1 are refused)"
            )
        return cls(bytes.fromhex(compact))

    @classmethod
    def from_certificate(cls, data: bytes | str | x509.Certificate) -> CertificatePin:
        """Fingerprint a certificate given as PEM, DER or a ``cryptography`` object."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        if isinstance(data, x509.Certificate):
            der = data.public_bytes(serialization.Encoding.DER)
        else:
            der, _ = _to_der(data, ("CERTIFICATE",), "certificate")
        return cls(hashlib.sha256(der).digest())

    @property
    def hex(self) -> str:
        """Colon-separated upper-case hex, as ``openssl x509 -fingerprint -sha256`` prints."""
        return ":".join(f"{b:02X}" for b in self.digest)

    def __str__(self) -> str:
        return f"cert-sha256/{self.digest.hex()}"

    def __repr__(self) -> str:
        return f"CertificatePin('{self}')"


def parse_any(text: str | Pin | CertificatePin) -> Pin | CertificatePin:
    """Parse a :class:`Pin`, or a :class:`CertificatePin` for ``cert-sha256/…`` text."""
    if isinstance(text, Pin | CertificatePin):
        return text
    if isinstance(text, str) and text.strip().lower().startswith("cert-sha256/"):
        return CertificatePin.parse(text)
    return Pin.parse(text)
