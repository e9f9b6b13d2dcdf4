"""Loopback-only networking for the processes of documentation blocks (tests/docs).

The doc-block harness puts this directory on PYTHONPATH, so every Python process a block starts
(the `tlspin` command, `python client.py`, a block's own code, the collector's worker) imports
it first. It reads the map the harness wrote into TLSPIN_DOCS_NET and, in this process only:

* resolves the documentation's names (api.example.com, pins.example.com, …) to 127.0.0.1 (or
  ::1 when only IPv6 is asked for), and refuses to resolve any other name but localhost;
* sends connections to the ports the docs use (443, 8443, 8787…) on loopback, or on the
  documentation address blocks (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32),
  to the harness's server for that port on loopback; a bind to such a port on loopback binds
  the harness's port instead (so `tlspin serve --port 8787` never collides with anything);
* refuses every connection to any other address: a block can never reach the network.

Names the process already holds (SNI, Host headers, certificate checks) are untouched: only
where the bytes go changes, so the examples run exactly as written.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
from typing import Any

_CONFIG = json.loads(os.environ.get("TLSPIN_DOCS_NET") or "null")
_DOC_NETS = tuple(ipaddress.ip_network(n) for n in (
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32",
))


def _install(config: dict[str, Any]) -> None:
    names = {n.lower() for n in config["names"]}
    ports = {int(k): int(v) for k, v in config["ports4"].items()}
    ports6 = {int(k): int(v) for k, v in config["ports6"].items()}
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_bind = socket.socket.bind

    def getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0,
                    proto: int = 0, flags: int = 0) -> Any:
        text = host.decode() if isinstance(host, bytes) else host
        if text is not None:
            name = text.lower().rstrip(".")
            if name in names or name.endswith(".cdn.example.com"):
                loop = "::1" if family == socket.AF_INET6 else "127.0.0.1"
                return real_getaddrinfo(loop, port, family, type, proto, flags)
            if name != "localhost" and not _is_address(name):
                raise socket.gaierror(
                    socket.EAI_NONAME,
                    f"tlspin docs sandbox: {text!r} is not one of the names the harness serves "
                    f"({', '.join(sorted(names))}) nor localhost",
                )
        return real_getaddrinfo(host, port, family, type, proto, flags)

    def target(sock: socket.socket, address: Any, *, binding: bool) -> Any:
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple):
            return address
        host, port, *rest = address
        try:
            ip = ipaddress.ip_address(host.split("%")[0] if host else "0.0.0.0")
        except ValueError:
            # A name handed to connect() directly: resolve it the sandbox's way.
            info = getaddrinfo(host, port, sock.family, socket.SOCK_STREAM)
            return target(sock, info[0][4], binding=binding)
        six = ip.version == 6
        if any(ip in net for net in _DOC_NETS) or (binding and ip.is_unspecified):
            # Documentation addresses stand for the harness's servers; a server of a block
            # listens on loopback only, whatever address it asks for.
            ip = ipaddress.ip_address("::1" if six else "127.0.0.1")
        elif not ip.is_loopback:
            raise OSError(errno.ENETUNREACH,
                          f"tlspin docs sandbox: refusing to connect to {host} (loopback only)")
        table = ports6 if six else ports
        return (str(ip), table.get(port, port), *rest)

    def connect(self: socket.socket, address: Any) -> None:
        real_connect(self, target(self, address, binding=False))

    def connect_ex(self: socket.socket, address: Any) -> int:
        return real_connect_ex(self, target(self, address, binding=False))

    def bind(self: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and address[1] in (ports6 if self.family == socket.AF_INET6
                                                         else ports):
            address = target(self, address, binding=True)
        real_bind(self, address)

    socket.getaddrinfo = getaddrinfo
    socket.socket.connect = connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign,assignment]
    socket.socket.bind = bind  # type: ignore[method-assign,assignment]


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]").split("%")[0])
    except ValueError:
        return False
    return True


if _CONFIG is not None:
    _install(_CONFIG)
