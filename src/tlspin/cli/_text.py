"""Terminal-safe text: every string an attacker may control is shown literally.

Certificate subjects, SANs, policy notes, bundle contents, server responses, report fields and
host names can hold anything: rich markup (``[green]✓ pin OK[/green]``, ``[link=…]``), ANSI and
OSC escape sequences, C1 controls (U+009B is a CSI on some terminals), carriage returns that
overwrite a line, bidi overrides that reorder it, or newlines that forge whole lines. So:

* :func:`clean` turns one attacker-controlled value into one line of visible text: control and
  format characters become ``\\x1b``, ``\\u202e``… escapes (newlines too);
* :func:`clean_lines` does the same but keeps newlines, for text whose lines tlspin built;
* :func:`console` is the only way the CLI makes a rich console: markup, emoji codes and
  highlighting are off, so a string is never interpreted; styles come only from :func:`styled`;
* :func:`echo` is ``click.echo`` through :func:`clean_lines`, a last line of defence for
  output that mixes tlspin's text with values.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

__all__ = ["clean", "clean_lines", "console", "echo", "styled"]

# Categories shown as escapes: Cc (C0, DEL, C1), Cf (format: bidi controls and isolates,
# zero-width characters, BOM, soft hyphen), Cs (lone surrogates), Zl and Zp (line and paragraph
# separators, which some terminals treat as newlines).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# Printable ASCII is always safe; anything else is looked up character by character.
_MAYBE_UNSAFE = re.compile(r"[^\x20-\x7e]")


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _replace(match: re.Match[str], *, keep_newlines: bool) -> str:
    char = match.group()
    if keep_newlines and char == "\n":
        return char
    if unicodedata.category(char) in _UNSAFE_CATEGORIES:
        return _escape(char)
    return char


def clean(value: object) -> str:
    """One line of visible text for *value*: every control or format character escaped.

    ``"evil\\x1b[31m\\u202e"`` becomes ``"evil\\\\x1b[31m\\\\u202e"`` (a backslash sequence the
    terminal prints as such). Newlines, carriage returns and tabs are escaped too, so a value
    can never start a line of its own.
    """
    text = value if isinstance(value, str) else str(value)
    if not _MAYBE_UNSAFE.search(text):
        return text
    return _MAYBE_UNSAFE.sub(lambda m: _replace(m, keep_newlines=False), text)


def clean_lines(value: object) -> str:
    """Like :func:`clean`, but newlines are kept (for multi-line text tlspin put together)."""
    text = value if isinstance(value, str) else str(value)
    if not _MAYBE_UNSAFE.search(text):
        return text
    return _MAYBE_UNSAFE.sub(lambda m: _replace(m, keep_newlines=True), text)


def echo(message: object = "", *, err: bool = False, nl: bool = True) -> None:
    """``click.echo`` of *message* with every control character but newlines escaped."""
    click.echo(clean_lines(message), err=err, nl=nl)


def console(*, stderr: bool = False, width: int | None = None) -> Console:
    """A rich console on the current stdout (or stderr) that never interprets a string.

    Markup, ``:emoji:`` codes and automatic highlighting are off: a certificate subject reading
    ``[link=https://evil.example]…[/link]`` prints as those characters. Created per call, since
    tests swap ``sys.stdout``.
    """
    from rich.console import Console

    return Console(
        file=sys.stderr if stderr else sys.stdout,
        soft_wrap=False,
        highlight=False,
        markup=False,
        emoji=False,
        width=width,
    )


def styled(*parts: str | tuple[str, str], multiline: bool = False) -> Text:
    """A rich ``Text`` of cleaned *parts*: plain strings, or ``(text, style)`` pairs.

    The only way CLI output gets a style: the text of every part goes through :func:`clean`
    (:func:`clean_lines` with *multiline*, for text whose lines tlspin joined) and is never
    parsed as markup.
    """
    from rich.text import Text

    safe = clean_lines if multiline else clean
    pieces: list[Any] = [(safe(p[0]), p[1]) if isinstance(p, tuple) else safe(p) for p in parts]
    return Text.assemble(*pieces)
