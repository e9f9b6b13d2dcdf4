"""Loopback-only plumbing shared by tlspin's tools: addresses, service lifecycles and sockets.

The audit proxy, the test kit's servers and proxies and the bundle updater each run a network
service in a background thread. What they have in common lives here. The module imports no
asyncio, so the bundle updater (loaded by applications at start-up) stays cheap to import.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Self

from tlspin._shared.numbers import tcp_port

__all__ = [
    "LOOPBACK_HOSTS",
    "Listener",
    "Recorder",
    "Service",
    "check_bind_host",
    "resolve_loopback",
    "split_target",
    "unblock_socket",
    "url_host",
]

#: The only addresses tlspin's own servers ever bind to.
LOOPBACK_HOSTS = ("127.0.0.1", "::1")


def check_bind_host(host: str) -> int:
    """Return the address family for *host*, refusing anything but 127.0.0.1 and ::1."""
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"expected a loopback bind address (127.0.0.1 or ::1); found {host!r}")
    return socket.AF_INET6 if host == "::1" else socket.AF_INET


def url_host(hostname: str) -> str:
    """Bracket IPv6 literals for use in a URL authority."""
    return f"[{hostname}]" if ":" in hostname and not hostname.startswith("[") else hostname


def resolve_loopback(host: str, resolve: Mapping[str, str] | None = None) -> str | None:
    """Map *host* to a loopback IP, or return None when it is not (or not known to be) loopback.

    Never consults DNS: ``localhost``, loopback IP literals and entries of *resolve* only.
    """
    name = host.strip("[]").lower().rstrip(".")
    mapping = {k.lower().rstrip("."): v for k, v in (resolve or {}).items()}
    address = mapping.get(name, "127.0.0.1" if name == "localhost" else name)
    try:
        return address if ipaddress.ip_address(address).is_loopback else None
    except ValueError:
        return None


def split_target(target: str, default_port: int) -> tuple[str, int]:
    """Split ``host:port`` / ``[v6]:port`` / ``host`` (a CONNECT target) into host and port.

    Raises:
        ValueError: the port is not 1 to 65535 in ASCII digits (``int()`` alone would take
            ``+443``, ``4_43`` or ``99999``, which ``connect()`` refuses with OverflowError).
    """
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        if not rest:
            return host, default_port
        if not rest.startswith(":"):
            raise ValueError(f"expected [address]:port, found {target[:80]!r}")
        text = rest[1:]
    else:
        host, sep, text = target.rpartition(":")
        if not sep:
            return target, default_port
    number = tcp_port(text)
    if number is None:
        raise ValueError(f"expected a port from 1 to 65535, found {text[:20]!r}")
    return host, number


def unblock_socket(sock: socket.socket) -> None:
    """Shut *sock* down both ways, so a thread blocked in ``recv``/``accept`` on it returns.

    The plain-socket ``shutdown`` is called even on an `ssl.SSLSocket`: it acts on the file
    descriptor and leaves the SSL object alone, which another thread may be using.
    """
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Service:
    """Something started and stopped; ``with service:`` starts it and stops it on the way out."""

    def start(self) -> object:
        """Start serving (subclasses implement it)."""
        raise NotImplementedError

    def stop(self) -> object:
        """Stop serving (subclasses implement it)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Recorder:
    """Thread-safe bookkeeping shared by the loopback servers: waiting and idle tracking."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._active = 0

    def wait_for(self, predicate: Callable[[Self], object], timeout: float = 5.0) -> bool:
        """Block until ``predicate(self)`` is true or *timeout* seconds pass; return the result.

        Use it instead of sleeping when a record is written by a server thread after the client
        has already returned (for example a handshake failure seen from the server side).
        """
        with self._cond:
            return bool(self._cond.wait_for(lambda: predicate(self), timeout))

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until no connection is being served; return False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._active == 0, timeout)

    @property
    def active(self) -> int:
        """Number of connections currently being served."""
        with self._cond:
            return self._active

    def _enter(self) -> None:
        with self._cond:
            self._active += 1
            self._cond.notify_all()

    def _leave(self) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify_all()


class Listener(Service, Recorder):
    """A server bound to an ephemeral port of 127.0.0.1 or ::1 (it binds in `start`)."""

    def __init__(self, host: str) -> None:
        super().__init__()
        self._family = check_bind_host(host)
        self._host = host
        self._port = 0

    @property
    def host(self) -> str:
        """The bound address, ``"127.0.0.1"`` or ``"::1"``."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port (0 before `start`)."""
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``, for `socket.create_connection`."""
        return (self._host, self._port)
