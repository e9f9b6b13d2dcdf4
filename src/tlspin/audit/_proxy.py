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
  answered) → ``inconclusive``: absence of data is not proof of a pin check. Those of them where
  the program saw the forged certificate and sent neither a byte nor an alert are ``quiet``: the
  case a control run can settle.

In a control run, the host:port pairs named in *control* are not forged: each connection to one
of them is passed through, unchanged, to the genuine server at the address the proxy would
forward to anyway (a loopback address), and `RecordWatch` counts the application data the
program sends it. With *present* (the genuine certificate and key), the proxy serves that
certificate for them instead and counts the decrypted bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import ssl
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Self
from urllib.parse import urlsplit

from tlspin._shared.loopserver import TIMEOUT, LoopService, reply, tunnel
from tlspin._shared.net import resolve_loopback, split_target
from tlspin.audit._tls_records import RecordWatch, watch_tunnel
from tlspin.audit._wire import (
    FORGED_ALPN,
    MAX_LINE,
    PASSED_THROUGH,
    QUIET_EOF,
    TapReader,
    alert_received,
    ended,
    hung_up,
    judge_passthrough,
    norm_host,
    redact_request_line,
)

if TYPE_CHECKING:
    from tlspin.testing.pki import CA

__all__ = ["AuditProxy", "Connection", "norm_host", "redact_request_line"]

# How long a program may sit on a forged session before sending its first byte.
_FIRST_BYTE_TIMEOUT = 60.0
# After the first byte, how long to wait for the rest of the first line (the request line).
_LINE_TIMEOUT = 2.0
Outcome = Literal["not-pinned", "plaintext", "inconclusive", "pinned", "refused"]

# TLS alerts that say "I do not accept your certificate" (RFC 8446 §6.2).
_CERTIFICATE_ALERTS = frozenset({
    "bad certificate", "unsupported certificate", "certificate revoked", "certificate expired",
    "certificate unknown", "unknown ca", "access denied", "certificate required",
    "bad certificate status response",
})
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
            either way, e.g. it completed the handshake and closed without a byte). Always
            ``"inconclusive"`` for a *control* connection: by itself it proves nothing.
        request_line: the first request line, query string blanked; None if none was seen.
        detail: the evidence for the verdict, in words.
        upstream: what happened upstream (forwarded, passed through, failed, or not contacted).
        sent: application bytes the program sent (through the forged session; for a control
            connection, to the genuine server: encrypted bytes when passed through).
        completed: True when the program completed the TLS handshake with the proxy.
        quiet: True when the program saw the forged certificate and then sent neither an
            application byte nor a TLS alert: what a post-handshake pin check looks like, and
            what a control run can settle.
        control: True for a control-run connection to the genuine server (or certificate).
        records: for a passed-through control connection, the application-data records sent.
    """

    host: str
    port: int
    verdict: Outcome
    request_line: str | None = None
    detail: str = ""
    upstream: str = ""
    sent: int = 0
    completed: bool = False
    quiet: bool = False
    control: bool = False
    records: int = 0


class AuditProxy(LoopService):
    """A loopback HTTP proxy that forges certificates and records what each program sends.

    Args:
        resolve: host name (lower case) → loopback IP, for forwarding upstream.
        upstream_cafile: CA bundle to verify upstream servers (default: system store).
        ca: the forging CA (default: a fresh one).
        control: the host:port pairs of a control run (host names as `norm_host` gives
            them): their connections go to the genuine server instead of a forgery.
        present: with *control*, a server context to present for those pairs instead of passing
            them through (``tlspin audit --control-cert``: the genuine certificate and key).
    """

    def __init__(
        self,
        *,
        resolve: Mapping[str, str] | None = None,
        upstream_cafile: str | os.PathLike[str] | None = None,
        ca: CA | None = None,
        control: Collection[tuple[str, int]] = (),
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
        self._upstream_ctx: dict[str | None, ssl.SSLContext] = {}
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._control = frozenset((norm_host(h), p) for h, p in control)
        self._present = present
        self._connections: list[Connection] = []

    def start(self) -> Self:
        """Listen on an ephemeral port of 127.0.0.1 (`url` is ``http://127.0.0.1:PORT``)."""
        logging.getLogger("asyncio").addFilter(QUIET_EOF)  # idempotent: same filter object
        return super().start()

    async def _open(self) -> None:
        # Like asyncio.start_server, but with a reader that counts bytes as they arrive.
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.StreamReaderProtocol:
            return asyncio.StreamReaderProtocol(TapReader(), self._serve)

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
        assert isinstance(reader, TapReader)
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
            control = (norm_host(host), port) in self._control
            if control and self._present is None:
                await self._pass_through(reader, writer, host, port)
                return
            try:
                context = self._present if control and self._present else (
                    self._forged_context(host))
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
                reader, writer, host, port, context=context, head_size=len(head), control=control)
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

        name = norm_host(host)
        with self._cond:
            ctx = self._contexts.get(name)
            if ctx is None:
                # The name goes in the SAN; the CN (at most 64 characters) is only a label.
                leaf = self.ca.issue(name, common_name=name[:64] or "tlspin audit")
                ctx = server_context(leaf, alpn=FORGED_ALPN)
                # No session tickets: the server then sends nothing after the handshake, so a
                # program that writes and closes leaves no unread data behind, and its close is a
                # FIN, not a reset that could discard the bytes it sent.
                ctx.num_tickets = 0
                ctx.options |= ssl.OP_NO_TICKET
                self._contexts[name] = ctx
            return ctx

    async def _intercept(
        self,
        reader: TapReader,
        writer: asyncio.StreamWriter,
        host: str,
        port: int,
        *,
        context: ssl.SSLContext,
        head_size: int,
        control: bool = False,
    ) -> None:
        completed = False
        # In a control run with --control-cert, the program sees the genuine certificate.
        certificate = "the genuine certificate" if control else "the forged certificate"

        def record(verdict: Outcome, detail: str, line: str | None = None, upstream: str = "",
                   *, quiet: bool = False) -> None:
            self._record(Connection(
                host, port, "inconclusive" if control else verdict, line, detail, upstream,
                reader.tls, completed, quiet=quiet and not control, control=control))

        def early() -> str | None:
            extra = reader.plain - head_size
            if extra <= 0:
                return None
            return (f"the program sent {extra} byte(s) after its CONNECT request before the "
                    "TLS handshake started (not part of any handshake the audit could see)")

        try:
            await writer.start_tls(context, ssl_handshake_timeout=TIMEOUT)
        except ssl.SSLError as exc:
            alert = alert_received(exc)
            if early():
                record("inconclusive", f"{early()}; the handshake then failed")
            elif alert is not None:
                hint = (" (it does not trust the audit CA: it may pin, or use its own store)"
                        if alert == "unknown ca" and not control else "")
                record("refused", f"the program aborted the handshake with TLS alert "
                       f"'{alert}'{hint}")
            elif getattr(exc, "reason", "") == "HTTP_REQUEST":
                record("plaintext", "the program sent unencrypted HTTP through the CONNECT "
                       "tunnel instead of a TLS handshake")
            elif hung_up(exc):
                record("inconclusive", f"the program {ended(exc)} during the handshake without "
                       "a TLS alert", quiet=True)
            else:
                # The audit's side failed (no shared cipher, version, signature algorithm): the
                # program may never have seen the certificate, so its silence says nothing.
                record("inconclusive", f"the handshake failed: {ended(exc)} (no TLS alert)")
            return
        except TimeoutError:
            record("inconclusive", early() or
                   f"the program did not complete the handshake within {TIMEOUT:g} s")
            return
        except (OSError, EOFError) as exc:
            record("inconclusive", early() or f"the program {ended(exc)} during the handshake "
                   "without a TLS alert", quiet=early() is None)
            return
        self._track(writer)  # start_tls replaced the transport
        completed = True
        try:
            arrived = await reader.wait_until(lambda: reader.tls > 0, _FIRST_BYTE_TIMEOUT)
            if reader.tls > 0:
                await reader.wait_until(
                    lambda: b"\n" in reader.first or len(reader.first) >= MAX_LINE,
                    _LINE_TIMEOUT,
                )
        except asyncio.CancelledError:
            record("inconclusive", "the handshake completed, and the audit ended while the "
                   "connection was open and silent")
            raise
        if reader.tls > 0:
            await self._forward(reader, writer, host, port, record, extra=early(),
                                certificate=certificate)
            return
        if early():
            record("inconclusive", early() or "")
            return
        failure = reader.exception()
        alert = None if failure is None else alert_received(failure)
        if alert in _CERTIFICATE_ALERTS:
            record("pinned", f"the handshake completed, then the program rejected {certificate} "
                   f"with TLS alert '{alert}' before sending any byte")
        elif not arrived:
            # Not quiet: a program waiting for the server to speak first (SMTP, IMAP) does this.
            record("inconclusive", f"the handshake completed, then no byte in "
                   f"{_FIRST_BYTE_TIMEOUT:g} s")
        elif control:
            record("inconclusive", f"the handshake completed, then the program "
                   f"{ended(failure)} without sending a byte")
        else:
            record("inconclusive", f"the handshake completed, then the program "
                   f"{ended(failure)} without sending a byte; {_POST_HANDSHAKE_SILENCE}",
                   quiet=True)

    async def _forward(
        self,
        reader: TapReader,
        writer: asyncio.StreamWriter,
        host: str,
        port: int,
        record: Any,
        *,
        extra: str | None,
        certificate: str,
    ) -> None:
        first = bytes(reader.first)
        line = redact_request_line(first) if b"\n" in first else (
            f"<{reader.tls} byte(s), not a complete request line>")
        detail = (f"the handshake completed, then the program sent {reader.tls} byte(s) of "
                  f"application data through {certificate}")
        address = self._loopback(host)
        if extra is not None:
            # Plaintext sits in front of the decrypted bytes: nothing coherent to forward.
            record("not-pinned", f"{detail}; {extra}", line, "not forwarded (mixed plaintext)")
            return
        if address is None:
            record("not-pinned", detail, line, self._not_contacted(host))
            await reply(writer, "502 Bad Gateway", "tlspin audit: upstream not contacted")
            return
        ssl_object = writer.get_extra_info("ssl_object")
        alpn = None if ssl_object is None else ssl_object.selected_alpn_protocol()
        try:
            up = await asyncio.wait_for(
                asyncio.open_connection(
                    address, port, ssl=self._upstream_context(alpn),
                    server_hostname=host.strip("[]"),
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

    async def _pass_through(
        self, reader: TapReader, writer: asyncio.StreamWriter, host: str, port: int
    ) -> None:
        """A control-run connection: relay it, unchanged, to the genuine server and watch it."""

        def record(detail: str, upstream: str, watch: RecordWatch | None = None,
                   *, counted: bool = False) -> None:
            self._record(Connection(
                host, port, "inconclusive", detail=detail, upstream=upstream,
                sent=watch.sent if watch is not None and counted else 0,
                completed=watch is not None and watch.handshake_done,
                control=True, records=watch.records if watch is not None and counted else 0))

        # The same address the forged run forwards to: loopback only, never a DNS answer, and
        # the program's CONNECT line chooses nothing but which of the audited names it is.
        address = self._loopback(host)
        if address is None:
            record("the genuine server was not contacted", self._not_contacted(host))
            await reply(writer, "502 Bad Gateway", "tlspin audit: upstream not contacted")
            return
        try:
            up = await asyncio.wait_for(asyncio.open_connection(address, port), TIMEOUT)
        except (OSError, TimeoutError) as exc:
            record("the genuine server could not be reached", self._failed(address, port, exc))
            await reply(writer, "502 Bad Gateway", "tlspin audit: upstream failed")
            return
        self._track(up[1])
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        watch = RecordWatch()
        done = asyncio.Event()
        relay = asyncio.ensure_future(
            watch_tunnel((reader, writer), up, watch, on_program_done=done))
        waiter = asyncio.ensure_future(done.wait())
        upstream = f"{PASSED_THROUGH} {address}:{port}, not decrypted"
        recorded = False
        try:
            await asyncio.wait([relay, waiter], return_when=asyncio.FIRST_COMPLETED)
            recorded = True
            detail, counted = judge_passthrough(watch, host)
            record(detail, upstream, watch, counted=counted)
            await relay
        finally:
            if not recorded:  # the audit is ending with the connection still open
                detail, counted = judge_passthrough(watch, host)
                record(f"{detail} (the audit ended with the connection open)", upstream, watch,
                       counted=counted)
            waiter.cancel()
            relay.cancel()
            up[1].close()

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

    def _upstream_context(self, alpn: str | None) -> ssl.SSLContext:
        # The protocol the program negotiated with the forgery, so the relayed bytes make sense.
        ctx = self._upstream_ctx.get(alpn)
        if ctx is None:
            ctx = ssl.create_default_context(cafile=self._upstream_cafile)
            ctx.set_alpn_protocols([alpn or "http/1.1"])
            self._upstream_ctx[alpn] = ctx
        return ctx
