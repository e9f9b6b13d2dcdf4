"""The bundle document: strict JSON reading, RFC 8785 canonical form, and the schema.

A served document (and a stored one) is::

    {
      "signed": {"format": "tlspin-bundle/1", "version": 7, "issued_at": "…Z",
                 "expires_at": "…Z", "policy": {…}, "signing_keys": {…}},   # signing_keys optional
      "signatures": [{"keyid": "<hex sha256 of raw key>", "sig": "<base64 Ed25519 signature>"}],
      "chain": [<earlier key-rotation bundles, oldest first, same shape without "chain">]
    }

Signatures cover :func:`canonical_json` of ``signed``: RFC 8785 (JCS) restricted to what a
bundle holds (objects, arrays, strings, integers, booleans, null). Floats are refused, so the
ECMAScript number formatting of JCS reduces to plain decimal integers. See docs/bundle-format.md.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tlspin.bundles.errors import BundleError
from tlspin.bundles.keys import MAX_KEYS, KeySet, PublicKey, b64decode_strict

if TYPE_CHECKING:
    from tlspin.policy import PinPolicy

__all__ = [
    "DEFAULT_MAX_BYTES",
    "FORMAT",
    "MAX_CHAIN",
    "MAX_SIGNATURES",
    "Bundle",
    "Document",
    "Signature",
    "canonical_json",
    "format_time",
    "parse_document",
    "parse_json",
    "parse_time",
]

FORMAT = "tlspin-bundle/1"
#: Served documents larger than this are refused (the updater stops reading past it).
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
MAX_SIGNATURES = 32
MAX_CHAIN = 32
#: Integers must be exactly representable as IEEE 754 doubles, as RFC 8785 (I-JSON) requires.
MAX_INT = 2**53 - 1
#: Arrays and objects nest at most this deep (a bundle needs 9 levels). A fixed limit, checked
#: before parsing, gives every verifier the same verdict; a parser's own recursion limit would
#: differ between implementations, and even between Python versions.
MAX_DEPTH = 64

_SIGNED_REQUIRED = ("format", "version", "issued_at", "expires_at", "policy")
_SIGNED_KEYS = (*_SIGNED_REQUIRED, "signing_keys")
_ENVELOPE_KEYS = ("signed", "signatures")
# ASCII digits and fullmatch(): \d also matches other scripts' digits (int() reads them), and $
# matches before a final newline; either let this verifier accept what others refuse.
_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z")
_KEYID = re.compile(r"[0-9a-f]{64}")
_ESCAPE = re.compile(r'[\x00-\x1f"\\]')
# A JSON string (an unterminated one runs to the end): the depth scan skips them.
_STRING_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_SHORT = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r", '"': '\\"', "\\": "\\\\"}


# -- strict JSON ----------------------------------------------------------------------------
def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise BundleError(
                f"duplicate JSON key {key!r:.80}: two parsers could read it differently",
                reason="duplicate-key",
            )
        out[key] = value
    return out


def _int(text: str) -> int:
    if len(text.lstrip("-")) > 16:
        raise BundleError(f"integer {text:.40} is out of range (|n| ≤ 2**53-1)", reason="number")
    value = int(text)
    if abs(value) > MAX_INT:
        raise BundleError(f"integer {text} is out of range (|n| ≤ 2**53-1)", reason="number")
    return value


def _float(text: str) -> Any:
    raise BundleError(
        f"expected only integers in a bundle, found the number {text:.40}", reason="number"
    )


def _constant(text: str) -> Any:
    raise BundleError(f"{text} is not JSON", reason="json")


def parse_json(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Parse untrusted JSON strictly: UTF-8 only, no duplicate keys, integers only, size-capped.

    Raises:
        BundleError: with reason ``size``, ``encoding``, ``json``, ``duplicate-key`` or ``number``.
    """
    if len(data) > max_bytes:
        raise BundleError(
            f"the document is {len(data)} bytes; at most {max_bytes} are accepted", reason="size"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError(
            f"the document is not UTF-8 (byte {exc.start})", reason="encoding"
        ) from None
    if text.startswith("\ufeff"):
        msg = "the document starts with a byte-order mark; expected plain UTF-8"
        raise BundleError(msg, reason="encoding")
    _check_depth(text)
    try:
        value = json.loads(
            text,
            object_pairs_hook=_pairs,
            parse_int=_int,
            parse_float=_float,
            parse_constant=_constant,
        )
        # An escaped lone surrogate ("\ud800") decodes to a str that is not Unicode text: it
        # has no UTF-8 form, so re-encoding finds it anywhere in the document.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        msg = "a string holds a lone surrogate escape (not valid Unicode)"
        raise BundleError(msg, reason="encoding") from None
    except BundleError:
        raise
    except json.JSONDecodeError as exc:
        raise BundleError(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", reason="json"
        ) from None
    except RecursionError:
        msg = "the JSON document is nested too deeply"
        raise BundleError(msg, reason="json") from None
    return value


def _check_depth(text: str) -> None:
    """Refuse more than MAX_DEPTH open arrays/objects, counted outside strings (§3.2)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    brackets = _NOT_BRACKET.sub("", _STRING_TOKEN.sub("", text))
    depth = 0
    for char in brackets:
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise BundleError(
                    f"the JSON document nests arrays and objects more than {MAX_DEPTH} deep",
                    reason="json",
                )
        elif depth:
            depth -= 1


# -- RFC 8785 canonical form ----------------------------------------------------------------
def _utf16_key(item: tuple[str, Any]) -> bytes:
    # RFC 8785 §3.2.3: property names sort by their UTF-16 code units; big-endian UTF-16 bytes
    # compare the same way.
    return item[0].encode("utf-16-be")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _SHORT.get(char) or f"\\u{ord(char):04x}"


def _emit(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if abs(value) > MAX_INT:
            raise BundleError(f"integer {value} is out of range (|n| ≤ 2**53-1)", reason="number")
        out.append(str(int(value)))
    elif isinstance(value, str):
        out.append('"' + _ESCAPE.sub(_escape, value) + '"')
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _emit(item, out)
        out.append("]")
    elif isinstance(value, Mapping):
        out.append("{")
        for key in value:
            if not isinstance(key, str):
                raise BundleError(
                    f"object keys must be strings, found {key!r:.40}", reason="schema"
                )
        for index, (key, item) in enumerate(sorted(value.items(), key=_utf16_key)):
            if index:
                out.append(",")
            out.append('"' + _ESCAPE.sub(_escape, key) + '":')
            _emit(item, out)
        out.append("}")
    elif isinstance(value, float):
        raise BundleError(f"expected only integers in a bundle, found {value!r}", reason="number")
    else:
        raise BundleError(f"cannot canonicalise a {type(value).__name__}", reason="schema")


def _plain(value: Any) -> bool:
    """True when *value* holds only exact JSON types, safe integers and ASCII member names.

    For such values the C-accelerated ``json.dumps(sort_keys=True)`` yields exactly the RFC 8785
    form: it escapes the same characters the same way (short forms, lower-case ``\\u00xx``), and
    for ASCII names code-point order equals UTF-16 order.
    """
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(-MAX_INT <= value <= MAX_INT)
    if kind is list or kind is tuple:
        return all(_plain(item) for item in value)
    if kind is dict:
        return all(
            type(key) is str and key.isascii() and _plain(item) for key, item in value.items()
        )
    return False


def canonical_json(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of *value* (floats refused).

    Raises:
        BundleError: a float, an out-of-range integer, a non-JSON type, or a string with a lone
            surrogate (not valid Unicode, so it has no UTF-8 form).
    """
    try:
        if _plain(value):
            text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
            return text.encode("utf-8")
        return canonical_json_reference(value)
    except UnicodeEncodeError:
        msg = "a string holds a lone surrogate (not valid Unicode)"
        raise BundleError(msg, reason="encoding") from None
    except RecursionError:
        msg = "the value is nested too deeply"
        raise BundleError(msg, reason="json") from None


def canonical_json_reference(value: Any) -> bytes:
    """The straightforward RFC 8785 emitter (any member names); :func:`canonical_json` is faster.

    Raises:
        BundleError: as :func:`canonical_json`; ``UnicodeEncodeError`` and ``RecursionError``
            propagate.
    """
    out: list[str] = []
    _emit(value, out)
    return "".join(out).encode("utf-8")


# -- times ----------------------------------------------------------------------------------
def format_time(when: dt.datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` in UTC (whole seconds; a naive datetime counts as UTC)."""
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: Any, what: str) -> dt.datetime:
    """Read ``YYYY-MM-DDTHH:MM:SSZ`` exactly (UTC, whole seconds), nothing looser.

    Raises:
        BundleError: any other form, or an impossible date.
    """
    match = _TIME.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise BundleError(
            f"{what} must be a UTC time like 2030-01-31T12:00:00Z, found {text!r:.60}",
            reason="schema",
        )
    try:
        year, month, day, hour, minute, second = (int(g) for g in match.groups())
        return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)
    except ValueError as exc:
        raise BundleError(f"{what} is not a real time: {text} ({exc})", reason="schema") from None


# -- schema ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Signature:
    """One detached signature: the signer's key id and the 64 signature bytes."""

    keyid: str
    sig: bytes


@dataclass(frozen=True, slots=True, eq=False)
class Bundle:
    """One signed bundle, parsed but not yet verified (see :mod:`tlspin.bundles.verify`).

    Attributes:
        version: the bundle's version; accepted versions only ever grow.
        issued_at: when it was signed (UTC).
        expires_at: when clients stop using it (UTC).
        policy_data: the rules, in the JSON form of the policy-file schema.
        signing_keys: the key set this bundle hands over to, if it rotates keys.
        signatures: the detached signatures as found.
        signed: the signed object as parsed.
        canonical: RFC 8785 bytes of ``signed``, the bytes every signature covers.
    """

    version: int
    issued_at: dt.datetime
    expires_at: dt.datetime
    policy_data: Mapping[str, Any]
    signing_keys: KeySet | None
    signatures: tuple[Signature, ...]
    signed: Mapping[str, Any]
    canonical: bytes

    def load_policy(self) -> PinPolicy:
        """Build the :class:`tlspin.PinPolicy` of this bundle.

        Raises:
            BundleError: ``reason="policy"`` if the rules do not follow the policy schema.
        """
        from tlspin import policyfile
        from tlspin.bundles.profile import check_canonical_policy
        from tlspin.exceptions import PinConfigurationError

        try:
            # No public-suffix guard: the verdict must not depend on the Public Suffix List
            # version each platform ships (§9); `tlspin bundle sign` applies the guard.
            policy = policyfile.from_data(self.policy_data, public_suffix_guard=False)
        except PinConfigurationError as exc:
            raise BundleError(f"the bundle's policy is invalid: {exc}", reason="policy") from None
        check_canonical_policy(self.policy_data)
        return policy

    def envelope(self) -> dict[str, Any]:
        """The ``{"signed": …, "signatures": […]}`` object of this bundle."""
        return {
            "signed": self.signed,
            "signatures": [{"keyid": s.keyid, "sig": _b64(s.sig)} for s in self.signatures],
        }


def _b64(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True, slots=True, eq=False)
class Document:
    """A bundle as served or stored: the bundle and the key-rotation bundles leading to it."""

    bundle: Bundle
    chain: tuple[Bundle, ...] = ()

    def to_data(self) -> dict[str, Any]:
        """Plain JSON data of the document (``chain`` only when not empty)."""
        data = self.bundle.envelope()
        if self.chain:
            data["chain"] = [b.envelope() for b in self.chain]
        return data

    def dumps(self) -> bytes:
        """Readable UTF-8 JSON (signatures do not depend on layout; they cover the JCS form).

        Control and format characters (in notes: C1, bidi overrides, U+2028) are written as
        ``\\u`` escapes, which parse back to the same text: ``tlspin bundle sign`` may print
        the document to a terminal.
        """
        from tlspin._shared.escapes import json_inert

        text = json_inert(json.dumps(self.to_data(), indent=2, ensure_ascii=False, sort_keys=True))
        return (text + "\n").encode("utf-8")


def _object(
    value: Any, what: str, allowed: tuple[str, ...], required: tuple[str, ...]
) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise BundleError(f"{what} must be a JSON object, found {_kind(value)}", reason="schema")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise BundleError(
            f"{what} has unknown field(s) {unknown!r:.120}; expected {list(allowed)}",
            reason="schema",
        )
    missing = [k for k in required if k not in value]
    if missing:
        raise BundleError(f"{what} lacks the field(s) {missing}", reason="schema")
    return value


def _kind(value: Any) -> str:
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
    }
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _integer(value: Any, what: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BundleError(f"{what} must be an integer, found {_kind(value)}", reason="schema")
    if value < minimum:
        raise BundleError(f"{what} must be at least {minimum}, found {value}", reason="schema")
    return value


def _key_set(value: Any, what: str) -> KeySet:
    data = _object(value, what, ("keys", "threshold"), ("keys", "threshold"))
    keys = data["keys"]
    if not isinstance(keys, list) or not keys or len(keys) > MAX_KEYS:
        raise BundleError(
            f"{what}.keys must be an array of 1 to {MAX_KEYS} keys, found {_kind(keys)}"
            + (f" of {len(keys)}" if isinstance(keys, list) else ""),
            reason="schema",
        )
    parsed = []
    for i, k in enumerate(keys):
        raw = b64decode_strict(k, f"{what}.keys[{i}]", length=32)
        try:
            parsed.append(PublicKey(raw))
        except BundleError as exc:
            # A served document is malformed, not a configuration error: schema, as in Java.
            raise BundleError(f"{what}.keys[{i}]: {exc}", reason="schema") from None
    threshold = _integer(data["threshold"], f"{what}.threshold", minimum=1)
    try:
        return KeySet(parsed, threshold)
    except BundleError as exc:
        raise BundleError(f"{what}: {exc}", reason="schema") from None


def parse_envelope(value: Any, what: str = "the bundle") -> Bundle:
    """Check one ``{"signed", "signatures"}`` object against the schema (no signature check).

    Raises:
        BundleError: the object does not follow the format.
    """
    envelope = _object(value, what, _ENVELOPE_KEYS, _ENVELOPE_KEYS)
    signed = envelope["signed"]
    if isinstance(signed, Mapping) and "format" in signed and signed["format"] != FORMAT:
        raise BundleError(
            f"{what} has format {signed['format']!r:.60}; this verifier implements {FORMAT!r}",
            reason="format",
        )
    signed = _object(signed, f"{what}: signed", _SIGNED_KEYS, _SIGNED_REQUIRED)
    version = _integer(signed["version"], f"{what}: version", minimum=1)
    issued = parse_time(signed["issued_at"], f"{what}: issued_at")
    expires = parse_time(signed["expires_at"], f"{what}: expires_at")
    if expires <= issued:
        raise BundleError(
            f"{what}: expires_at ({signed['expires_at']}) must be after issued_at "
            f"({signed['issued_at']})",
            reason="schema",
        )
    policy = signed["policy"]
    if not isinstance(policy, Mapping):
        raise BundleError(
            f"{what}: policy must be an object, found {_kind(policy)}", reason="policy"
        )
    keys = None
    if "signing_keys" in signed:
        keys = _key_set(signed["signing_keys"], f"{what}: signing_keys")
    raw_sigs = envelope["signatures"]
    if not isinstance(raw_sigs, list) or len(raw_sigs) > MAX_SIGNATURES:
        raise BundleError(
            f"{what}: signatures must be an array of at most {MAX_SIGNATURES}, "
            f"found {_kind(raw_sigs)}",
            reason="schema",
        )
    sigs = []
    for index, item in enumerate(raw_sigs):
        where = f"{what}: signatures[{index}]"
        entry = _object(item, where, ("keyid", "sig"), ("keyid", "sig"))
        keyid = entry["keyid"]
        if not isinstance(keyid, str) or not _KEYID.fullmatch(keyid):
            raise BundleError(
                f"{where}.keyid must be 64 lower-case hex digits, found {keyid!r:.80}",
                reason="schema",
            )
        sigs.append(Signature(keyid, b64decode_strict(entry["sig"], f"{where}.sig", length=64)))
    return Bundle(
        version=version,
        issued_at=issued,
        expires_at=expires,
        policy_data=policy,
        signing_keys=keys,
        signatures=tuple(sigs),
        signed=signed,
        canonical=canonical_json(signed),
    )


def parse_document(
    data: bytes | Mapping[str, Any], *, max_bytes: int = DEFAULT_MAX_BYTES
) -> Document:
    """Parse a served or stored bundle document (schema only; verification is separate).

    Raises:
        BundleError: the document is too large, not strict JSON, or does not follow the format.
    """
    value = parse_json(data, max_bytes=max_bytes) if isinstance(data, bytes | bytearray) else data
    document = _object(value, "the document", (*_ENVELOPE_KEYS, "chain"), _ENVELOPE_KEYS)
    chain_data = document.get("chain", [])
    if not isinstance(chain_data, list) or len(chain_data) > MAX_CHAIN:
        raise BundleError(
            f"chain must be an array of at most {MAX_CHAIN} bundles, found {_kind(chain_data)}",
            reason="chain",
        )
    chain = tuple(parse_envelope(item, f"chain[{i}]") for i, item in enumerate(chain_data))
    bundle = parse_envelope({k: document[k] for k in _ENVELOPE_KEYS})
    previous = 0
    for index, entry in enumerate(chain):
        if entry.signing_keys is None:
            raise BundleError(
                f"chain[{index}] introduces no signing_keys; only key rotations belong "
                "in the chain",
                reason="chain",
            )
        if entry.version <= previous:
            raise BundleError(
                f"chain versions must increase, found {entry.version} after {previous}",
                reason="chain",
            )
        previous = entry.version
    if chain and bundle.version <= previous:
        raise BundleError(
            f"the bundle (version {bundle.version}) must be newer than its chain "
            f"(up to {previous})",
            reason="chain",
        )
    return Document(bundle, chain)
