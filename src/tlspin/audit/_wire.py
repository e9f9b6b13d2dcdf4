"""What the audit proxy reads off the wire, and how it words it (no I/O of its own).

Request lines (redacted), TLS alerts, how a connection ended, the counting stream reader of the
forged sessions, and the judgement of a control-run connection that `RecordWatch` followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from asyncio import sslproto
from collections.abc import Iterable
from typing import Any, SupportsIndex
from urllib.parse import urlsplit

from tlspin._shared.loopserver import MAX_HEAD
from tlspin.audit._tls_records import RecordWatch

__all__ = [
    "FORGED_ALPN",
    "MAX_LINE",
    "PASSED_THROUGH",
    "QUIET_EOF",
    "TapReader",
    "alert_received",
    "ended",
    "hung_up",
    "judge_passthrough",
    "norm_host",
    "redact_request_line",
]

# Offered on forged sessions, HTTP/1.1 first. A client that insists on h2 (gRPC does) gets it,
# so it never hangs up on the forgery for want of a protocol, which a control run would take
# for a refused certificate.
FORGED_ALPN = ("http/1.1", "h2")

MAX_LINE = 8192
#: How a control-run connection's *upstream* starts when it reached the genuine server.
PASSED_THROUGH = "passed through to"
_ALERT_PREFIXES = ("TLSV1_ALERT_", "SSLV3_ALERT_", "TLSV13_ALERT_")


def norm_host(host: str) -> str:
    """A host name as the audit compares it: no brackets, lower case, no trailing dot."""
    return host.strip("[]").lower().rstrip(".")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(norm_host(host))
    except ValueError:
        return False
    return True


class _QuietEOF(logging.Filter):
    """Drop asyncio's warning about ``eof_received`` over TLS (each pinned hang-up logs one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in record.getMessage()


QUIET_EOF = _QuietEOF()


class TapReader(asyncio.StreamReader):
    """A stream reader that counts what arrives, in plaintext and through TLS, as it arrives.

    ``StreamReader.read`` raises a pending exception before it returns buffered data, so a
    program that sends bytes and then resets the connection would look as if it sent nothing.
    Counting in ``feed_data`` cannot miss them.
    """

    def __init__(self) -> None:
        super().__init__(limit=MAX_HEAD)
        self.plain = 0  # bytes read off the socket before the TLS layer took over
        self.tls = 0  # application bytes decrypted from the forged session
        self.first = bytearray()  # the first decrypted bytes (for the request line)
        self.eof = False
        self.changed = asyncio.Event()
        self._raw: asyncio.BaseTransport | None = None

    def set_transport(self, transport: asyncio.BaseTransport) -> None:
        super().set_transport(transport)
        self._raw = transport

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        data = bytes(data)
        # Decrypted data comes from the SSL protocol that start_tls put on the raw transport.
        raw = self._raw
        if raw is not None and isinstance(raw.get_protocol(), sslproto.SSLProtocol):
            self.tls += len(data)
            if len(self.first) < MAX_LINE:
                self.first += data[: MAX_LINE - len(self.first)]
        else:
            self.plain += len(data)
        super().feed_data(data)
        self.changed.set()

    def feed_eof(self) -> None:
        self.eof = True
        super().feed_eof()
        self.changed.set()

    def set_exception(self, exc: Exception) -> None:
        super().set_exception(exc)
        self.changed.set()

    async def wait_until(self, done: Any, timeout: float) -> bool:
        """Wait until ``done()`` is true or the stream ends/fails; False on timeout."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not (done() or self.eof or self.exception() is not None):
            self.changed.clear()
            left = end - loop.time()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                return False
        return True


def redact_request_line(line: bytes) -> str:
    """Keep the method, path and version of a request line; blank queries and credentials."""
    text = line.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")
    parts = text.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        printable = "".join(ch if ch.isprintable() else "." for ch in text[:40])
        return f"<not an HTTP/1 request line: {printable!r}>"
    method, target, version = parts
    if "://" in target:
        try:
            url = urlsplit(target)
            port = url.port
        except ValueError:
            return "<an absolute-form request line with an invalid URL>"
        host = url.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if port:
            netloc += f":{port}"
        target = f"{url.scheme}://{netloc}{url.path or '/'}" + ("?…" if url.query else "")
    elif "?" in target:
        target = target.split("?", 1)[0] + "?…"
    if len(target) > 200:
        target = target[:200] + "…"
    target = "".join(ch if ch.isprintable() else "." for ch in target)
    method = "".join(ch for ch in method if ch.isalnum() or ch in "-_")[:20]
    version = "".join(ch for ch in version if ch.isalnum() or ch in "/.")[:10]
    return f"{method} {target} {version}"


def alert_received(exc: BaseException) -> str | None:
    """The TLS alert an ``ssl.SSLError`` reports receiving (``"unknown ca"``), if any."""
    reason = getattr(exc, "reason", None)
    if not isinstance(reason, str):
        return None
    for prefix in _ALERT_PREFIXES:
        if reason.startswith(prefix):
            return reason[len(prefix) :].lower().replace("_", " ")
    return None


def ended(exc: BaseException | None) -> str:
    """How a connection ended, for the evidence text."""
    if exc is None:
        return "closed the connection"
    reason = getattr(exc, "reason", None)
    if isinstance(exc, ConnectionResetError):
        return "reset the connection"
    if isinstance(reason, str) and reason:
        return f"ended the connection ({reason.lower().replace('_', ' ')})"
    return f"ended the connection ({type(exc).__name__})"


def hung_up(exc: BaseException) -> bool:
    """True when a failed handshake ended because the program hung up (no alert), not because
    the audit's side could not agree on something with it."""
    if isinstance(exc, (ssl.SSLEOFError, ConnectionError, EOFError)):
        return True
    return getattr(exc, "reason", None) == "UNEXPECTED_EOF_WHILE_READING"


def judge_passthrough(watch: RecordWatch, host: str) -> tuple[str, bool]:
    """The evidence of a passed-through connection, and whether its data counts: only data sent
    to the name it asked for, over a protocol the forged run offered too."""
    seen = watch.describe()
    if watch.records == 0:
        return seen, False
    name = watch.server_name
    if name is None and not _is_ip(host):
        return (f"{seen}, but with no server name (SNI) for {host}: not counted, the audit "
                "cannot tell which server it meant"), False
    if name is not None and norm_host(name) != norm_host(host):
        return f"{seen}, but to server name {name!r}, not {host!r}: not counted", False
    if watch.alpn and not set(watch.alpn) & set(FORGED_ALPN):
        return (f"{seen}, but it asked for protocol(s) {', '.join(map(repr, watch.alpn))}, which "
                "the forged run did not offer: the runs differed in more than the certificate, "
                "not counted"), False
    return seen, True
