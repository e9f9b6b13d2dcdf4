"""The forging proxy behind ``tlspin audit`` (asyncio, in one daemon thread).

It listens on 127.0.0.1 only, forges a leaf per CONNECT host with its own in-memory CA (the key
never touches the disk), records how each connection ended, and forwards upstream only to
loopback addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Self
from urllib.parse import urlsplit

from tlspin._loopserver import TIMEOUT, LoopService, reply, tunnel
from tlspin._net import resolve_loopback, split_target

if TYPE_CHECKING:
    from tlspin.testing.pki import CA

__all__ = ["AuditProxy", "Connection", "redact_request_line"]

# How long a program may sit on a forged session before sending its first request.
_FIRST_BYTE_TIMEOUT = 60.0
_MAX_LINE = 8192

Outcome = Literal["not-pinned", "plaintext", "pinned", "refused"]


@dataclass(frozen=True, slots=True)
class Connection:
    """One connection the program made through the audit proxy.

    Attributes:
        host: the CONNECT (or absolute-URL) host.
        port: its port.
        verdict: ``"not-pinned"`` (a request went through the forged session), ``"plaintext"``
            (an ``http://`` request), ``"pinned"`` (handshake completed, then no request) or
            ``"refused"`` (the program aborted the handshake).
        request_line: the first request line, query string blanked; None if none was sent.
        detail: how a connection without a request ended.
        upstream: what happened upstream.
    """

    host: str
    port: int
    verdict: Outcome
    request_line: str | None = None
    detail: str = ""
    upstream: str = ""


class _QuietEOF(logging.Filter):
    """Drop asyncio's warning about ``eof_received`` over TLS (each pinned hang-up logs one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in record.getMessage()


_QUIET_EOF = _QuietEOF()


def redact_request_line(line: bytes) -> str:
    """Keep the method, path and version of a request line; blank queries and credentials."""
    text = line.rstrip(b"\r\n").decode("latin-1")
    parts = text.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        printable = "".join(ch if ch.isprintable() else "." for ch in text[:40])
        return f"<not an HTTP/1 request line: {printable!r}>"
    method, target, version = parts
    if "://" in target:
        url = urlsplit(target)
        host = url.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if url.port:
            netloc += f":{url.port}"
        target = f"{url.scheme}://{netloc}{url.path or '/'}" + ("?…" if url.query else "")
    elif "?" in target:
        target = target.split("?", 1)[0] + "?…"
    if len(target) > 200:
        target = target[:200] + "…"
    method = "".join(ch for ch in method if ch.isalnum() or ch in "-_")[:20]
    return f"{method} {target} {version[:10]}"


def _tls_detail(exc: BaseException, *, during_handshake: bool) -> str:
    when = "handshake aborted" if during_handshake else "after the handshake"
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        text = reason.lower().replace("_", " ")
        hint = ""
        if "unknown ca" in text:
            hint = " (the program does not trust the audit CA: it may pin, or use another store)"
        elif "eof" in text:
            text = "the program hung up"
        return f"{when}: {text}{hint}"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | EOFError):
        return f"{when}: the program hung up"
    if isinstance(exc, TimeoutError):
        return "no request before the timeout"
    return f"{type(exc).__name__}: {exc}"


class AuditProxy(LoopService):
    """A loopback HTTP proxy that forges certificates and records what each program sends.

    Args:
        resolve: host name (lower case) → loopback IP, for forwarding upstream.
        upstream_cafile: CA bundle to verify upstream servers (default: system store).
        ca: the forging CA (default: a fresh one).
    """

    def __init__(
        self,
        *,
        resolve: Mapping[str, str] | None = None,
        upstream_cafile: str | os.PathLike[str] | None = None,
        ca: CA | None = None,
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
        self._connections: list[Connection] = []

    def start(self) -> Self:
        """Listen on an ephemeral port of 127.0.0.1 (`url` is ``http://127.0.0.1:PORT``)."""
        logging.getLogger("asyncio").addFilter(_QUIET_EOF)  # idempotent: same filter object
        return super().start()

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
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        line = head.split(b"\r\n", 1)[0]
        method, _, rest = line.decode("latin-1").strip().partition(" ")
        target = rest.rpartition(" ")[0]
        if method.upper() == "CONNECT":
            host, port = split_target(target, 443)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await self._intercept(reader, writer, host, port)
            return
        url = urlsplit(target)
        if url.scheme != "http" or not url.hostname:
            await reply(writer, "405 Method Not Allowed", "tlspin audit: expected CONNECT or http://")
            return
        port = url.port or 80
        address = self._loopback(url.hostname)
        if address is None:
            self._record(Connection(url.hostname, port, "plaintext", redact_request_line(line),
                                    upstream=self._not_contacted(url.hostname)))
            await reply(writer, "502 Bad Gateway", "tlspin audit: upstream not contacted")
            return
        self._record(Connection(url.hostname, port, "plaintext", redact_request_line(line),
                                upstream=f"forwarded to {address}:{port}"))
        up = await asyncio.wait_for(asyncio.open_connection(address, port), TIMEOUT)
        up[1].write(head)
        await self._relay((reader, writer), up)

    def _loopback(self, host: str) -> str | None:
        # Never consults DNS: only localhost, loopback literals and the --resolve map.
        return resolve_loopback(host, self._resolve)

    @staticmethod
    def _not_contacted(host: str) -> str:
        return (
            f"not contacted: {host} is not loopback (map it with --resolve {host}=127.0.0.1 "
            "to forward to a local server)"
        )

    def _forged_context(self, host: str) -> ssl.SSLContext:
        from tlspin.testing.pki import server_context

        name = host.strip("[]").lower().rstrip(".")
        with self._cond:
            ctx = self._contexts.get(name)
            if ctx is None:
                ctx = server_context(self.ca.issue(name), alpn=["http/1.1"])
                self._contexts[name] = ctx
            return ctx

    async def _intercept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int
    ) -> None:
        def record(verdict: Outcome, line: str | None = None, **more: str) -> None:
            self._record(Connection(host, port, verdict, line, **more))

        try:
            await writer.start_tls(self._forged_context(host), ssl_handshake_timeout=TIMEOUT)
        except (OSError, ssl.SSLError, TimeoutError, EOFError) as exc:
            record("refused", detail=_tls_detail(exc, during_handshake=True))
            return
        self._track(writer)  # start_tls replaced the transport
        # The verdict hangs on one question: does any application byte follow the handshake?
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), _FIRST_BYTE_TIMEOUT)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                record("not-pinned", f"<{len(exc.partial)} bytes, no full line>")
            else:
                record("pinned", detail="closed after the handshake without a request")
            return
        except asyncio.LimitOverrunError:
            record("not-pinned", "<a line longer than 64 KiB>")
            return
        except asyncio.CancelledError:
            record("pinned", detail="no request before the program exited")
            raise
        except (OSError, ssl.SSLError, TimeoutError, EOFError) as exc:
            record("pinned", detail=_tls_detail(exc, during_handshake=False))
            return
        address = self._loopback(host)
        upstream = f"forwarded to {address}:{port}" if address else self._not_contacted(host)
        record("not-pinned", redact_request_line(line), upstream=upstream)
        if address is None:
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
            await reply(writer, "502 Bad Gateway", f"tlspin audit: upstream failed: {exc}")
            return
        up[1].write(line)
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

