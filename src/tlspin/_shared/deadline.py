"""One HTTP/1.1 exchange bounded by an overall deadline (stdlib only).

A socket timeout bounds each ``recv``, not the exchange: a server that sends one byte a second
keeps every read short and a request alive forever. Here one deadline covers all of it: name
resolution, the TCP connect, the TLS handshake, the request, the response head and the body.
A watchdog timer shuts the socket down when the deadline passes, which ends any read or handshake
blocked on it; the exchange then fails with :class:`TimeoutError`.

Used by the bundle updater's fetch and by the violation reporter's POST.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tlspin._shared.net import unblock_socket
from tlspin._shared.numbers import decimal

__all__ = ["AddressRefusedError", "Deadline", "Response", "exchange"]


class AddressRefusedError(ValueError):
    """Every address the host name resolved to was refused by the caller's ``allow_address``.

    A ``ValueError``: the destination is unusable as configured, and no retry changes that.
    """


class Deadline:
    """A point in time after which an exchange is abandoned, and the watchdog that enforces it.

    Args:
        seconds: time allowed from now.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self._at = time.monotonic() + self.seconds
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._fired = False
        self._timer: threading.Timer | None = None

    @property
    def fired(self) -> bool:
        """True once the watchdog (or :meth:`fire`) has shut the sockets down."""
        return self._fired

    @property
    def expired(self) -> bool:
        """True once the deadline has passed or :meth:`fire` was called."""
        return self._fired or time.monotonic() >= self._at

    def remaining(self) -> float:
        """Seconds left.

        Raises:
            TimeoutError: none are left.
        """
        left = self._at - time.monotonic()
        if left <= 0 or self._fired:
            raise self.error()
        return left

    def error(self) -> TimeoutError:
        """The error an exchange that ran out of time ends with."""
        return TimeoutError(
            f"timed out: the exchange (connect, TLS handshake, response head and body) "
            f"took longer than {self.seconds:g} s"
        )

    def watch(self, sock: socket.socket) -> None:
        """Shut *sock* down when the deadline passes (at once if it already has)."""
        with self._lock:
            self._sockets.append(sock)
            fired = self._fired
        if fired:
            unblock_socket(sock)

    def fire(self) -> None:
        """End the exchange now: shut down every watched socket (also used to cancel)."""
        with self._lock:
            self._fired = True
            sockets = list(self._sockets)
        for sock in sockets:
            unblock_socket(sock)

    @contextlib.contextmanager
    def running(self) -> Iterator[Deadline]:
        """Arm the watchdog for the duration of the block."""
        timer = threading.Timer(max(0.0, self._at - time.monotonic()), self.fire)
        timer.daemon = True
        timer.start()
        try:
            yield self
        finally:
            timer.cancel()


_Address = tuple[int, int, int, Any]


def _resolve(host: str, port: int, deadline: Deadline) -> list[_Address]:
    """``getaddrinfo`` cannot be interrupted, so it runs in a daemon thread that may outlive us."""
    name = host.strip("[]")
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(name)
        return _addresses(socket.getaddrinfo(name, port, type=socket.SOCK_STREAM))  # no thread
    result: list[list[_Address] | OSError] = []

    def lookup() -> None:
        try:
            result.append(_addresses(socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)))
        except OSError as exc:
            result.append(exc)

    worker = threading.Thread(target=lookup, name="tlspin-resolve", daemon=True)
    worker.start()
    worker.join(deadline.remaining())
    if not result:
        raise deadline.error()
    found = result[0]
    if isinstance(found, OSError):
        raise found
    return found


def _addresses(infos: list[tuple[Any, ...]]) -> list[_Address]:
    return [(family, kind, proto, address) for family, kind, proto, _, address in infos]


def _connect(
    host: str,
    port: int,
    context: ssl.SSLContext | None,
    deadline: Deadline,
    allow_address: Callable[[str], bool] | None = None,
) -> socket.socket:
    error: OSError | None = None
    refused: list[str] = []
    for family, kind, proto, address in _resolve(host, port, deadline):
        # The check is on the very address connected to, after resolution: a name that
        # resolves (or is rebound) to 127.0.0.1, or "127.1", is caught like the literal.
        if allow_address is not None and not allow_address(str(address[0])):
            refused.append(str(address[0]))
            continue
        sock = socket.socket(family, kind, proto)
        deadline.watch(sock)
        try:
            sock.settimeout(deadline.remaining())
            sock.connect(address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if context is None:
                return sock
            # wrap_socket detaches *sock*: watch the TLS socket before its handshake starts, so
            # the watchdog can cut a handshake the server drips out. The handshake runs the pin
            # check of a pinned context.
            tls = context.wrap_socket(
                sock, server_hostname=host.strip("[]"), do_handshake_on_connect=False
            )
            deadline.watch(tls)
            try:
                tls.do_handshake()
            except BaseException:
                tls.close()
                raise
            return tls
        except OSError as exc:
            sock.close()
            if deadline.expired:
                raise deadline.error() from None
            error = exc
    if error is None and refused:
        raise AddressRefusedError(
            f"{host} resolved to {', '.join(refused)}, which this connection may not reach"
        )
    raise error or OSError(f"{host} resolved to no address")


@dataclass(frozen=True, slots=True)
class Response:
    """A response read within the deadline.

    Attributes:
        status: the HTTP status code.
        headers: the response headers (``http.client.HTTPMessage``, case-insensitive).
        body: the body, or its first *max_body* bytes when *truncated*.
        truncated: True when the body was longer than *max_body* (the rest was never read).
    """

    status: int
    headers: http.client.HTTPMessage
    body: bytes
    truncated: bool

    def header(self, name: str) -> str | None:
        """One header's value, or None."""
        return self.headers.get(name)


def exchange(
    method: str,
    host: str,
    port: int,
    target: str,
    *,
    context: ssl.SSLContext | None,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    max_body: int = 64 * 1024,
    deadline: Deadline | None = None,
    allow_address: Callable[[str], bool] | None = None,
) -> Response:
    """Send one request and read its response, all within *timeout* seconds.

    Args:
        method: ``GET``, ``POST``…
        host: the server's host name (also the TLS server name).
        port: the TCP port.
        target: the request target (path and query).
        context: TLS context, or None for plain HTTP.
        timeout: seconds allowed for the whole exchange.
        headers: request headers.
        body: request body.
        max_body: most body bytes read; past it reading stops and *truncated* is set. A
            ``Content-Length`` over it stops reading at once.
        deadline: a :class:`Deadline` to use (so another thread can :meth:`Deadline.fire` it
            to cancel); by default a new one of *timeout* seconds.
        allow_address: called with each address *host* resolves to (``"127.0.0.1"``,
            ``"::1"``…) before connecting to it; addresses it refuses are skipped.

    Raises:
        AddressRefusedError: *allow_address* refused every address (a ``ValueError``).
        TimeoutError: the deadline passed.
        OSError: the connection, the TLS handshake (pin failures included) or the exchange failed.
        http.client.HTTPException: the response is not valid HTTP.
    """
    deadline = deadline or Deadline(timeout)
    with deadline.running():
        try:
            response = _exchange(
                method, host, port, target,
                context=context, headers=headers, body=body, max_body=max_body,
                deadline=deadline, allow_address=allow_address,
            )
        except (OSError, http.client.HTTPException, ValueError):
            # A read cut short by the watchdog surfaces as whatever the socket said; say why.
            if deadline.expired:
                raise deadline.error() from None
            raise
    if deadline.fired:
        # The watchdog cut the socket: http.client may have taken the cut for the end of the
        # head or of the body, so what was read is not the whole response.
        raise deadline.error()
    return response


def _exchange(
    method: str,
    host: str,
    port: int,
    target: str,
    *,
    context: ssl.SSLContext | None,
    headers: Mapping[str, str] | None,
    body: bytes | None,
    max_body: int,
    deadline: Deadline,
    allow_address: Callable[[str], bool] | None = None,
) -> Response:
    conn_class = http.client.HTTPSConnection if context is not None else http.client.HTTPConnection
    conn = conn_class(host, port, timeout=deadline.remaining())
    try:
        # The connection is opened here, under the deadline, and handed to http.client.
        conn.sock = _connect(host, port, context, deadline, allow_address)
        conn.request(method, target, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        declared = response.getheader("Content-Length")
        # Only ASCII digits are a length ("²" passes str.isdigit(), int() refuses it; int()
        # reads "1_0" and "٣"): anything else is a malformed response (RFC 9112 §6.3).
        length = None if declared is None else decimal(declared.strip())
        if declared is not None and length is None:
            raise http.client.HTTPException(
                f"expected a Content-Length of ASCII digits, found {declared[:40]!r}"
            )
        if length is not None and length > max_body:
            return Response(response.status, response.headers, b"", truncated=True)
        chunks: list[bytes] = []
        total = 0
        while chunk := response.read(min(64 * 1024, max_body + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_body:
                return Response(response.status, response.headers, b"".join(chunks)[:max_body],
                                truncated=True)
            deadline.remaining()
        return Response(response.status, response.headers, b"".join(chunks), truncated=False)
    finally:
        conn.close()
