"""Read a crt.sh-style JSON export (``--from-file``).

crt.sh's JSON output lists, per certificate, ``id``, ``issuer_name``, ``common_name``,
``name_value`` (names separated by newlines), ``entry_timestamp``, ``not_before``,
``not_after`` and ``serial_number``, but no certificate body and no key. Names alone cannot show
whether a key is pinned, so each record may be enriched with any of:

* ``pem`` or ``cert``: the certificate as PEM (further PEM blocks are its issuing chain) or as
  base64 DER; then everything is read from the certificate itself;
* ``pubkey_sha256``: the SPKI SHA-256 in hex, as Cert Spotter reports it (``sha256/…`` also
  accepted);
* ``issuer_pubkey_sha256`` or Cert Spotter's ``issuer: {"pubkey_sha256": …}``: the issuer's
  SPKI SHA-256, so that a certificate from a pinned CA is recognised;
* Cert Spotter's ``dns_names`` list instead of ``name_value``.

A record under a pinned rule with none of these is reported as ``unchecked``, never as clean.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tlspin.ct.entries import CertRecord, CTEntryError, record_from_certificate
from tlspin.exceptions import InvalidPinError
from tlspin.pins import Pin

__all__ = ["read_export", "record_from_export"]

_MAX_EXPORT_BYTES = 256 * 1024 * 1024
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\s*(.*?)\s*-----END CERTIFICATE-----", re.DOTALL)
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def _digest(value: Any, what: str) -> bytes | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise CTEntryError(f"{what} must be a string, found {type(value).__name__}")
    text = value.strip().replace(":", "")
    if _HEX64.match(text):
        return bytes.fromhex(text)
    try:
        return Pin.parse(value).digest
    except InvalidPinError:
        raise CTEntryError(
            f"{what} must be 64 hex digits or a 'sha256/…' pin, found {value!r:.80}"
        ) from None


def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _certificates(value: Any) -> list[bytes]:
    if not isinstance(value, str):
        raise CTEntryError(f"'pem'/'cert' must be a string, found {type(value).__name__}")
    raw = value.encode("ascii", "replace")
    blocks = _PEM.findall(raw)
    try:
        if blocks:
            return [base64.b64decode(b"".join(b.split()), validate=True) for b in blocks]
        return [base64.b64decode("".join(value.split()), validate=True)]
    except (binascii.Error, ValueError):
        msg = "'pem'/'cert' is neither PEM nor base64 DER"
        raise CTEntryError(msg) from None


def record_from_export(item: Mapping[str, Any]) -> CertRecord:
    """Turn one export record into a :class:`CertRecord`.

    Raises:
        CTEntryError: the record is malformed.
    """
    if not isinstance(item, Mapping):
        raise CTEntryError(f"expected an object per certificate, found {type(item).__name__}")
    index = item.get("id")
    if isinstance(index, bool) or not isinstance(index, int):
        index = None
    issuer = item.get("issuer")
    issuer_key = _digest(item.get("issuer_pubkey_sha256"), "issuer_pubkey_sha256")
    if issuer_key is None and isinstance(issuer, Mapping):
        issuer_key = _digest(issuer.get("pubkey_sha256"), "issuer.pubkey_sha256")
    body = item.get("pem", item.get("cert"))
    if body:
        ders = _certificates(body)
        return record_from_certificate(
            ders[0], chain=ders[1:], index=index,
            timestamp=_time(item.get("entry_timestamp")),
            extra_keys=(issuer_key,) if issuer_key is not None else (),
        )
    names: list[str] = []
    raw_names = item.get("dns_names")
    if isinstance(raw_names, list):
        names += [n for n in raw_names if isinstance(n, str)]
    for key in ("name_value", "common_name"):
        value = item.get(key)
        if isinstance(value, str):
            names += [n.strip() for n in value.splitlines() if n.strip()]
    issuer_name = item.get("issuer_name")
    if not isinstance(issuer_name, str):
        issuer_name = str(issuer.get("name", "")) if isinstance(issuer, Mapping) else ""
    serial = item.get("serial_number", item.get("serial"))
    return CertRecord(
        index=index,
        entry_type="unknown",
        names=tuple(dict.fromkeys(n.lower() for n in names)),
        spki_sha256=_digest(item.get("pubkey_sha256"), "pubkey_sha256"),
        chain_keys=(issuer_key,) if issuer_key is not None else (),
        subject=str(item.get("common_name") or ""),
        issuer=issuer_name,
        serial=str(serial) if serial is not None else None,
        not_before=_time(item.get("not_before")),
        not_after=_time(item.get("not_after")),
        timestamp=_time(item.get("entry_timestamp")),
    )


def read_export(path: str | Path) -> tuple[list[CertRecord], list[tuple[int | None, str]]]:
    """Read an export file.

    Returns:
        ``(records, malformed)``: malformed holds ``(position, error)`` per rejected record.

    Raises:
        ValueError: the file cannot be read or is not a JSON list.
    """
    p = Path(path)
    try:
        if p.stat().st_size > _MAX_EXPORT_BYTES:
            raise ValueError(f"{p}: the export is larger than {_MAX_EXPORT_BYTES} bytes")
        data = json.loads(p.read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read export {p}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: the export is not JSON ({exc})") from None
    if isinstance(data, Mapping) and isinstance(data.get("certificates"), list):
        data = data["certificates"]
    if not isinstance(data, list):
        found = type(data).__name__
        raise ValueError(f"{p}: expected a JSON list of certificates, found {found}")  # noqa: TRY004
    records: list[CertRecord] = []
    malformed: list[tuple[int | None, str]] = []
    for position, item in enumerate(data):
        try:
            records.append(record_from_export(item))
        except CTEntryError as exc:
            malformed.append((position, str(exc)))
    return records, malformed
