"""Loopback HTTP proxies for tests: a CONNECT tunnel and an intercepting (MITM) proxy.

Both run an asyncio loop in one daemon thread, so the TLS-in-TLS legs are handled by asyncio's
memory-BIO SSL (one thread per SSL object; OpenSSL objects must not be shared across threads).
They only ever connect to loopback addresses: a target must be an IP literal on loopback,
``localhost``, or a name mapped in *resolve* to a loopback address; anything else is refused
with 403 and recorded, so a misconfigured test can never reach another machine.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

from tlspin._shared.loopserver import (
    TIMEOUT,
    LoopService,
    close_writer,
    read_body,
    read_head,
    reply,
    tunnel,
)
from tlspin._shared.net import resolve_loopback, split_target, url_host
from tlspin._shared.numbers import decimal
from tlspin.testing.pki import CA, Leaf, client_trust_context, server_context

__all__ = ["ConnectProxy", "MitmProxy", "resolve_loopback"]


class _LoopbackProxy(LoopService):
    """What both proxies do with a CONNECT: record its target, and reach loopback only."""

    def __init__(
        self, host: str, server_ssl: ssl.SSLContext | None, resolve: Mapping[str, str] | None
    ) -> None:
        super().__init__(host, server_ssl)
        self._resolve = dict(resolve or {})
        self._connects: list[str] = []

    @property
    def connects(self) -> list[str]:
        """Every CONNECT target (``"host:port"``), refused ones included."""
        with self._cond:
            return list(self._connects)

    async def _connect_target(
        self, writer: asyncio.StreamWriter, target: str, *, refused: str
    ) -> tuple[str, str, int] | None:
        """Record the CONNECT to *target*; return its host, loopback address and port.

        Answers 400 for a target that is not ``host:port``, and 403 (recording it in the list
        named *refused*) for one that does not resolve to loopback; then returns None.
        """
        self._append("_connects", target)
        try:
            host, port = split_target(target, 443)
        except ValueError as exc:
            self._append("_errors", f"CONNECT {target}: {exc}")
            await reply(writer, "400 Bad Request", f"expected CONNECT host:port ({exc})")
            return None
        address = resolve_loopback(host, self._resolve)
        if address is None:
            self._append(refused, target)
            await reply(writer, "403 Forbidden", f"refusing non-loopback target {target}")
            return None
        return host, address, port


class ConnectProxy(_LoopbackProxy):
    """HTTP proxy on loopback: CONNECT tunnels plus minimal absolute-form forwarding.

    Records `connects` (every CONNECT target ``"host:port"``), `refused` (targets it would not
    reach) and `forwarded` (request lines of absolute-form requests). ``https://`` absolute
    URIs are recorded and answered 502: a client must tunnel HTTPS, never ask a proxy to
    fetch it.
    """

    def __init__(
        self,
        *,
        tls_leaf: Leaf | None = None,
        resolve: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        """Configure the proxy; nothing listens until `start`.

        Args:
            tls_leaf: when given, clients speak TLS to the proxy (an "HTTPS proxy").
            resolve: host name → loopback IP for CONNECT targets (``localhost`` is built in).
            host: ``"127.0.0.1"`` or ``"::1"``.
        """
        ctx = server_context(tls_leaf) if tls_leaf is not None else None
        super().__init__(host, ctx, resolve)
        self._refused: list[str] = []
        self._forwarded: list[str] = []

    @property
    def refused(self) -> list[str]:
        """Targets refused with 403 because they are not loopback."""
        with self._cond:
            return list(self._refused)

    @property
    def forwarded(self) -> list[str]:
        """Request lines of absolute-form (non-CONNECT) requests."""
        with self._cond:
            return list(self._forwarded)

    def reset(self) -> None:
        """Clear the records."""
        with self._cond:
            for records in (self._connects, self._refused, self._forwarded, self._errors):
                records.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        if head is None:
            return
        start, headers, _ = head
        method, target, _version = [*start.split(" "), "", ""][:3]
        if method.upper() == "CONNECT":
            found = await self._connect_target(writer, target, refused="_refused")
            if found is None:
                return
            _, loopback, port = found
            try:
                upstream = await asyncio.wait_for(asyncio.open_connection(loopback, port), TIMEOUT)
                self._track(upstream[1])
            except (OSError, TimeoutError) as exc:
                self._append("_errors", f"CONNECT {target}: {exc}")
                await reply(writer, "502 Bad Gateway", str(exc))
                return
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            try:
                await tunnel((reader, writer), upstream, idle_timeout=TIMEOUT * 3)
            finally:
                await close_writer(upstream[1])
            return
        self._append("_forwarded", start)
        url = urlsplit(target)
        if url.scheme != "http" or not url.hostname:
            await reply(writer, "502 Bad Gateway", f"will not forward {url.scheme or target!r}")
            return
        address = resolve_loopback(url.hostname, self._resolve)
        if address is None:
            self._append("_refused", url.netloc)
            await reply(writer, "403 Forbidden", f"refusing non-loopback target {url.netloc}")
            return
        body = await read_body(reader, headers, until_eof=False)
        up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection(address, url.port or 80), TIMEOUT
        )
        self._track(up_writer)
        try:
            path = url.path or "/"
            lines = [f"{method} {path}{'?' + url.query if url.query else ''} HTTP/1.1"]
            lines += [
                f"{k}: {v}"
                for k, v in headers.items()
                if k not in ("connection", "proxy-connection", "proxy-authorization")
            ]
            lines.append("Connection: close")
            up_writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            await up_writer.drain()
            while data := await asyncio.wait_for(up_reader.read(65536), TIMEOUT):
                writer.write(data)
                await writer.drain()
        finally:
            await close_writer(up_writer)


class MitmProxy(_LoopbackProxy):
    """Intercepting proxy: forges a leaf per host, signed by its own CA, like mitmproxy.

    Forward mode (default) answers CONNECT, then terminates TLS toward the client with a leaf
    forged for the SNI (or CONNECT host), records each request line, forwards the request to
    the real upstream over verified TLS and relays the response. Reverse mode
    (*reverse_to*) listens with TLS directly and forwards to one upstream.

    Records: `intercepted` (``(host, request_line)``; request lines only, never headers or
    bodies), `refused` (hosts whose client aborted the handshake *or* completed it and then
    closed without sending a byte, which is what a pinned client does), `silent` (just the
    latter), `connects` and `blocked` (non-loopback CONNECT targets refused with 403). A client
    that sends bytes after CONNECT before its TLS handshake is neither: the connection is
    closed and the event goes to `errors`.
    """

    def __init__(
        self,
        *,
        ca: CA | None = None,
        upstream_ca: CA | Sequence[CA] | None = None,
        upstream_cafile: str | os.PathLike[str] | None = None,
        resolve: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        reverse_to: tuple[str, int] | None = None,
        reverse_host: str | None = None,
    ) -> None:
        """Configure the proxy; nothing listens until `start`.

        Args:
            ca: CA that signs forged leaves (default: a fresh ``"tlspin MITM CA"``).
            upstream_ca: CA(s) trusted when connecting to the real upstream.
            upstream_cafile: PEM file trusted when connecting to the real upstream.
            resolve: host name → loopback IP for upstream targets.
            host: ``"127.0.0.1"`` or ``"::1"``.
            reverse_to: ``(loopback_ip, port)`` of the upstream for reverse mode.
            reverse_host: the name reverse mode impersonates (default ``"localhost"``).
        """
        super().__init__(host, None, resolve)
        self.ca = ca if ca is not None else CA.root("tlspin MITM CA")
        self._upstream_ctx: ssl.SSLContext | None = None
        if upstream_ca is not None or upstream_cafile is not None:
            cas = [upstream_ca] if isinstance(upstream_ca, CA) else list(upstream_ca or [])
            self._upstream_ctx = client_trust_context(*cas, alpn=["http/1.1"])
            if upstream_cafile is not None:
                self._upstream_ctx.load_verify_locations(cafile=upstream_cafile)
        if reverse_to is not None and resolve_loopback(reverse_to[0]) is None:
            raise ValueError(f"expected a loopback reverse_to address; found {reverse_to[0]!r}")
        self._reverse_to = reverse_to
        self.reverse_host = reverse_host or "localhost"
        self._leaves: dict[str, Leaf] = {}
        self._contexts: dict[str, ssl.SSLContext] = {}
        # Keyed by the SSLObject itself (weakly), so a failed handshake cannot leave a stale
        # name behind for a later connection that happens to reuse the same id().
        self._sni_seen: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._forge_lock = threading.Lock()
        self._intercepted: list[tuple[str, str]] = []
        self._refused: list[str] = []
        self._silent: list[str] = []
        self._blocked: list[str] = []

    @property
    def url(self) -> str:
        """Proxy URL ``http://127.0.0.1:PORT``; reverse mode: ``https://REVERSE_HOST:PORT/``."""
        if self._reverse_to is not None:
            return f"https://{url_host(self.reverse_host)}:{self._port}/"
        return super().url

    @property
    def intercepted(self) -> list[tuple[str, str]]:
        """``(host, request_line)`` of every request read from a client."""
        with self._cond:
            return list(self._intercepted)

    @property
    def refused(self) -> list[str]:
        """Hosts whose client refused the forged certificate (see class docstring)."""
        with self._cond:
            return list(self._refused)

    @property
    def silent(self) -> list[str]:
        """Hosts whose client completed the handshake and closed without sending anything."""
        with self._cond:
            return list(self._silent)

    @property
    def blocked(self) -> list[str]:
        """CONNECT targets refused with 403 because they are not loopback."""
        with self._cond:
            return list(self._blocked)

    def reset(self) -> None:
        """Clear the records (forged leaves stay cached)."""
        with self._cond:
            for records in (
                self._intercepted,
                self._refused,
                self._silent,
                self._connects,
                self._blocked,
                self._errors,
            ):
                records.clear()

    def leaf_for(self, host: str) -> Leaf:
        """Return the leaf forged for *host* (forging and caching it on first use)."""
        return self._forge(host)[0]

    def _forge(self, host: str) -> tuple[Leaf, ssl.SSLContext]:
        name = host.strip("[]").lower().rstrip(".")
        with self._forge_lock:
            if name not in self._leaves:
                leaf = self.ca.issue(name)
                ctx = server_context(leaf, alpn=["http/1.1"])
                ctx.sni_callback = self._on_sni
                self._leaves[name], self._contexts[name] = leaf, ctx
            return self._leaves[name], self._contexts[name]

    def _on_sni(self, sslobj: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        if server_name:
            self._sni_seen[sslobj] = server_name
            sslobj.context = self._forge(server_name)[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._reverse_to is not None:
            await self._intercept(reader, writer, self.reverse_host, self._reverse_to)
            return
        head = await read_head(reader)
        if head is None:
            return
        # Nothing more may be read in clear: the client's next bytes must be its ClientHello,
        # and they belong to the TLS layer that start_tls() puts in place (see _intercept).
        cast("asyncio.Transport", writer.transport).pause_reading()
        start, _, _ = head
        method, target, _version = [*start.split(" "), "", ""][:3]
        if method.upper() != "CONNECT":
            await reply(writer, "405 Method Not Allowed", "this proxy only supports CONNECT")
            return
        found = await self._connect_target(writer, target, refused="_blocked")
        if found is None:
            return
        host, address, port = found
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await self._intercept(reader, writer, host, (address, port))

    async def _intercept(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        host: str,
        upstream_address: tuple[str, int],
    ) -> None:
        _, ctx = self._forge(host)  # P-256 keys take well under a millisecond to make
        cast("asyncio.Transport", writer.transport).pause_reading()
        early = len(getattr(reader, "_buffer", b""))
        if early:
            # Bytes sent before the client saw our 200 (a plaintext request, or a ClientHello
            # sent too early) would stay in the StreamReader across start_tls(): either read
            # later as if they had come through TLS, or the handshake would starve and the
            # client be recorded as "refused", i.e. pinned. Neither is true, so record neither.
            self._append(
                "_errors",
                f"{host}: the client sent {early} bytes before the TLS handshake (expected its "
                "ClientHello only after the proxy's 200); connection closed",
            )
            return
        try:
            await writer.start_tls(ctx, ssl_handshake_timeout=TIMEOUT)
        except (OSError, ssl.SSLError, TimeoutError, EOFError) as exc:
            self._append("_refused", host)
            self._append("_errors", f"handshake for {host}: {type(exc).__name__}: {exc}")
            return
        self._track(writer)  # start_tls replaced the transport
        sslobj = writer.get_extra_info("ssl_object")
        host = self._sni_seen.pop(sslobj, host)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        first = True
        try:
            while True:
                try:
                    head = await read_head(reader)
                except (OSError, ssl.SSLError):
                    # A reset before the first request byte is a silent client too: pinned
                    # clients close without close_notify, often while tickets are in flight.
                    if not first:
                        raise
                    head = None
                if head is None:
                    if first:
                        self._append("_silent", host)
                        self._append("_refused", host)
                    return
                first = False
                start, headers, raw = head
                self._append("_intercepted", (host, start))
                body = await read_body(reader, headers, until_eof=False)
                if upstream is None:
                    upstream = await self._open_upstream(host, upstream_address, writer)
                    if upstream is None:
                        return
                upstream[1].write(raw + body)
                await upstream[1].drain()
                if not await self._relay_response(upstream[0], writer, start):
                    return
        finally:
            if upstream is not None:
                await close_writer(upstream[1])

    async def _open_upstream(
        self, host: str, address: tuple[str, int], writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        if self._upstream_ctx is None:
            await reply(writer, "502 Bad Gateway", "no upstream CA configured for this proxy")
            return None
        try:
            opened = await asyncio.wait_for(
                asyncio.open_connection(
                    *address, ssl=self._upstream_ctx, server_hostname=host.strip("[]")
                ),
                TIMEOUT,
            )
            self._track(opened[1])
            return opened
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            self._append("_errors", f"upstream {host}: {type(exc).__name__}: {exc}")
            await reply(writer, "502 Bad Gateway", f"upstream failed: {exc}")
            return None

    async def _relay_response(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request_line: str
    ) -> bool:
        """Relay one response; return whether the connection may carry another request."""
        head = await read_head(reader)
        if head is None:
            return False
        start, headers, raw = head
        status = decimal([*start.split(" "), ""][1], max_digits=3)
        if status is None:
            raise ValueError(f"expected an HTTP status line, found {start[:60]!r}")
        no_body = request_line.startswith("HEAD ") or status in (204, 304) or status < 200
        framed = "content-length" in headers or "chunked" in headers.get("transfer-encoding", "")
        body = b"" if no_body else await read_body(reader, headers, until_eof=True)
        writer.write(raw + body)
        await writer.drain()
        return (no_body or framed) and headers.get("connection", "").lower() != "close"
