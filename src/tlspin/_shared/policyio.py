"""Writing policy documents: the inverse of :mod:`tlspin.policyfile`.

:func:`dumps` turns a :class:`~tlspin.PinPolicy` into TOML (the source of truth) or its JSON twin,
so that ``policyfile.loads(dumps(p)) == p`` for every policy. The TOML writer is small and local
because the schema is small (strings, booleans, dates, arrays and inline tables); it keeps the core
free of a TOML-writing dependency. :func:`dump` writes a file atomically: readers see the old file
or the new one, never a partial one.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from tlspin._shared.escapes import is_unsafe, json_inert, unsafe_sub
from tlspin.exceptions import PolicyError
from tlspin.policy import PinPolicy

__all__ = ["atomic_write", "dump", "dumps", "toml_string"]

Format = Literal["toml", "json"]

# TOML basic strings must escape these. Other control and format characters (C1, bidi
# overrides, U+2028…) are written as \u escapes too (tlspin._shared.escapes): TOML reads them
# back as the same characters, and a terminal showing the file sees only ASCII for them.
# Everything else (including non-ASCII text) is written as is.
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def toml_string(value: str) -> str:
    """Return *value* as a TOML basic string literal.

    Raises:
        PolicyError: the text holds a lone surrogate, which neither TOML nor UTF-8 can carry.
    """
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif 0xD800 <= code <= 0xDFFF:
            msg = (
                f"cannot write {value!r} to a policy file: expected text, found a lone surrogate "
                f"U+{code:04X}"
            )
            raise PolicyError(msg)
        elif (code < 0x20 or code >= 0x7F) and is_unsafe(ch):
            out.append(f"\\u{code:04X}" if code <= 0xFFFF else f"\\U{code:08X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, dt.datetime):
        msg = f"expected a date in a policy, found a datetime {value!r}"
        raise PolicyError(msg)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        inner = ", ".join(f"{key} = {_toml_value(item)}" for key, item in value.items())
        return "{ " + inner + " }"
    if isinstance(value, list):
        if not value:
            return "[]"
        if all(isinstance(item, str) for item in value) and len(value) <= 1:
            return "[" + _toml_value(value[0]) + "]"
        if all(isinstance(item, int) and not isinstance(item, bool) for item in value):
            return "[" + ", ".join(_toml_value(item) for item in value) + "]"
        return "[\n" + "".join(f"  {_toml_value(item)},\n" for item in value) + "]"
    msg = f"cannot write {type(value).__name__} value {value!r} as TOML"
    raise PolicyError(msg)


def _comment(text: str) -> str:
    # A comment has no escapes, and TOML refuses control characters in one: unsafe characters
    # (a file name's ESC, a bidi override) are shown as \uXXXX text instead.
    lines = text.replace("\r\n", "\n").split("\n")
    return "".join(f"# {unsafe_sub(line, _shown)}".rstrip() + "\n" for line in lines)


def _shown(char: str) -> str:
    return "\\u" + format(ord(char), "04x")


def dumps(
    policy: PinPolicy,
    *,
    format: Format = "toml",
    header: str | None = None,
    rule_comments: Mapping[int, str] | None = None,
) -> str:
    """Serialise *policy* as a policy document.

    Args:
        policy: the policy.
        format: ``"toml"`` or ``"json"``.
        header: a comment written at the top (TOML only; JSON has no comments).
        rule_comments: comments written above rule *i* (0-based; TOML only).

    Raises:
        PolicyError: a value cannot be written (e.g. a note holding a lone surrogate).
    """
    from tlspin.policyfile import to_data

    if format == "json":
        data = to_data(policy, dates_as_strings=True)
        # Non-ASCII text as is, but control and format characters as \u escapes: the same
        # strings for a JSON reader, inert on a terminal.
        return json_inert(json.dumps(data, indent=2, ensure_ascii=False)) + "\n"
    if format != "toml":
        msg = f"expected format 'toml' or 'json', found {format!r}"
        raise PolicyError(msg)
    data = to_data(policy)
    parts: list[str] = []
    if header:
        parts.append(_comment(header))
    if "on_expiry" in data:
        parts.append(f"on_expiry = {toml_string(data['on_expiry'])}\n")
    rules: list[dict[str, Any]] = data["rule"]
    if not rules:
        parts.append("rule = []\n")
    comments = rule_comments or {}
    for index, rule in enumerate(rules):
        parts.append("\n")
        if index in comments:
            parts.append(_comment(comments[index]))
        parts.append("[[rule]]\n")
        for key, value in rule.items():
            parts.append(f"{key} = {_toml_value(value)}\n")
    return "".join(parts).lstrip("\n")


def atomic_write(path: str | os.PathLike[str], data: str | bytes, *, mode: int = 0o644) -> Path:
    """Write *data* to *path* so that readers never see a partial file.

    The bytes go to a temporary file in the same directory, which is flushed, given *mode* and
    renamed over *path*. On any error the temporary file is removed and *path* is untouched.

    Raises:
        OSError: the directory is not writable, the disk is full, …
    """
    target = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return target


def dump(
    policy: PinPolicy,
    path: str | os.PathLike[str],
    *,
    format: Format | None = None,
    header: str | None = None,
    rule_comments: Mapping[int, str] | None = None,
) -> Path:
    """Write *policy* to *path* atomically; the format follows the suffix unless given.

    Raises:
        PolicyError: the policy cannot be serialised.
        OSError: the file cannot be written.
    """
    fmt: Format = format or ("json" if Path(path).suffix.lower() == ".json" else "toml")
    text = dumps(policy, format=fmt, header=header, rule_comments=rule_comments)
    return atomic_write(path, text)
