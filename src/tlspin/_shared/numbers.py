"""Numbers in protocol text (HTTP headers, chunk sizes, ports): ASCII digits only.

``str.isdigit()`` is true for ``"²"``, which ``int()`` refuses with a ``ValueError``; ``int()``
in turn reads ``"٣"``, ``" 3 "``, ``"+3"`` and ``"1_000"``, none of which is a number in HTTP
(RFC 9110 §8.6: ``1*DIGIT``, and DIGIT is ASCII). Neither test says whether a peer sent a
number, so every number tlspin reads from a peer goes through these functions: they return
``None`` for anything else, and never raise.
"""

from __future__ import annotations

import re

__all__ = ["decimal", "hexadecimal", "tcp_port"]

_DECIMAL = re.compile(r"[0-9]+")
_HEX = re.compile(r"[0-9A-Fa-f]+")


def _text(value: str | bytes) -> str | None:
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            return None
    return value


def decimal(value: str | bytes, *, max_digits: int = 18) -> int | None:
    """*value* as a non-negative integer if it is 1 to *max_digits* ASCII digits, else None.

    Surrounding whitespace is not stripped: callers strip what their grammar allows.
    """
    text = _text(value)
    if text is None or len(text) > max_digits or not _DECIMAL.fullmatch(text):
        return None
    return int(text)


def hexadecimal(value: str | bytes, *, max_digits: int = 15) -> int | None:
    """*value* as a non-negative integer if it is 1 to *max_digits* ASCII hex digits, else None
    (an HTTP/1.1 chunk size, RFC 9112 §7.1)."""
    text = _text(value)
    if text is None or len(text) > max_digits or not _HEX.fullmatch(text):
        return None
    return int(text, 16)


def tcp_port(value: str | bytes) -> int | None:
    """*value* as a TCP port (1 to 65535, ASCII digits), else None."""
    number = decimal(value, max_digits=5)
    return number if number is not None and 0 < number < 65536 else None
