"""Limits against slow and greedy clients: connections per client IP, head and body deadlines.

Report intake is public, so a sender can open many connections and feed them a byte at a time
(slowloris): a request that never completes holds a connection, a task and memory for good,
and the per-IP report rate limit never sees it, because it counts requests that have started.
Two layers bound that:

* :class:`RequestLimits`, ASGI middleware in the app, gives every request *body_timeout*
  seconds to deliver its whole body; a slower one gets 408 and its connection is closed. It
  caps every body's size (413, by Content-Length and while it streams) and refuses chunked
  bodies (411). It works under any ASGI server.
* :class:`GuardedHTTP`, a uvicorn HTTP protocol (``uvicorn.Config(http=GuardedHTTP)``; ``tlspin
  serve`` uses it), wraps uvicorn's own: it counts open connections per client IP from the
  TCP accept (before any TLS handshake, which it performs itself when the app has a
  certificate) and answers 429 to one over *max_connections_per_ip*, and closes a connection
  that takes more than *header_timeout* seconds to send a request's head (counted from the
  moment it opens, or since its response started) or to take a response it is sent. It refuses
  a ``Transfer-Encoding`` request before the HTTP parser sees a byte of it: a body dripped in
  one-byte chunks costs the pure-Python parser thousands of events, a stall of the whole event
  loop. A server knows about a connection before any request exists, so this part cannot live
  in the app.

Both read their limits from the app's :class:`~tlspin.collector.settings.Settings`; the
protocol finds the app's :class:`ConnectionGuard` through ``config.loaded_app``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

from tlspin._shared.numbers import decimal

__all__ = [
    "BodyTimeout", "BodyTooLarge", "ConnectionGuard", "GuardedHTTP", "RequestLimits", "peer_key",
    "server_ssl_context",
]

log = logging.getLogger("tlspin.collector")

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_ASGIApp = Callable[[_Scope, _Receive, _Send], Awaitable[None]]


class BodyTimeout(HTTPException):
    """A request body did not arrive in time: 408, and the connection is closed.

    An ``HTTPException``, so that every route answers it the same way, FastAPI's body parsing
    included (it passes HTTP exceptions through).
    """

    def __init__(self, seconds: float) -> None:
        super().__init__(
            408, f"the request body did not arrive within {seconds:g} seconds",
            headers={"Connection": "close"},
        )


class BodyTooLarge(HTTPException):
    """A request body exceeded the cap while it arrived: 413, and the connection is closed."""

    def __init__(self, cap: int) -> None:
        super().__init__(413, f"the request body exceeds {cap} bytes",
                         headers={"Connection": "close"})


def server_ssl_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """The TLS context of an HTTPS collector (TLS 1.2 or later, the chain in *certfile*).

    Raises:
        OSError, ssl.SSLError: a file cannot be read or the key does not match.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    return context


class ConnectionGuard:
    """One app's connection bookkeeping, shared by its :class:`GuardedHTTP` connections and its
    :class:`RequestLimits` middleware (one event loop: no locks).

    Args:
        max_per_ip: open connections allowed per client IP (the TCP peer; an IPv6 peer counts
            by its /64); None for no limit.
        header_timeout: seconds a connection may take to send a request head.
        on_refused: called with a reason (``"too-many-connections"``, ``"slow-head"``,
            ``"slow-read"``, ``"chunked"``) each time a connection is refused or closed, for
            the metrics.
        ssl_context: serve TLS with it (:class:`GuardedHTTP` does the handshake, within the
            cap and the head deadline); None for plain HTTP, or TLS done by the server.
    """

    def __init__(self, *, max_per_ip: int | None, header_timeout: float,
                 on_refused: Callable[[str], None] | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.max_per_ip = max_per_ip
        self.header_timeout = header_timeout
        self.ssl_context = ssl_context
        self._on_refused = on_refused
        self._open: dict[str, int] = {}
        self._by_client: dict[tuple[str, int], GuardedHTTP] = {}

    def open_connections(self, ip: str) -> int:
        """How many connections *ip* (a :func:`peer_key`) holds now."""
        return self._open.get(ip, 0)

    def admit(self, ip: str) -> bool:
        """Take a place for a new connection from *ip*; False (and counted) over the cap."""
        count = self._open.get(ip, 0)
        if self.max_per_ip is not None and count >= self.max_per_ip:
            self.refused("too-many-connections")
            return False
        self._open[ip] = count + 1
        return True

    def release(self, ip: str) -> None:
        """Give back the place of a closed connection from *ip*."""
        count = self._open.pop(ip, 0) - 1
        if count > 0:
            self._open[ip] = count

    def attach(self, client: tuple[str, int], connection: GuardedHTTP) -> None:
        """Let requests from *client* (address, port) reach *connection*'s head deadline."""
        self._by_client[client] = connection

    def detach(self, client: tuple[str, int], connection: GuardedHTTP) -> None:
        """Forget *connection* (closed)."""
        if self._by_client.get(client) is connection:
            del self._by_client[client]

    def refused(self, reason: str) -> None:
        """Count one refusal."""
        if self._on_refused is not None:
            self._on_refused(reason)

    def request_started(self, client: Any) -> None:
        """A request of the connection from *client* (the ASGI ``client``) reached the app:
        its head is complete, so the head deadline stops."""
        connection = self._by_client.get(tuple(client)) if client else None
        if connection is not None:
            connection.disarm()

    def request_finished(self, client: Any) -> None:
        """The response went out: the next request's head gets a fresh deadline."""
        connection = self._by_client.get(tuple(client)) if client else None
        if connection is not None:
            connection.arm()

    def response_sending(self, client: Any) -> None:
        """A part of a response is about to be sent: the client has *header_timeout* seconds
        to take it (a client that never reads would otherwise hold the connection for good,
        its response waiting to drain)."""
        connection = self._by_client.get(tuple(client)) if client else None
        if connection is not None:
            connection.arm("slow-read")


class RequestLimits:
    """ASGI middleware: the body deadline of every request, and the head-deadline signals for
    :class:`GuardedHTTP`.

    Args:
        app: the application to wrap.
        guard: the app's :class:`ConnectionGuard`.
        body_timeout: seconds from the start of a request until its whole body has arrived.
        max_body: the most bytes any request body may have; routes cap their own bodies lower.
    """

    def __init__(self, app: _ASGIApp, *, guard: ConnectionGuard, body_timeout: float,
                 max_body: int) -> None:
        self.app = app
        self.guard = guard
        self.body_timeout = body_timeout
        self.max_body = max_body

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        guard = self.guard
        client = scope.get("client")
        guard.request_started(client)
        refusal = self._refusal(scope)
        if refusal is not None:
            guard.response_sending(client)
            await _send_refusal(send, *refusal)
            guard.request_finished(client)
            return
        seconds = self.body_timeout
        deadline = asyncio.get_running_loop().time() + seconds
        complete = False
        cap = self.max_body
        size = 0

        async def receive_in_time() -> _Message:
            nonlocal complete, size
            if complete:  # after the body, receive() only waits for a disconnect
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(seconds) from None
            size += len(message.get("body", b""))
            if size > cap:
                raise BodyTooLarge(cap)
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        async def send_and_signal(message: _Message) -> None:
            kind = message["type"]
            if kind in ("http.response.start", "http.response.body"):
                guard.response_sending(client)
            await send(message)
            if kind == "http.response.body" and not message.get("more_body", False):
                guard.request_finished(client)

        await self.app(scope, receive_in_time, send_and_signal)

    def _refusal(self, scope: _Scope) -> tuple[int, str] | None:
        """(status, reason) for a request refused on its head alone, else None."""
        for name, value in scope["headers"]:
            if name == b"transfer-encoding":
                return 411, "a request body must come with Content-Length, not chunked"
            if name == b"content-length":
                # ASCII digits only: "²" passes str.isdigit(), and int() refuses it.
                declared = decimal(value)
                if declared is None:
                    return 400, "Content-Length is not a number"
                if declared > self.max_body:
                    return 413, f"the request body exceeds {self.max_body} bytes"
        return None


async def _send_refusal(send: _Send, status: int, reason: str) -> None:
    body = json.dumps({"status": "rejected", "reason": reason}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def peer_key(ip: str) -> str:
    """The key a connection counts under: its IPv4 address, or its IPv6 /64.

    One IPv6 subscriber holds a whole /64 (RFC 6177) and can use a new address for each
    connection, so counting single IPv6 addresses would cap nothing.
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # an IPv4 client on a dual-stack socket
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _guard_of(app: Any) -> ConnectionGuard | None:
    """The :class:`ConnectionGuard` of a collector app, looking through uvicorn's wrappers."""
    for _ in range(8):
        state = getattr(getattr(app, "state", None), "tlspin", None)
        if state is not None:
            guard: ConnectionGuard = state.connections
            return guard
        app = getattr(app, "app", None)
        if app is None:
            break
    return None


def _raw_response(status: bytes, reason: str, extra: bytes = b"") -> bytes:
    body = json.dumps({"status": "rejected", "reason": reason}).encode()
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n" + extra
        + b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n"
        + body
    )


_TOO_MANY_RESPONSE = _raw_response(b"429 Too Many Requests",
                                   "too many open connections from this address",
                                   b"retry-after: 5\r\n")
_CHUNKED_RESPONSE = _raw_response(
    b"411 Length Required", "a request body must come with Content-Length, not chunked")
# A Transfer-Encoding header line, in any case. Found by a search of the raw bytes: a JSON or
# form body cannot hold a line break followed by a bare word, so only a request head matches.
# LF, not CR LF: h11 (and llhttp) end a head's lines at a bare LF too.
_TRANSFER_ENCODING = re.compile(rb"\n[Tt][Rr][Aa][Nn][Ss][Ff][Ee][Rr]-[Ee][Nn][Cc][Oo][Dd]"
                                rb"[Ii][Nn][Gg][ \t]*:")
# The last bytes received, however many reads they came in, so that a match split across reads
# (a head dripped a byte at a time) is found.
_TAIL = 24


class GuardedHTTP(asyncio.Protocol):
    """uvicorn's HTTP protocol, behind a per-IP connection cap and a request-head deadline.

    Pass the class as ``uvicorn.Config(http=GuardedHTTP, ws="none")`` or ``uvicorn --http
    tlspin.collector.limits:GuardedHTTP --ws none``: uvicorn builds one per connection, with
    the arguments of its own protocols. It serves a collector app (created by
    :func:`~tlspin.collector.create_app`); for any other app it only forwards. Only the
    ``asyncio.Protocol`` methods are forwarded, so WebSocket upgrades, which replace the
    protocol, must stay off (``ws="none"``; the collector has no WebSocket route).

    With a certificate in the app's settings, give uvicorn no TLS options: this protocol
    counts the connection at the TCP accept, then runs the TLS handshake itself
    (``loop.start_tls``, with *header_timeout* as the handshake timeout), so that idle
    connections that never send a ClientHello count against the cap and the deadline too.
    """

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        self._inner: Any = AutoHTTPProtocol(  # type: ignore[call-arg]
            config=config, server_state=server_state, app_state=app_state, _loop=_loop
        )
        self._loop = _loop or asyncio.get_running_loop()
        self._guard = _guard_of(config.loaded_app)
        self._transport: asyncio.Transport | None = None
        self._ip: str | None = None
        self._client: tuple[str, int] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_reason = "slow-head"
        self._refused = False
        self._forwarding = False  # uvicorn's protocol has its connection_made
        self._early: list[bytes] = []  # decrypted before the handshake task resumed
        self._early_eof = False
        self._tail = b""
        self._handshake: asyncio.Task[None] | None = None

    # -- the head deadline ----------------------------------------------------------------
    def arm(self, reason: str = "slow-head") -> None:
        """Start (again) the time allowed for the next request head (or, with *reason*
        ``"slow-read"``, for the client to take the response being sent)."""
        self.disarm()
        if self._guard is not None and self._transport is not None:
            self._timer_reason = reason
            self._timer = self._loop.call_later(self._guard.header_timeout, self._expire)

    def disarm(self) -> None:
        """Stop the head deadline (a request reached the app)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self._transport is not None and not self._transport.is_closing():
            if self._guard is not None:
                self._guard.refused(self._timer_reason)
            # abort(), not close(): close() would wait to flush a response that a client
            # who never reads never takes.
            self._transport.abort()

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Count the connection against its IP's cap (refusing it over the cap), start the
        TLS handshake if this protocol does TLS, then hand the connection to uvicorn."""
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        guard = self._guard
        if guard is not None:
            from uvicorn.protocols.utils import get_remote_addr

            self._client = get_remote_addr(transport)
            ip = peer_key(self._client[0]) if self._client else "unknown"
            if not guard.admit(ip):
                self._refused = True
                if guard.ssl_context is None:  # a TLS client could not read it
                    transport.write(_TOO_MANY_RESPONSE)
                transport.close()
                return
            self._ip = ip
            if self._client is not None:
                guard.attach(self._client, self)
            self.arm()
            if guard.ssl_context is not None:
                self._handshake = self._loop.create_task(
                    self._start_tls(transport, guard.ssl_context, guard.header_timeout))
                return
        self._forward_connection(transport)

    async def _start_tls(self, raw: asyncio.Transport, context: ssl.SSLContext,
                         timeout: float) -> None:
        try:
            tls = await self._loop.start_tls(raw, self, context, server_side=True,
                                             ssl_handshake_timeout=timeout)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError, RuntimeError):
            raw.close()  # connection_lost (from the TLS layer) releases the place
            return
        if tls is None or self._transport is None:  # closed while the handshake ended
            return
        self._transport = tls
        if self._timer is not None:
            self.arm()  # the same deadline covers the head; re-armed on the TLS transport
        self._forward_connection(tls)

    def _forward_connection(self, transport: asyncio.Transport) -> None:
        self._forwarding = True
        self._inner.connection_made(transport)
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)
        if self._early_eof:
            self.eof_received()

    def data_received(self, data: bytes) -> None:
        """Forward to uvicorn (nothing from a refused connection, nor a chunked request)."""
        if self._refused:
            return
        if not self._forwarding:
            self._early.append(data)
            return
        if self._guard is not None:
            if _TRANSFER_ENCODING.search(data) or (
                self._tail and _TRANSFER_ENCODING.search(self._tail + data[:_TAIL])
            ):
                self._refuse_chunked()
                return
            self._tail = data[-_TAIL:] if len(data) >= _TAIL else (self._tail + data)[-_TAIL:]
        self._inner.data_received(data)

    def _refuse_chunked(self) -> None:
        transport = self._transport
        idle = self._timer is not None and self._timer_reason == "slow-head"
        self.disarm()
        if self._guard is not None:
            self._guard.refused("chunked")
        if transport is not None and not transport.is_closing():
            if idle:  # no response of an earlier request is under way
                transport.write(_CHUNKED_RESPONSE)
            transport.close()

    def eof_received(self) -> bool | None:
        """Forward to uvicorn."""
        if self._refused:
            return None
        if not self._forwarding:
            self._early_eof = True
            return None
        result: bool | None = self._inner.eof_received()
        return result

    def pause_writing(self) -> None:
        """Forward to uvicorn's flow control."""
        if self._forwarding and not self._refused:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        """Forward to uvicorn's flow control."""
        if self._forwarding and not self._refused:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        """Release the connection's place, then tell uvicorn."""
        self.disarm()
        guard = self._guard
        if guard is not None:
            if self._ip is not None:
                guard.release(self._ip)
                self._ip = None
            if self._client is not None:
                guard.detach(self._client, self)
        self._transport = None
        if self._forwarding and not self._refused:
            self._forwarding = False
            self._inner.connection_lost(exc)
