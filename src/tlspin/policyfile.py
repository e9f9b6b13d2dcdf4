"""Reading policy documents: TOML (the source of truth) and its JSON twin.

Schema (TOML)::

    on_expiry = "fail-open"            # optional: or "enforce"

    [[rule]]
    hosts = ["api.example.com", "**.cdn.example.com"]
    pins = [
      "sha256/…",
      { pin = "sha256/…", role = "backup", note = "offline key, safe 3", not_after = 2027-01-01 },
    ]
    include_subdomains = false         # optional
    expires = 2027-06-01               # optional TOML date
    mode = "enforce"                   # optional: or "report"
    deny = ["sha256/…"]                # optional
    report_uri = "https://…"           # optional
    ports = [8443]                     # optional: where the hosts serve TLS (default 443)

The JSON form has the same keys (``{"rule": [{…}]}``) with dates as ``"YYYY-MM-DD"`` strings.
Policy files are treated as untrusted input: every error is a :class:`~tlspin.PolicyError` that
names the rule, the key and (for TOML) the line.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tomllib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from tlspin.exceptions import PinConfigurationError, PolicyError
from tlspin.pins import CertificatePin, Pin, parse_any
from tlspin.policy import PinInfo, PinPolicy, PinRule

if TYPE_CHECKING:
    from pathlib import Path

# json and pathlib are imported where needed: `tlspin run` parses a TOML policy in every
# interpreter it starts, by a path given as a string, and needs neither.

__all__ = ["from_data", "load", "load_bytes", "loads", "to_data"]

MAX_POLICY_BYTES = 16 * 1024 * 1024
_RULE_KEYS = (
    "hosts",
    "pins",
    "include_subdomains",
    "expires",
    "mode",
    "deny",
    "report_uri",
    "ports",
)
_TOP_KEYS = ("on_expiry", "rule")
_PIN_KEYS = ("pin", "role", "note", "not_after")
# Which key a PinRule error is about, by a phrase of its message (first match wins).
_ERROR_KEYS = (
    ("rule mode", "mode"),
    ("report_uri", "report_uri"),
    ("include_subdomains", "include_subdomains"),
    ("pin_info", "pins"),
    ("no pins", "pins"),
    ("a port must be", "ports"),
    ("ports must be", "ports"),
    ("host", "hosts"),
    ("pattern", "hosts"),
)


class _Where:
    """Finds the line of a rule's key in TOML text, for error messages.

    The rule sections are located once, so naming a line costs a scan of one section only
    (``from_data`` asks for locations of every rule, error or not).
    """

    _HEADER = re.compile(r"^\s*\[\[\s*rule\s*\]\]")
    _TABLE = re.compile(r"^\s*\[")

    def __init__(self, text: str | None) -> None:
        self.lines = text.splitlines() if text is not None else None
        self.sections: list[tuple[int, int]] = []
        if self.lines is not None:
            tables = [i for i, ln in enumerate(self.lines) if self._TABLE.match(ln)]
            for n, i in enumerate(tables):
                if self._HEADER.match(self.lines[i]):
                    end = tables[n + 1] if n + 1 < len(tables) else len(self.lines)
                    self.sections.append((i, end))

    def __call__(self, index: int | None, key: str | None) -> str:
        where = "" if index is None else f"rule #{index + 1}"
        if key:
            where += f"{', ' if where else ''}key '{key}'"
        line = self.line(index, key)
        if line is not None:
            where = f"line {line}, {where}" if where else f"line {line}"
        return where

    def line(self, index: int | None, key: str | None) -> int | None:
        """The line of rule #*index*'s *key* (of its header for no key); None without text."""
        if self.lines is None:
            return None
        start, end = 0, len(self.lines)
        if index is not None:
            if index >= len(self.sections):
                return None
            start, end = self.sections[index]
            if key is None:
                return start + 1
        elif self.sections:
            end = self.sections[0][0]  # top-level keys come before the first [[rule]]
        if key is None:
            return None
        pattern = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=")
        for i in range(start, end):
            if pattern.match(self.lines[i]):
                return i + 1
        return start + 1 if index is not None else None


def _date(value: Any, where: str, key: str) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise PolicyError(f"{where}: '{key}' must be a date (YYYY-MM-DD), found {value!r}")


def _pins(
    raw: Any, where: str, key: str
) -> tuple[list[Pin | CertificatePin], dict[Pin | CertificatePin, PinInfo]]:
    if not isinstance(raw, list):
        raise PolicyError(f"{where}: '{key}' must be a list of pins, found {type(raw).__name__}")
    pins: list[Pin | CertificatePin] = []
    info: dict[Pin | CertificatePin, PinInfo] = {}
    for item in raw:
        if isinstance(item, Mapping):
            unknown = sorted(set(item) - set(_PIN_KEYS))
            if unknown:
                raise PolicyError(
                    f"{where}: unknown key(s) {unknown} in a pin table; expected {list(_PIN_KEYS)}"
                )
            if "pin" not in item:
                raise PolicyError(f"{where}: a pin table needs a 'pin' key, found {sorted(item)}")
            pin = _one_pin(item["pin"], where)
            role, note = item.get("role"), item.get("note")
            if role is not None and not isinstance(role, str):
                raise PolicyError(f"{where}: pin role must be a string, found {role!r}")
            if note is not None and not isinstance(note, str):
                raise PolicyError(f"{where}: pin note must be a string, found {note!r}")
            try:
                info[pin] = PinInfo(
                    role=role,  # type: ignore[arg-type]
                    note=note,
                    not_after=_date(item.get("not_after"), where, "not_after"),
                )
            except PinConfigurationError as exc:
                raise PolicyError(f"{where}: {exc}") from None
        else:
            pin = _one_pin(item, where)
        pins.append(pin)
    return pins, info


def _one_pin(value: Any, where: str) -> Pin | CertificatePin:
    if not isinstance(value, str):
        raise PolicyError(f"{where}: a pin must be a string, found {type(value).__name__}")
    try:
        return parse_any(value)
    except PinConfigurationError as exc:
        raise PolicyError(f"{where}: {exc}") from None


def _refuse_unknown(
    data: Mapping[Any, Any], keys: tuple[str, ...], where: _Where, *, index: int | None, what: str
) -> None:
    """Refuse keys of *data* (rule #*index*, or the top level) other than *keys*."""
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise PolicyError(
            f"{where(index, unknown[0])}: unknown {what} {unknown}; expected {list(keys)}"
        )


def from_data(
    data: Any, *, text: str | None = None, public_suffix_guard: bool = True
) -> PinPolicy:
    """Build a policy from parsed TOML/JSON data (*text* lets errors name lines).

    *public_suffix_guard* (default on) refuses wildcards over public suffixes; only the bundle
    verifier turns it off (:meth:`tlspin.hosts.HostPattern.parse`).

    Raises:
        PolicyError: the data does not follow the schema.
    """
    where = _Where(text)
    if not isinstance(data, Mapping):
        raise PolicyError(f"a policy must be a table/object, found {type(data).__name__}")
    _refuse_unknown(data, _TOP_KEYS, where, index=None, what="top-level key(s)")
    on_expiry = data.get("on_expiry", "fail-open")
    if on_expiry not in ("fail-open", "enforce"):
        raise PolicyError(
            f"{where(None, 'on_expiry')}: on_expiry must be 'fail-open' or 'enforce', "
            f"found {on_expiry!r}"
        )
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list):
        raise PolicyError(f"'rule' must be an array of tables, found {type(raw_rules).__name__}")
    rules = [
        _rule(raw, index, where, public_suffix_guard=public_suffix_guard)
        for index, raw in enumerate(raw_rules)
    ]
    return PinPolicy(rules, on_expiry=on_expiry)


def _rule(raw: Any, index: int, where: _Where, *, public_suffix_guard: bool = True) -> PinRule:
    """Build rule #*index* from its data; errors name the line and key through *where*."""
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where(index, None)}: a rule must be a table")
    _refuse_unknown(raw, _RULE_KEYS, where, index=index, what="key(s)")
    for key in ("hosts", "pins"):
        if key not in raw:
            raise PolicyError(f"{where(index, None)}: the rule has no '{key}'")
    hosts = raw["hosts"]
    if isinstance(hosts, str):
        hosts = [hosts]
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise PolicyError(f"{where(index, 'hosts')}: 'hosts' must be a list of strings")
    pins, info = _pins(raw["pins"], where(index, "pins"), "pins")
    deny, deny_info = _pins(raw.get("deny", []), where(index, "deny"), "deny")
    info.update(deny_info)
    for key, kind in (("include_subdomains", bool), ("mode", str), ("report_uri", str)):
        if key in raw and not isinstance(raw[key], kind):
            raise PolicyError(
                f"{where(index, key)}: '{key}' must be a {kind.__name__}, found {raw[key]!r}"
            )
    ports = raw.get("ports", [])
    if not isinstance(ports, list | int) or isinstance(ports, bool):
        raise PolicyError(
            f"{where(index, 'ports')}: 'ports' must be a list of port numbers, found {ports!r}"
        )
    # Read the date first: its error already names the line and key.
    expires = _date(raw.get("expires"), where(index, "expires"), "expires")
    try:
        return PinRule(
            hosts,
            pins,
            include_subdomains=raw.get("include_subdomains", False),
            expires=expires,
            mode=raw.get("mode", "enforce"),
            deny=deny,
            report_uri=raw.get("report_uri"),
            pin_info=info.items(),
            ports=ports,
            public_suffix_guard=public_suffix_guard,
        )
    except PinConfigurationError as exc:
        message = str(exc)
        bad_key = next((k for marker, k in _ERROR_KEYS if marker in message), None)
        raise PolicyError(f"{where(index, bad_key)}: {exc}") from None


def loads(text: str, *, format: Literal["toml", "json"] = "toml") -> PinPolicy:
    """Parse a policy document.

    Raises:
        PolicyError: it is not valid TOML/JSON or does not follow the schema.
    """
    if format == "json":
        import json

        try:
            data = json.loads(text, object_pairs_hook=_no_duplicates)
        except json.JSONDecodeError as exc:
            raise PolicyError(f"line {exc.lineno}: invalid JSON: {exc.msg}") from None
        except (ValueError, RecursionError) as exc:
            if isinstance(exc, PolicyError):
                raise
            raise PolicyError(f"invalid JSON: {_parser_failure(exc)}") from None
        return from_data(data)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"invalid TOML: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise PolicyError(f"invalid TOML: {_parser_failure(exc)}") from None
    return from_data(data, text=text)


def _parser_failure(exc: ValueError | RecursionError) -> str:
    # Both parsers recurse per nesting level and convert integers with int(); hostile input
    # hits Python's recursion limit or its limit on integer digits, not a decode error.
    if isinstance(exc, RecursionError):
        return "arrays or tables are nested too deeply"
    # The digit-limit message ends by suggesting sys.set_int_max_str_digits(): not for a policy.
    return f"a value cannot be read ({str(exc).split(';')[0]})"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise PolicyError(f"duplicate JSON key {key!r}: two parsers could read it differently")
        out[key] = value
    return out


def _path(path: str | Path) -> tuple[str, bool]:
    """``str(Path(path))``, and whether ``Path(path).suffix`` is ``.json`` in any case.

    Without importing pathlib when the answer is certain: a POSIX ``str`` that Path leaves as
    it is (no empty or ``.`` segment, no trailing slash), whose name either does not end in
    ``.json`` or has more than dots before it. Anything else asks pathlib itself.
    """
    if os.name == "posix" and type(path) is str and path and "//" not in path:
        segments = path.split("/")
        name = segments[-1]
        if "." not in segments and name:  # no "." segment, no trailing slash
            if not name.lower().endswith(".json"):
                return path, False
            if name[:-5].strip("."):
                return path, True
    from pathlib import Path

    p = Path(path)
    return str(p), p.suffix.lower() == ".json"


def load(path: str | Path) -> PinPolicy:
    """Read a policy file; ``*.json`` as JSON, anything else as TOML."""
    shown, _ = _path(path)
    try:
        if os.stat(shown).st_size > MAX_POLICY_BYTES:
            raise PolicyError(f"{shown}: policy file is larger than {MAX_POLICY_BYTES} bytes")
        with open(shown, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {shown}: {exc.strerror or exc}") from None
    return load_bytes(raw, shown)


def load_bytes(raw: bytes, path: str | Path) -> PinPolicy:
    """Parse *raw*, the bytes already read from policy file *path*, exactly as :func:`load`.

    For callers that must parse the very bytes they checked (``tlspin run`` compares a digest).
    """
    shown, is_json = _path(path)
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(f"{shown}: policy file is larger than {MAX_POLICY_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError(f"{shown}: policy file is not UTF-8 text") from None
    fmt: Literal["toml", "json"] = "json" if is_json else "toml"
    try:
        return loads(text, format=fmt)
    except PolicyError as exc:
        raise PolicyError(f"{shown}: {exc}") from None


def to_data(policy: PinPolicy, *, dates_as_strings: bool = False) -> dict[str, Any]:
    """Turn a policy into plain data following the schema (the inverse of :func:`from_data`)."""

    def date(value: dt.date) -> Any:
        return value.isoformat() if dates_as_strings else value

    def pin_entry(rule: PinRule, pin: Pin | CertificatePin) -> Any:
        meta = rule.info(pin)
        if meta is None:
            return str(pin)
        entry: dict[str, Any] = {"pin": str(pin)}
        if meta.role is not None:
            entry["role"] = meta.role
        if meta.note is not None:
            entry["note"] = meta.note
        if meta.not_after is not None:
            entry["not_after"] = date(meta.not_after)
        return entry

    rules = []
    for rule in policy.rules:
        item: dict[str, Any] = {
            "hosts": [h.text for h in rule.hosts],
            "pins": [pin_entry(rule, p) for p in rule.pins],
        }
        if rule.include_subdomains:
            item["include_subdomains"] = True
        if rule.expires is not None:
            item["expires"] = date(rule.expires)
        if rule.mode != "enforce":
            item["mode"] = rule.mode
        if rule.deny:
            item["deny"] = [pin_entry(rule, p) for p in rule.deny]
        if rule.report_uri is not None:
            item["report_uri"] = rule.report_uri
        if rule.ports:
            item["ports"] = list(rule.ports)
        rules.append(item)
    out: dict[str, Any] = {}
    if policy.on_expiry != "fail-open":
        out["on_expiry"] = policy.on_expiry
    out["rule"] = rules
    return out
