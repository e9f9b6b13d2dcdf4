"""Pinning for the standard library: ``http.client``, ``urllib.request`` and asyncio streams.

The stdlib takes an :class:`ssl.SSLContext` everywhere, so a context from
:func:`tlspin.create_context` is all it needs; these helpers only save the boilerplate and
add a pinned CONNECT tunnel for asyncio::

    policy = tlspin.PinPolicy.load("pins.toml")
    opener = tlspin.integrations.stdlib.build_opener(policy)
    opener.open("https://api.example.com/")

A pin failure surfaces as :class:`tlspin.PinMismatchError` (an
:class:`ssl.SSLCertVerificationError`) from ``http.client`` and asyncio, and as
``urllib.error.URLError(reason=PinMismatchError)`` from ``urllib.request``.

The asyncio upgrades (:func:`start_tls`, :func:`open_tunnel`) refuse a stream that holds bytes
received before the TLS handshake: asyncio would hand them to the application's first read as
if the pinned server had sent them through TLS.
"""

from __future__ import annotations

import asyncio
import http.client
import ssl
import urllib.request
from typing import Any, cast

from tlspin.context import PolicySource
from tlspin.exceptions import PinningUnavailableError
from tlspin.integrations._common import check_proxy_context, pinned_context
from tlspin.policy import PinPolicy

__all__ = [
    "build_opener",
    "https_connection",
    "https_handler",
    "open_connection",
    "open_tunnel",
    "start_tls",
]


def https_connection(
    host: str,
    port: int | None = None,
    policy: PinPolicy | PolicySource | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    cafile: str | None = None,
    capath: str | None = None,
    cadata: str | bytes | None = None,
    timeout: float | None = None,
    tunnel_via: tuple[str, int] | None = None,
    tunnel_headers: dict[str, str] | None = None,
) -> http.client.HTTPSConnection:
    """Return an ``http.client.HTTPSConnection`` that checks pins in its handshake.

    Args:
        host: the origin host (its name is the SNI and the key for pins).
        port: the origin port (default 443).
        policy: the pins; or pass a pinned *ssl_context* instead.
        ssl_context: a context already pinned with :func:`tlspin.pin_context`.
        cafile: CA bundle to trust instead of the system store (with *policy* only).
        capath: CA directory to trust instead of the system store (with *policy* only).
        cadata: PEM CAs to trust instead of the system store (with *policy* only).
        timeout: socket timeout in seconds.
        tunnel_via: ``(proxy_host, proxy_port)`` of an HTTP proxy to tunnel through with
            CONNECT; the pins apply to *host*, inside the tunnel.
        tunnel_headers: extra headers for the CONNECT request (e.g. Proxy-Authorization).

    Example::

        conn = https_connection("api.example.com", policy=policy)
        conn.request("GET", "/")
        print(conn.getresponse().status)
    """
    ctx = pinned_context(
        policy, ssl_context=ssl_context, cafile=cafile, capath=capath, cadata=cadata
    )
    kwargs: dict[str, Any] = {"context": ctx}
    if timeout is not None:
        kwargs["timeout"] = timeout
    if tunnel_via is None:
        return http.client.HTTPSConnection(host, port, **kwargs)
    proxy_host, proxy_port = tunnel_via
    conn = http.client.HTTPSConnection(proxy_host, proxy_port, **kwargs)
    conn.set_tunnel(host, port, headers=tunnel_headers)
    return conn


def https_handler(
    policy: PinPolicy | PolicySource | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    cafile: str | None = None,
    capath: str | None = None,
    cadata: str | bytes | None = None,
) -> urllib.request.HTTPSHandler:
    """Return a ``urllib.request.HTTPSHandler`` whose connections check pins.

    Example::

        opener = urllib.request.build_opener(https_handler(policy))
        with opener.open("https://api.example.com/") as response:
            body = response.read()
    """
    ctx = pinned_context(
        policy, ssl_context=ssl_context, cafile=cafile, capath=capath, cadata=cadata
    )
    return urllib.request.HTTPSHandler(context=ctx)


def build_opener(
    policy: PinPolicy | PolicySource | None = None,
    *handlers: urllib.request.BaseHandler,
    ssl_context: ssl.SSLContext | None = None,
    cafile: str | None = None,
    capath: str | None = None,
    cadata: str | bytes | None = None,
) -> urllib.request.OpenerDirector:
    """Return a ``urllib.request`` opener that checks pins on every HTTPS request.

    Extra *handlers* (e.g. a ``ProxyHandler``) are added as ``urllib.request.build_opener``
    adds them; HTTPS through an HTTP proxy is tunnelled with CONNECT and pinned to the origin.

    Example::

        opener = build_opener(policy, urllib.request.ProxyHandler({"https": proxy_url}))
        with opener.open("https://api.example.com/") as response:
            body = response.read()
    """
    handler = https_handler(
        policy, ssl_context=ssl_context, cafile=cafile, capath=capath, cadata=cadata
    )
    return urllib.request.build_opener(handler, *handlers)


async def open_connection(
    host: str,
    port: int,
    policy: PinPolicy | PolicySource | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    cafile: str | None = None,
    capath: str | None = None,
    cadata: str | bytes | None = None,
    server_hostname: str | None = None,
    **kwargs: Any,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a pinned TLS stream with :func:`asyncio.open_connection`.

    *server_hostname* overrides the SNI name (and so the host whose pins apply); other keyword
    arguments go to :func:`asyncio.open_connection`.

    Example::

        reader, writer = await open_connection("api.example.com", 443, policy)
        writer.write(b"GET / HTTP/1.1\\r\\nHost: api.example.com\\r\\n\\r\\n")
        status_line = await reader.readline()
    """
    ctx = pinned_context(
        policy, ssl_context=ssl_context, cafile=cafile, capath=capath, cadata=cadata
    )
    if server_hostname is not None:
        kwargs["server_hostname"] = server_hostname
    return await asyncio.open_connection(host, port, ssl=ctx, **kwargs)


async def start_tls(
    writer: asyncio.StreamWriter,
    policy: PinPolicy | PolicySource | None = None,
    *,
    server_hostname: str,
    ssl_context: ssl.SSLContext | None = None,
    cafile: str | None = None,
    capath: str | None = None,
    cadata: str | bytes | None = None,
    ssl_handshake_timeout: float | None = None,
) -> None:
    """Upgrade an open stream to pinned TLS, e.g. after a manual CONNECT to a proxy.

    Bytes already received on the stream and not yet read would come out of the first read
    after the upgrade, mixed with what the server sends through TLS; they cannot have come
    through TLS, so the upgrade is refused and the stream closed. Read exactly the proxy's
    response head before calling this.

    Raises:
        PinningUnavailableError: the stream holds bytes received before the handshake (reason
            ``"cleartext-before-tls"``).

    .. versionchanged:: Unreleased
        Refuses a stream holding bytes received before the handshake (they came out of the
        first read as if the server had sent them through TLS).

    Example::

        reader, writer = await asyncio.open_connection(proxy_host, proxy_port)
        ...  # send CONNECT api.example.com:443, read the 200 response head
        await start_tls(writer, policy, server_hostname="api.example.com")
    """
    ctx = pinned_context(
        policy, ssl_context=ssl_context, cafile=cafile, capath=capath, cadata=cadata
    )
    try:
        await _upgrade(writer, ctx, server_hostname, ssl_handshake_timeout)
    except BaseException:
        # abort(), not close(): nothing may be flushed, and a graceful close of TLS to a proxy
        # would wait for the proxy's close_notify.
        writer.transport.abort()
        raise


async def _upgrade(
    writer: asyncio.StreamWriter,
    ctx: ssl.SSLContext,
    server_hostname: str,
    ssl_handshake_timeout: float | None,
) -> None:
    """Start TLS on *writer*'s stream, refusing bytes received before the handshake."""
    # StreamWriter.start_tls keeps the StreamReader, and its buffer, across the upgrade: bytes
    # a proxy sent after its CONNECT response would be returned by the first read after the
    # handshake, as if the pinned origin had sent them. asyncio offers no public way to look
    # at that buffer; _reader and _buffer have been there since Python 3.4.
    reader = getattr(writer, "_reader", None)
    buffered = getattr(reader, "_buffer", None)
    if not isinstance(buffered, bytearray):  # Defensive: not CPython's asyncio streams.
        msg = (
            f"refused to start TLS to {server_hostname}: cannot tell whether the stream holds "
            "bytes received before the handshake (expected an asyncio StreamWriter with its "
            f"StreamReader, found {type(writer).__name__})"
        )
        raise PinningUnavailableError(
            msg, hostname=server_hostname, reason="cleartext-before-tls"
        )
    if buffered:
        msg = (
            f"refused to start TLS to {server_hostname}: {len(buffered)} bytes arrived on the "
            "stream before the TLS handshake (expected none after the proxy's response head); "
            "they would have been read as if the server had sent them through TLS"
        )
        raise PinningUnavailableError(
            msg, hostname=server_hostname, reason="cleartext-before-tls"
        )
    # From here on nothing reaches the StreamReader until loop.start_tls has put the TLS
    # protocol in its place: later bytes are fed to TLS, which rejects them.
    cast("asyncio.Transport", writer.transport).pause_reading()
    await writer.start_tls(
        ctx, server_hostname=server_hostname, ssl_handshake_timeout=ssl_handshake_timeout
    )


async def open_tunnel(
    proxy_host: str,
    proxy_port: int,
    host: str,
    port: int,
    policy: PinPolicy | PolicySource | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    cafile: str | None = None,
    capath: str | None = None,
    cadata: str | bytes | None = None,
    proxy_ssl: ssl.SSLContext | None = None,
    proxy_headers: dict[str, str] | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a pinned TLS stream to *host* through an HTTP(S) proxy's CONNECT tunnel.

    Args:
        proxy_host: the proxy's host.
        proxy_port: the proxy's port.
        host: the origin host; its pins apply inside the tunnel.
        port: the origin port.
        policy: the pins; or pass a pinned *ssl_context* instead.
        ssl_context: a context already pinned with :func:`tlspin.pin_context`.
        cafile: CA bundle for the origin (with *policy* only).
        capath: CA directory for the origin (with *policy* only).
        cadata: PEM CAs for the origin (with *policy* only).
        proxy_ssl: a context for TLS to the proxy itself (an ``https://`` proxy; the origin's
            TLS then runs inside the proxy's TLS). None for a plain HTTP proxy. If the policy
            pins *proxy_host*, it must be pinned for it too (:func:`tlspin.create_context`).
        proxy_headers: extra CONNECT headers (e.g. Proxy-Authorization).

    Raises:
        PinConfigurationError: the policy pins *proxy_host* and *proxy_ssl* would not check it.
        ConnectionError: the proxy refused the tunnel.
        PinningUnavailableError: the proxy sent bytes after its response head, before the
            TLS handshake (reason ``"cleartext-before-tls"``).

    Example::

        reader, writer = await open_tunnel("127.0.0.1", 3128, "api.example.com", 443, policy)
        writer.write(b"GET / HTTP/1.1\\r\\nHost: api.example.com\\r\\n\\r\\n")
        status_line = await reader.readline()
    """
    ctx = pinned_context(
        policy, ssl_context=ssl_context, cafile=cafile, capath=capath, cadata=cadata
    )
    if proxy_ssl is not None:
        check_proxy_context(ctx, proxy_host, proxy_ssl)
    # The stream's default 64 KiB limit also bounds the CONNECT response head.
    reader, writer = await asyncio.open_connection(proxy_host, proxy_port, ssl=proxy_ssl)
    try:
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        await _connect(reader, writer, f"{proxy_host}:{proxy_port}", target, proxy_headers)
        await _upgrade(writer, ctx, host, None)
    except BaseException:
        writer.transport.abort()
        raise
    return reader, writer


async def _connect(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    proxy: str,
    authority: str,
    headers: dict[str, str] | None,
) -> None:
    """Ask the proxy for a tunnel to *authority*; raise ConnectionError unless it agrees."""
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    await writer.drain()
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        msg = f"proxy {proxy} closed or garbled the CONNECT response"
        raise ConnectionError(msg) from exc
    status = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].startswith("2"):
        msg = f"proxy {proxy} refused CONNECT {authority}: expected a 2xx status, found {status!r}"
        raise ConnectionError(msg)
