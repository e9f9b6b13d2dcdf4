"""The forging proxy behind ``tlspin audit`` (asyncio, in one daemon thread).

It listens on 127.0.0.1 only, forges a leaf per CONNECT host with its own in-memory CA (the key
never touches the disk), records what each connection proved, and forwards upstream only to
loopback addresses.

Each connection's verdict rests on evidence the proxy saw itself, named in ``Connection.detail``:

* application bytes through the forged session → ``not-pinned`` (whatever the protocol; the
  bytes are counted as they are decrypted, so a reset that follows them cannot hide them);
* the program aborted the handshake with a TLS alert → ``refused``;
* the handshake completed, then the program sent a certificate alert before any byte →
  ``pinned``;
* anything else (the handshake completed and the program sent nothing before closing or before
  the timeout, a hang-up during the handshake without an alert, bytes sent before the tunnel was
  answered) → ``inconclusive``: absence of data is not proof of a pin check.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import ssl
from asyncio import sslproto
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Self, SupportsIndex
from urllib.parse import urlsplit

from tlspin._loopserver import MAX_HEAD, TIMEOUT, LoopService, reply, tunnel
from tlspin._net import resolve_loopback, split_target

if TYPE_CHECKING:
    from tlspin.testing.pki import CA

__all__ = ["AuditProxy", "Connection", "redact_request_line"]

# How long a program may sit on a forged session before sending its first byte.
_FIRST_BYTE_TIMEOUT = 60.0
# After the first byte, how long to wait for the rest of the first line (the request line).
_LINE_TIMEOUT = 2.0
_MAX_LINE = 8192

Outcome = Literal["not-pinned", "plaintext", "inconclusive", "pinned", "refused"]

# TLS alerts that say "I do not accept your certificate" (RFC 8446 §6.2).
_CERTIFICATE_ALERTS = frozenset({
    "bad certificate", "unsupported certificate", "certificate revoked", "certificate expired",
    "certificate unknown", "unknown ca", "access denied", "certificate required",
    "bad certificate status response",
})
_ALERT_PREFIXES = ("TLSV1_ALERT_", "SSLV3_ALERT_", "TLSV13_ALERT_")
_POST_HANDSHAKE_SILENCE = (
    "a client that checks pins after the handshake (curl --pinnedpubkey, tlspin, OkHttp) "
    "does this, and so does one that had nothing to send: not proof of a pin"
)


@dataclass(frozen=True, slots=True)
class Connection:
    """One connection the program made through the audit proxy.

    Attributes:
        host: the CONNECT (or absolute-URL) host.
        port: its port.
        verdict: ``"not-pinned"`` (application bytes went through the forged session),
            ``"plaintext"`` (unencrypted HTTP), ``"refused"`` (the program aborted the handshake
            with a TLS alert), ``"pinned"`` (it completed the handshake, then rejected the
            certificate with an alert before any byte) or ``"inconclusive"`` (no evidence
            either way, e.g. it completed the handshake and closed without a byte).
        request_line: the first request line, query string blanked; None if none was seen.
        detail: the evidence for the verdict, in words.
        upstream: what happened upstream (forwarded, failed, or not contacted, and why).
        sent: application bytes the program sent through the forged session.
        completed: True when the program completed the TLS handshake with the proxy.
    """

    host: str
    port: int
    verdict: Outcome
    request_line: str | None = None
    detail: str = ""
    upstream: str = ""
    sent: int = 0
    completed: bool = False


class _QuietEOF(logging.Filter):
    """Drop asyncio's warning about ``eof_received`` over TLS (each pinned hang-up logs one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in record.getMessage()


_QUIET_EOF = _QuietEOF()


class _TapReader(asyncio.StreamReader):
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
            if len(self.first) < _MAX_LINE:
                self.first += data[: _MAX_LINE - len(self.first)]
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


def _alert(exc: BaseException) -> str | None:
    """The TLS alert an ``ssl.SSLError`` reports receiving (``"unknown ca"``), if any."""
    reason = getattr(exc, "reason", None)
    if not isinstance(reason, str):
        return None
    for prefix in _ALERT_PREFIXES:
        if reason.startswith(prefix):
            return reason[len(prefix) :].lower().replace("_", " ")
    return None


def _ended(exc: BaseException | None) -> str:
    """How a connection ended, for the evidence text."""
    if exc is None:
        return "closed the connection"
    reason = getattr(exc, "reason", None)
    if isinstance(exc, ConnectionResetError):
        return "reset the connection"
    if isinstance(reason, str) and reason:
        return f"ended the connection ({reason.lower().replace('_', ' ')})"
    return f"ended the connection ({type(exc).__name__})"


class AuditProxy(LoopService):
    """A loopback HTTP proxy that forges certificates and records what each program sends.

    Args:
        resolve: host name (lower case) → loopback IP, for forwarding upstream.
        upstream_cafile: CA bundle to verify upstream servers (default: system store).
        ca: the forging CA (default: a fresh one).
        present: a server context to present for every CONNECT instead of forged certificates
            (the control run of ``tlspin audit --control-cert``: the genuine certificate).
    """

    def __init__(
        self,
        *,
        resolve: Mapping[str, str] | None = None,
        upstream_cafile: str | os.PathLike[str] | None = None,
        ca: CA | None = None,
        present: ssl.SSLContext | None = None,
    ) -> None:
        from tlspin.testing.pki import CA

        super().__init__("127.0.0.1", None, thread_name="tlspin-audit")
        self.ca = ca if ca is not None else CA.root("tlspin audit CA (temporary)")
        self._resolve = {k.lower().rstrip("."): v for k, v in (resolve or {}).items()}
        for name, address in self._resolve.items():
            if not ipaddress.ip_address(address).is_loopback:
                raise ValueError(f"expected a loopback address for {name}, found {address!r}")
        self._upstream_cafile = None if upstream_cafile is None else os.fspath(upstream_cafile)
        self._upstream_ctx: ssl.SSLContext | None = None
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._present = present
        self._connections: list[Connection] = []

    def start(self) -> Self:
        """Listen on an ephemeral port of 127.0.0.1 (`url` is ``http://127.0.0.1:PORT``)."""
        logging.getLogger("asyncio").addFilter(_QUIET_EOF)  # idempotent: same filter object
        return super().start()

    async def _open(self) -> None:
        # Like asyncio.start_server, but with a reader that counts bytes as they arrive.
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.StreamReaderProtocol:
            return asyncio.StreamReaderProtocol(_TapReader(), self._serve)

        self._server = await loop.create_server(protocol, self._host, 0)
        self._port = self._server.sockets[0].getsockname()[1]

    # --- records ----------------------------------------------------------------------------
    @property
    def ca_pem(self) -> bytes:
        """The forging CA's certificate (PEM), to be trusted by the audited program."""
        return self.ca.cert_pem

    @property
    def connections(self) -> list[Connection]:
        """Every finished connection, in the order they ended."""
        with self._cond:
            return list(self._connections)

    def _record(self, conn: Connection) -> None:
        self._append("_connections", conn)

    # --- serving ----------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert isinstance(reader, _TapReader)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        line = head.split(b"\r\n", 1)[0]
        method, _, rest = line.decode("latin-1").strip().partition(" ")
        target = rest.rpartition(" ")[0]
        if method.upper() == "CONNECT":
            try:
                host, port = split_target(target, 443)
            except ValueError:
                await reply(writer, "400 Bad Request", "tlspin audit: expected CONNECT host:port")
                return
            if reader.plain > len(head):
                # A client must wait for the proxy's answer before it speaks through the tunnel;
                # bytes sent before it can be neither a TLS handshake with us nor attributed.
                self._record(Connection(host, port, "inconclusive", detail=(
                    f"the program sent {reader.plain - len(head)} byte(s) after its CONNECT "
                    "request, before the proxy answered; the audit refused the tunnel")))
                await reply(writer, "400 Bad Request",
                            "tlspin audit: bytes followed the CONNECT request before the answer")
                return
            try:
                context = self._forged_context(host)
            except ValueError as exc:
                # Never drop a connection silently: it would vanish from the report.
                self._record(Connection(host, port, "inconclusive", detail=(
                    f"the audit could not forge a certificate for this name ({exc}); the "
                    "program got 502 Bad Gateway")))
                await reply(writer, "502 Bad Gateway", "tlspin audit: cannot forge this name")
                return
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await self._intercept(
                reader, writer, host, port, context=context, head_size=len(head))
            return
        await self._plain(reader, writer, head, line, target)

    async def _plain(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: bytes,
        line: bytes,
        target: str,
    ) -> None:
        try:
            url = urlsplit(target)
            port = url.port or 80
        except ValueError:
            url, port = urlsplit(""), 80
        if url.scheme != "http" or not url.hostname:
            await reply(writer, "405 Method Not Allowed", "tlspin audit: expected CONNECT or http://")
            return
        host = url.hostname
        request = redact_request_line(line)
        detail = "the program sent an unencrypted http:// request"

        def record(upstream: str) -> None:
            self._record(Connection(host, port, "plaintext", request, detail, upstream,
                                    sent=len(head)))

        address = self._loopback(host)
        if address is None:
            record(self._not_contacted(host))
            await reply(writer, "502 Bad Gateway", "tlspin audit: upstream not contacted")
            return
        try:
            up = await asyncio.wait_for(asyncio.open_connection(address, port), TIMEOUT)
        except (OSError, TimeoutError) as exc:
            record(self._failed(address, port, exc))
            await reply(writer, "502 Bad Gateway", "tlspin audit: upstream failed")
            return
        record(f"forwarded to {address}:{port}")
        up[1].write(head)
        await self._relay((reader, writer), up)

    def _loopback(self, host: str) -> str | None:
        # Never consults DNS: only localhost, loopback literals and the --resolve map.
        return resolve_loopback(host, self._resolve)

    @staticmethod
    def _not_contacted(host: str) -> str:
        return (
            f"not contacted: {host} is not loopback (map it with --resolve {host}=127.0.0.1 "
            "to forward to a local server); the program got 502 Bad Gateway"
        )

    @staticmethod
    def _failed(address: str, port: int, exc: BaseException) -> str:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or (
            type(exc).__name__)
        return f"forwarding to {address}:{port} failed ({reason}); the program got 502 Bad Gateway"

    def _forged_context(self, host: str) -> ssl.SSLContext:
        from tlspin.testing.pki import server_context

        if self._present is not None:
            return self._present
        name = host.strip("[]").lower().rstrip(".")
        with self._cond:
            ctx = self._contexts.get(name)
            if ctx is None:
                # The name goes in the SAN; the CN (at most 64 characters) is only a label.
                leaf = self.ca.issue(name, common_name=name[:64] or "tlspin audit")
                ctx = server_context(leaf, alpn=["http/1.1"])
                # No session tickets: the server then sends nothing after the handshake, so a
                # program that writes and closes leaves no unread data behind, and its close is a
                # FIN, not a reset that could discard the bytes it sent.
                ctx.num_tickets = 0
                ctx.options |= ssl.OP_NO_TICKET
                self._contexts[name] = ctx
            return ctx

    async def _intercept(
        self,
        reader: _TapReader,
        writer: asyncio.StreamWriter,
        host: str,
        port: int,
        *,
        context: ssl.SSLContext,
        head_size: int,
    ) -> None:
        completed = False

        def record(verdict: Outcome, detail: str, line: str | None = None, upstream: str = "",
                   ) -> None:
            self._record(Connection(host, port, verdict, line, detail, upstream, reader.tls,
                                    completed))

        def early() -> str | None:
            extra = reader.plain - head_size
            if extra <= 0:
                return None
            return (f"the program sent {extra} byte(s) after its CONNECT request before the "
                    "TLS handshake started (not part of any handshake the audit could see)")

        try:
            await writer.start_tls(context, ssl_handshake_timeout=TIMEOUT)
        except ssl.SSLError as exc:
            alert = _alert(exc)
            if early():
                record("inconclusive", f"{early()}; the handshake then failed")
            elif alert is not None:
                hint = (" (it does not trust the audit CA: it may pin, or use its own store)"
                        if alert == "unknown ca" else "")
                record("refused", f"the program aborted the handshake with TLS alert "
                       f"'{alert}'{hint}")
            elif getattr(exc, "reason", "") == "HTTP_REQUEST":
                record("plaintext", "the program sent unencrypted HTTP through the CONNECT "
                       "tunnel instead of a TLS handshake")
            else:
                record("inconclusive", f"the handshake failed: {_ended(exc)} (no TLS alert)")
            return
        except TimeoutError:
            record("inconclusive", early() or
                   f"the program did not complete the handshake within {TIMEOUT:g} s")
            return
        except (OSError, EOFError) as exc:
            record("inconclusive", early() or f"the program {_ended(exc)} during the handshake "
                   "without a TLS alert")
            return
        self._track(writer)  # start_tls replaced the transport
        completed = True
        try:
            arrived = await reader.wait_until(lambda: reader.tls > 0, _FIRST_BYTE_TIMEOUT)
            if reader.tls > 0:
                await reader.wait_until(
                    lambda: b"\n" in reader.first or len(reader.first) >= _MAX_LINE,
                    _LINE_TIMEOUT,
                )
        except asyncio.CancelledError:
            record("inconclusive", "the handshake completed, and the audit ended while the "
                   "connection was open and silent")
            raise
        if reader.tls > 0:
            await self._forward(reader, writer, host, port, record, extra=early())
            return
        if early():
            record("inconclusive", early() or "")
            return
        failure = reader.exception()
        alert = None if failure is None else _alert(failure)
        if alert in _CERTIFICATE_ALERTS:
            record("pinned", f"the handshake completed, then the program rejected the forged "
                   f"certificate with TLS alert '{alert}' before sending any byte")
        elif not arrived:
            record("inconclusive", f"the handshake completed, then no byte in "
                   f"{_FIRST_BYTE_TIMEOUT:g} s")
        else:
            record("inconclusive", f"the handshake completed, then the program "
                   f"{_ended(failure)} without sending a byte; {_POST_HANDSHAKE_SILENCE}")

    async def _forward(
        self,
        reader: _TapReader,
        writer: asyncio.StreamWriter,
        host: str,
        port: int,
        record: Any,
        *,
        extra: str | None,
    ) -> None:
        first = bytes(reader.first)
        line = redact_request_line(first) if b"\n" in first else (
            f"<{reader.tls} byte(s), not a complete request line>")
        detail = (f"the handshake completed, then the program sent {reader.tls} byte(s) of "
                  "application data through the forged certificate")
        address = self._loopback(host)
        if extra is not None:
            # Plaintext sits in front of the decrypted bytes: nothing coherent to forward.
            record("not-pinned", f"{detail}; {extra}", line, "not forwarded (mixed plaintext)")
            return
        if address is None:
            record("not-pinned", detail, line, self._not_contacted(host))
            await reply(writer, "502 Bad Gateway", "tlspin audit: upstream not contacted")
            return
        try:
            up = await asyncio.wait_for(
                asyncio.open_connection(
                    address, port, ssl=self._upstream_context(), server_hostname=host.strip("[]")
                ),
                TIMEOUT,
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            record("not-pinned", detail, line, self._failed(address, port, exc))
            with contextlib.suppress(OSError, ssl.SSLError):
                await reply(writer, "502 Bad Gateway", "tlspin audit: upstream failed")
            return
        record("not-pinned", detail, line, f"forwarded to {address}:{port}")
        # What the program sent is still in the reader's buffer; the tunnel passes it on.
        await self._relay((reader, writer), up)

    async def _relay(
        self,
        program: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self._track(upstream[1])
        try:
            await tunnel(program, upstream)
        finally:
            upstream[1].close()

    def _upstream_context(self) -> ssl.SSLContext:
        if self._upstream_ctx is None:
            ctx = ssl.create_default_context(cafile=self._upstream_cafile)
            ctx.set_alpn_protocols(["http/1.1"])
            self._upstream_ctx = ctx
        return self._upstream_ctx
