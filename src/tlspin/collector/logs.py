"""The collector's log lines on standard error, with attacker-controlled text made inert.

``tlspin serve`` logs what the collector notices (a report it could not store, a suppressed
alert, a tightened database file). Log messages quote report values and request headers, so
control characters, line breaks and bidirectional overrides in them are shown as escapes: no
forged log line, no terminal escape sequence.
"""

from __future__ import annotations

import logging
import re
import sys

__all__ = ["ENV_LOG_LEVEL", "configure"]

#: Set by ``tlspin serve`` for its worker processes, which configure their own logging.
ENV_LOG_LEVEL = "TLSPIN_COLLECTOR_LOG_LEVEL"

_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff"
    "\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class CleanFormatter(logging.Formatter):
    """A formatter whose output holds no control or invisible character: each becomes a
    visible escape, and a line break in a message becomes ``\\n`` (a traceback keeps its
    lines, each cleaned)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        record_copy = logging.makeLogRecord({**record.__dict__, "msg": message, "args": None})
        record_copy.msg = _UNSAFE.sub(_escape, message).replace("\n", "\\n")
        return "\n".join(_UNSAFE.sub(_escape, line)
                         for line in super().format(record_copy).split("\n"))


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure` installs (found again by its class)."""


def configure(level: str | int = "warning") -> None:
    """Send the ``tlspin`` loggers' records at *level* and above to standard error, cleaned
    (once per process; a second call only changes the level)."""
    logger = logging.getLogger("tlspin")
    numeric = level if isinstance(level, int) else logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.WARNING
    handler = next((h for h in logger.handlers if isinstance(h, _Handler)), None)
    if handler is None:
        handler = _Handler(sys.stderr)
        handler.setFormatter(CleanFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    handler.setLevel(numeric)
    if logger.level == logging.NOTSET or logger.level > numeric:
        logger.setLevel(numeric)
