"""Escapes that keep data output loss-free and inert on a terminal (JSON, TOML, XML).

A policy's notes and report URIs are text someone else may have written (an imported
configuration, a bundle). Printed raw, a C1 control (U+009B is a CSI on some terminals), a bidi
override (U+202E) or a line separator (U+2028) restyles, reorders or forges the output around
it. Data formats can say every such character with an escape that their readers turn back into
the same character, so the output stays exact and the terminal sees only ASCII for them:

* Cc (C0, DEL, C1), Cf (bidi controls and isolates, zero-width characters, BOM, soft hyphen,
  tags), Zl and Zp (line and paragraph separators): the characters escaped;
* Cs (a lone surrogate, which only JSON can carry, as an escape).

:mod:`tlspin.cli._text` does the same for the text the CLI shows to people, where an escape is
only shown, never read back.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

__all__ = ["is_unsafe", "json_inert", "unsafe_sub", "xml_inert"]

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# Printable ASCII is always safe; anything else is looked up character by character.
_MAYBE_UNSAFE = re.compile(r"[^\x20-\x7e]")


def is_unsafe(char: str) -> bool:
    """Whether one character is a control, format, surrogate or line/paragraph separator."""
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


def unsafe_sub(text: str, escape: Callable[[str], str]) -> str:
    """*text* with each unsafe character replaced by ``escape(char)``."""
    if not _MAYBE_UNSAFE.search(text):
        return text

    def replace(match: re.Match[str]) -> str:
        char = match.group()
        return escape(char) if is_unsafe(char) else char

    return _MAYBE_UNSAFE.sub(replace, text)


def _json_escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # a UTF-16 surrogate pair, as JSON spells characters beyond the BMP
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_inert(text: str) -> str:
    """JSON text (from ``json.dumps(..., ensure_ascii=False)``) with every unsafe character
    written as a ``\\uXXXX`` escape. ``json.dumps`` escapes C0 controls in strings itself, so
    a raw tab, CR or LF is layout and stays; every other unsafe character is inside a string,
    and a JSON reader gets the very same string back."""
    return unsafe_sub(text, lambda char: char if char in "\t\r\n" else _json_escape(char))


def xml_inert(text: str) -> str:
    """XML text (from ElementTree or plistlib) with every unsafe character written as a
    character reference, which an XML reader turns back into the character.

    Only for documents whose markup, comments and processing instructions are ASCII (tlspin's
    exports make comments ASCII), since a reference means nothing there.

    Raises:
        ValueError: a character XML cannot hold even as a reference (C0 controls but tab, CR
            and LF; lone surrogates).
    """

    def escape(char: str) -> str:
        code = ord(char)
        if (code < 0x20 and char not in "\t\r\n") or 0xD800 <= code <= 0xDFFF:
            msg = f"XML cannot hold the character U+{code:04X}, even as a reference"
            raise ValueError(msg)
        return char if char in "\t\r\n" else f"&#x{code:X};"

    return unsafe_sub(text, escape)
