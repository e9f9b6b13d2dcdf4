"""The loopback servers behind the documentation's names, for one document's session.

One HTTPS server, on 127.0.0.1 and on ::1, answers for every name the docs use (the sandbox
hook sends their ports 443 and 8443 here) and routes by the Host header:

* ``pins.example.com``: the files of the session directory (``GET /bundle.json`` serves the
  bundle an earlier block signed);
* ``reports.example.com``: ``POST /reports`` takes violation reports (201) and records them;
* ``ct.example.net``: an RFC 6962 log (``/log/ct/v1/get-sth``, ``get-entries``) holding the
  certificates of the world, all with pinned keys;
* anything else (``api.example.com``, ``localhost``…): 200 with a short body.

It serves `World.leaf` (the committed api-leaf key), so the README's pins match it.
"""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import threading
import urllib.parse
from pathlib import Path
from typing import Any

from ct.conftest import LogServer, der
from docs.world import API_BODY, World


class _TLSServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    context: ssl.SSLContext

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        # The handshake runs in the handler's thread, on its first read.
        return self.context.wrap_socket(sock, server_side=True,
                                        do_handshake_on_connect=False), address

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Pinned clients hang up mid-handshake or right after it, by design: not an error here.
        pass


class _TLSServer6(_TLSServer):
    address_family = socket.AF_INET6


class DocServers:
    """Start the servers for one session; `net_config` tells the sandbox hook where they are."""

    def __init__(self, world: World, directory: Path) -> None:
        self.world = world
        self.directory = directory
        self.reports: list[bytes] = []
        self.requests: list[str] = []
        self.lock = threading.Lock()
        self.log = LogServer()
        self.log.add_x509(der(world.leaf.cert), [der(world.issuing.cert)])
        self.log.add_x509(der(world.rotated.cert), [der(world.issuing.cert)])
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*self._write_leaf(directory.parent / f"{directory.name}-tls"))
        context.set_alpn_protocols(["http/1.1"])
        handler = self._handler()
        self._servers: list[_TLSServer] = []
        self._threads: list[threading.Thread] = []
        for cls, host in ((_TLSServer, "127.0.0.1"), (_TLSServer6, "::1")):
            server = cls((host, 0), handler)
            server.context = context
            thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        self.port4 = self._servers[0].server_address[1]
        self.port6 = self._servers[1].server_address[1]

    def _write_leaf(self, where: Path) -> tuple[Path, Path]:
        where.mkdir(exist_ok=True)
        chain, key = where / "chain.pem", where / "key.pem"
        chain.write_bytes(self.world.leaf.chain_pem)
        key.write_bytes(self.world.leaf.key_pem)
        key.chmod(0o600)
        return chain, key

    def close(self) -> None:
        """Stop every server."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(5)
        self.log.close()

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        servers = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Keep the access log out of the test output."""

            def _answer(self, status: int, body: bytes, kind: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _host(self) -> str:
                return (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()

            def do_GET(self) -> None:
                host, path = self._host(), urllib.parse.urlsplit(self.path).path
                with servers.lock:
                    servers.requests.append(f"{self.command} {host}{path}")
                if host == "pins.example.com":
                    name = path.lstrip("/")
                    file = servers.directory / name
                    if "/" in name or not name or not file.is_file():
                        self._answer(404, b"not found\n")
                    else:
                        self._answer(200, file.read_bytes(), "application/json")
                elif host == "ct.example.net":
                    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                    if path == "/log/ct/v1/get-sth":
                        body, status = servers.log.sth(), 200
                    elif path == "/log/ct/v1/get-entries":
                        body, status = servers.log.entries(query)
                    else:
                        body, status = {"error": "not found"}, 404
                    self._answer(status, json.dumps(body).encode(), "application/json")
                else:
                    self._answer(200, API_BODY)

            do_HEAD = do_GET

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                host, path = self._host(), urllib.parse.urlsplit(self.path).path
                with servers.lock:
                    servers.requests.append(f"POST {host}{path}")
                    if host == "reports.example.com" and path == "/reports":
                        servers.reports.append(body)
                if host == "reports.example.com" and path == "/reports":
                    self._answer(201, b"")
                else:
                    self._answer(200, API_BODY)

        return Handler
