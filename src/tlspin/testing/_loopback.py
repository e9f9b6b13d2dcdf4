"""Loopback-only plumbing shared by the test servers and proxies."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Self

__all__ = ["LOOPBACK_HOSTS", "Recorder", "check_bind_host", "resolve_loopback", "url_host"]

#: The only addresses the test kit ever binds to.
LOOPBACK_HOSTS = ("127.0.0.1", "::1")


def check_bind_host(host: str) -> int:
    """Return the address family for *host*, refusing anything but 127.0.0.1 and ::1."""
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"expected a loopback bind address (127.0.0.1 or ::1); found {host!r}")
    return socket.AF_INET6 if host == "::1" else socket.AF_INET


def url_host(hostname: str) -> str:
    """Bracket IPv6 literals for use in a URL authority."""
    return f"[{hostname}]" if ":" in hostname and not hostname.startswith("[") else hostname


class Recorder:
    """Thread-safe bookkeeping shared by the test servers: waiting and idle tracking."""

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
