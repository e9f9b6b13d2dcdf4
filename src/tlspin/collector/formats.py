"""Parse and validate incoming reports: tlspin, RFC 7469 (HPKP) and TrustKit (iOS, Android).

Every report is attacker-controlled. :func:`parse_report` either returns a normalised
:class:`ParsedReport` or raises :class:`ReportError` with a reason meant for the sender; it never
raises anything else on any input.

Field names come from the formats' sources: RFC 7469 §3.1; TrustKit's ``TSKPinFailureReport.m``
(iOS: ``app-bundle-id``, ``app-version``, ``app-platform``, ``app-platform-version``,
``app-vendor-id``, ``trustkit-version``, ``enforce-pinning``, ``validation-result``,
``known-pins-expiration-date``) and TrustKit-Android's ``PinningFailureReport.java`` (the same,
plus ``served-certificate-chain``; ``port`` is always 0 there).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "RAW_KEEP", "CertInfo", "ParsedReport", "ReportError", "clean_text", "clean_value",
    "is_storable", "parse_report",
]

_MAX_CHAIN = 16
_MAX_PINS = 64
_MAX_TEXT = 256
_MAX_NAME = 512
_PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
_PEM_END = "-----END CERTIFICATE-----"
#: The most characters of a report's raw JSON that are stored with it. A report's meaning is
#: in its normalised fields; the raw text is kept for a person to read, and a typical report
#: (three PEM certificates) is well under this. A longer body is stored without the keys no
#: format defines, and cut if it is still too long: padding cannot multiply the storage.
RAW_KEEP = 16 * 1024
_KNOWN_KEYS = frozenset({
    "date-time", "hostname", "port", "effective-expiration-date", "include-subdomains",
    "noted-hostname", "served-certificate-chain", "validated-certificate-chain", "known-pins",
    "tlspin-version", "tlspin-report-format", "mode", "reason", "app-id", "app-version", "rule",
    "app-bundle-id", "app-platform", "app-platform-version", "app-vendor-id",
    "trustkit-version", "enforce-pinning", "validation-result", "known-pins-expiration-date",
})
# TSKTrustEvaluationResult (iOS) and PinningValidationResult (Android) share these ordinals.
TRUSTKIT_RESULTS = {
    0: "success",
    1: "mismatch",
    2: "untrusted-chain",
    3: "invalid-parameters",
    4: "user-trust-anchor",
    5: "spki-hash-error",
}


_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def is_storable(text: str) -> bool:
    """False if *text* holds NUL or a lone surrogate, which databases cannot store."""
    return _UNSTORABLE.search(text) is None


def clean_text(text: str) -> str:
    """*text* with NUL and lone surrogates replaced by U+FFFD."""
    return _UNSTORABLE.sub("\ufffd", text)


def clean_value(value: Any) -> Any:
    """*value* (JSON-like: str, list, dict, scalars) with :func:`clean_text` applied to every
    string in it, keys included: what is shown or exported can always be encoded, whatever a
    database returns."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value) if _UNSTORABLE.search(value) else value
    if isinstance(value, list):
        return [clean_value(v) for v in value]
    if isinstance(value, dict):
        return {clean_value(k): clean_value(v) for k, v in value.items()}
    return value


# Certificates by the SHA-256 of their DER, whole chains by the SHA-256 of their PEM strings
# (served, validated), and pins by their text. Reports of one incident repeat the same chain
# and pins (every client behind one interceptor): validating them again gives the same answer,
# so remember it. Keys are digests, not the certificates: a sender of many large distinct
# certificates must not fill memory with them. Only successes are kept, and only certificates
# and chains of modest size, so the caches stay small whatever senders send.
_CERT_CACHE: dict[bytes, tuple[str, str, str, str | None]] = {}
_CERT_CACHE_DER = 4 * 1024
_CHAIN_CACHES: tuple[dict[bytes, tuple[CertInfo, ...]], ...] = ({}, {})
_CHAIN_CACHE_TEXT = 16 * 1024
_PIN_CACHE: dict[str, str] = {}
_CACHE_ENTRIES = 1024


class ReportError(ValueError):
    """A report was rejected; ``str(error)`` is the reason returned to the sender."""


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What the dashboard shows about one certificate of a reported chain."""

    subject: str
    issuer: str
    pin: str
    not_after: str | None
    served: bool

    def as_dict(self) -> dict[str, Any]:
        """The JSON form stored with the report."""
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "pin": self.pin,
            "not_after": self.not_after,
            "served": self.served,
        }


@dataclass(frozen=True, slots=True)
class ParsedReport:
    """A validated report, normalised across formats."""

    kind: str
    hostname: str
    port: int | None
    client_time: dt.datetime | None
    noted_hostname: str | None
    include_subdomains: bool | None
    mode: str | None
    reason: str | None
    app_id: str | None
    app_version: str | None
    served_chain: tuple[CertInfo, ...]
    validated_chain: tuple[CertInfo, ...]
    known_pins: tuple[str, ...]
    raw: str = field(repr=False)

    @property
    def observed_pins(self) -> list[str]:
        """Pins of the chain the client saw: the served chain, else the validated one."""
        chain = self.served_chain or self.validated_chain
        return [c.pin for c in chain]

    @property
    def chain(self) -> list[dict[str, Any]]:
        """The chain stored for display: served certificates, else the validated ones."""
        return [c.as_dict() for c in (self.served_chain or self.validated_chain)]

    @property
    def issuer(self) -> str | None:
        """Issuer of the leaf the client was served (a MITM proxy's CA shows up here)."""
        chain = self.served_chain or self.validated_chain
        return chain[0].issuer if chain else None

    def incident_key(self) -> str:
        """Grouping key: host, the observed chain's pins, and the expected pins."""
        material = json.dumps(
            [self.hostname, self.observed_pins, sorted(set(self.known_pins))],
            separators=(",", ":"),
        )
        return hashlib.sha256(material.encode()).hexdigest()


class _DuplicateKey(Exception):  # noqa: N818 - internal signal, never escapes this module
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's dict; a key given twice is refused (as in bundles): one parser takes
    the first value and another the last, so the report would mean two things."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return out


def parse_report(body: bytes) -> ParsedReport:
    """Validate and normalise one report body.

    Raises:
        ReportError: the body is not a valid report; the message says why.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        msg = "the body is not UTF-8 text"
        raise ReportError(msg) from None
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise ReportError(
            f"the report has the key {exc.key!r:.80} twice: parsers disagree on which counts"
        ) from None
    except (json.JSONDecodeError, RecursionError):
        msg = "the body is not valid JSON"
        raise ReportError(msg) from None
    except ValueError as exc:  # e.g. an integer literal too long to convert
        raise ReportError(f"the body is not acceptable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ReportError(f"expected a JSON object, found a JSON {type(data).__name__}")
    if len(text) > RAW_KEEP:
        text = _raw_excerpt(data, text)
    try:
        return _parse(data, text)
    except ReportError:
        raise
    except (ValueError, TypeError, KeyError, OverflowError) as exc:  # Defensive
        raise ReportError(f"the report could not be read: {exc}") from None


def _raw_excerpt(data: dict[str, Any], text: str) -> str:
    """At most :data:`RAW_KEEP` characters of raw JSON for a long body: the keys some format
    defines, re-serialised, and cut with a note if still too long."""
    known = {k: v for k, v in data.items() if k in _KNOWN_KEYS}
    try:
        kept = json.dumps(known, separators=(",", ":")) if len(known) < len(data) else text
    except (ValueError, TypeError, RecursionError):  # Defensive: it was parsed from JSON
        kept = text
    if len(kept) <= RAW_KEEP:
        return kept
    note = f"… [cut: {len(text)} characters received, the first {RAW_KEEP} kept]"
    return kept[: RAW_KEEP - len(note)] + note


def _parse(data: dict[str, Any], raw: str) -> ParsedReport:
    if "tlspin-version" in data or "tlspin-report-format" in data:
        kind = "tlspin"
    elif any(k in data for k in ("app-bundle-id", "trustkit-version", "validation-result")):
        platform = _text(data, "app-platform")
        kind = "trustkit-android" if (platform or "").upper() == "ANDROID" else "trustkit-ios"
    else:
        kind = "hpkp"

    hostname = _hostname(data, "hostname", required=True)
    assert hostname is not None
    port = _port(data)
    noted = _hostname(data, "noted-hostname", required=False)
    include = _bool(data, "include-subdomains")
    served = _chain(data, "served-certificate-chain", served=True)
    validated = _chain(data, "validated-certificate-chain", served=False)
    pins = _pins(data)
    client_time = _time(data, "date-time")

    mode: str | None = None
    reason: str | None = None
    app_id: str | None = None
    app_version: str | None = None
    if kind == "tlspin":
        mode = _text(data, "mode")
        if mode is not None and mode not in ("enforce", "report"):
            raise ReportError(f"mode must be 'enforce' or 'report', found {mode[:40]!r}")
        reason = _text(data, "reason", limit=64)
        app_id = _text(data, "app-id")
        app_version = _text(data, "app-version", limit=128)
        rule = data.get("rule")
        if rule is not None and not (
            isinstance(rule, list) and all(isinstance(r, str) for r in rule)
        ):
            msg = "rule must be a list of host patterns (strings)"
            raise ReportError(msg)
    elif kind.startswith("trustkit"):
        enforce = _bool(data, "enforce-pinning")
        mode = None if enforce is None else ("enforce" if enforce else "report")
        result = data.get("validation-result")
        if result is not None:
            if isinstance(result, bool) or not isinstance(result, int):
                msg = "validation-result must be an integer"
                raise ReportError(msg)
            reason = TRUSTKIT_RESULTS.get(result, f"trustkit-{result}"[:64])
        app_id = _text(data, "app-bundle-id")
        app_version = _text(data, "app-version", limit=128)
    return ParsedReport(
        kind=kind,
        hostname=hostname,
        port=port,
        client_time=client_time,
        noted_hostname=noted,
        include_subdomains=include,
        mode=mode,
        reason=reason,
        app_id=app_id,
        app_version=app_version,
        served_chain=served,
        validated_chain=validated,
        known_pins=pins,
        raw=raw,
    )


def _text(data: dict[str, Any], key: str, *, limit: int = _MAX_TEXT) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ReportError(f"{key} must be a string, found {type(value).__name__}")
    if len(value) > limit:
        raise ReportError(f"{key} is longer than {limit} characters")
    if not is_storable(value):
        raise ReportError(f"{key} contains NUL or an unpaired surrogate")
    return value


def _bool(data: dict[str, Any], key: str) -> bool | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise ReportError(f"{key} must be true or false, found {type(value).__name__}")
    return value


# What a reported host name may be once canonical: a DNS name of LDH labels (as
# tlspin.hosts allows: letters, digits, inner hyphens, underscores; IDNs as A-labels), or an IP
# address literal. Nothing else: no zone ID, no brackets, no spaces or markup.
_HOST_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]{0,251}[a-z0-9_])?")
_HOST_IP = re.compile(r"[0-9a-f:.]{2,45}")
# Refused in the raw value before canonicalisation: a zone ID ("fe80::1%eth0") names an
# interface of the sender's machine, not a host, and its text is free-form (the stdlib keeps
# any character in it); control and format characters, separators and whitespace belong in no
# host name (canonicalisation would strip some of them silently).
_HOST_FORBIDDEN = re.compile(r"[%\s\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b\u200e\u200f"
                             r"\u2028-\u202e\u2060-\u206f\ufeff\ud800-\udfff]")


def _hostname(data: dict[str, Any], key: str, *, required: bool) -> str | None:
    from tlspin.hosts import canonical_host

    value = data.get(key)
    if value is None:
        if required:
            raise ReportError(f"{key} is required")
        return None
    if not isinstance(value, str):
        raise ReportError(f"{key} must be a string, found {type(value).__name__}")
    if not value or len(value) > 253:
        raise ReportError(f"{key} must be a host name of 1 to 253 characters")
    if _HOST_FORBIDDEN.search(value):
        raise ReportError(
            f"{key} is not a valid host name: expected a DNS name or an IP address, without "
            "a zone ID (%), spaces or control characters"
        )
    try:
        host = canonical_host(value)
    except (ValueError, UnicodeError):
        raise ReportError(f"{key} is not a valid host name") from None
    if not _is_host(host):  # Defensive: canonical_host's output, checked once more
        raise ReportError(f"{key} is not a valid host name")
    return host


def _is_host(host: str) -> bool:
    """True if *host* is a canonical DNS name or IP address literal (no zone ID)."""
    if _HOST_NAME.fullmatch(host):
        return True
    if not _HOST_IP.fullmatch(host):
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _port(data: dict[str, Any]) -> int | None:
    value = data.get("port")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        msg = "port must be an integer from 0 to 65535"
        raise ReportError(msg)
    # TrustKit-Android always sends 0: it does not know the port.
    return value or None


def _time(data: dict[str, Any], key: str) -> dt.datetime | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise ReportError(f"{key} must be an RFC 3339 date-time string")
    try:
        moment = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ReportError(f"{key} is not an RFC 3339 date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError:
        raise ReportError(f"{key} is out of range") from None


def _pins(data: dict[str, Any]) -> tuple[str, ...]:
    from tlspin.pins import CertificatePin, Pin

    value = data.get("known-pins")
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > _MAX_PINS:
        raise ReportError(f"known-pins must be a list of at most {_MAX_PINS} strings")
    out: dict[str, None] = {}
    for index, item in enumerate(value):
        if not isinstance(item, str) or len(item) > 128:
            raise ReportError(f"known-pins[{index}] must be a pin string")
        known = _PIN_CACHE.get(item)
        if known is not None:
            out[known] = None
            continue
        text = item.strip()
        try:
            if text.lower().startswith("cert-sha256/"):  # tlspin's certificate pins
                known = str(CertificatePin.parse(text))
            else:
                known = str(Pin.parse(text))
        except ValueError:
            raise ReportError(
                f'known-pins[{index}] is not a SHA-256 pin (expected pin-sha256="<base64>" '
                "or cert-sha256/<64 hex digits>)"
            ) from None
        if len(_PIN_CACHE) >= _CACHE_ENTRIES:
            _PIN_CACHE.clear()
        _PIN_CACHE[item] = known
        out[known] = None
    return tuple(out)


def _chain(data: dict[str, Any], key: str, *, served: bool) -> tuple[CertInfo, ...]:
    value = data.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > _MAX_CHAIN:
        raise ReportError(f"{key} must be a list of at most {_MAX_CHAIN} PEM certificates")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise ReportError(f"{key}[{index}] must be a PEM string")
    size = sum(map(len, value))
    cacheable = size <= _CHAIN_CACHE_TEXT
    digest = b""
    cache = _CHAIN_CACHES[served]
    if cacheable:
        hasher = hashlib.sha256()
        for item in value:  # each PEM, then a separator no PEM holds
            hasher.update(item.encode("utf-8", "surrogatepass"))
            hasher.update(b"\0")
        digest = hasher.digest()
        chain = cache.get(digest)
        if chain is not None:
            return chain
    chain = tuple(_cert_info(item, f"{key}[{index}]", served=served)
                  for index, item in enumerate(value))
    if cacheable:
        if len(cache) >= _CACHE_ENTRIES:
            cache.clear()
        cache[digest] = chain
    return chain


def _cert_info(pem: str, where: str, *, served: bool) -> CertInfo:
    from cryptography import x509

    from tlspin.pins import Pin, spki_sha256

    # Plain string searches: a regular expression over every PEM costs more than the rest.
    start = pem.find(_PEM_BEGIN)
    end = pem.find(_PEM_END, start + 1)
    if start < 0 or end < 0:
        raise ReportError(f"{where} is not a PEM certificate")
    try:
        der = base64.b64decode("".join(pem[start + len(_PEM_BEGIN) : end].split()),
                               validate=True)
    except ValueError:
        raise ReportError(f"{where} is not a parsable X.509 certificate") from None
    # Reports of one incident repeat the same chain (every client behind one interceptor):
    # parse each distinct certificate once.
    small = len(der) <= _CERT_CACHE_DER
    digest = hashlib.sha256(der).digest() if small else b""
    known = _CERT_CACHE.get(digest) if small else None
    if known is None:
        try:
            cert = x509.load_der_x509_certificate(der)
            pin = str(Pin(spki_sha256(der)))
        except (ValueError, TypeError):
            raise ReportError(f"{where} is not a parsable X.509 certificate") from None
        known = (_name(cert, "subject"), _name(cert, "issuer"), pin, _not_after(cert))
        if small:
            if len(_CERT_CACHE) >= 4096:
                _CERT_CACHE.clear()
            _CERT_CACHE[digest] = known
    subject, issuer, pin, not_after = known
    return CertInfo(subject=subject, issuer=issuer, pin=pin, not_after=not_after, served=served)


def _name(cert: Any, attr: str) -> str:
    try:
        text = str(getattr(cert, attr).rfc4514_string())
    except (ValueError, TypeError):
        return "<unparsable name>"
    return clean_text(text[:_MAX_NAME])


def _not_after(cert: Any) -> str | None:
    try:
        moment: dt.datetime = cert.not_valid_after_utc
    except (ValueError, TypeError, OverflowError):
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
