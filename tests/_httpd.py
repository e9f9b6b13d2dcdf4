"""A stdlib HTTP server on loopback in a daemon thread, for tests that need a plain peer."""

from __future__ import annotations

import http.server
import json
import threading
import time
from typing import Any


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A request handler that keeps the access log out of the test output."""

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing."""


class HTTPThread:
    """Serve *handler* on an ephemeral port of *host* (loopback) until `close`.

    Subclass it for a server with state, or wrap it in `contextlib.closing` for a short one.

    Args:
        handler: the request handler class.
        host: the loopback address to bind.
        server_class: the server class (a subclass may wrap connections in TLS).
    """

    def __init__(
        self,
        handler: type[http.server.BaseHTTPRequestHandler],
        *,
        host: str = "127.0.0.1",
        server_class: type[http.server.ThreadingHTTPServer] = http.server.ThreadingHTTPServer,
    ) -> None:
        self.httpd = server_class((host, 0), handler)
        self.port: int = self.httpd.server_address[1]
        # A short poll interval makes close() return at once instead of after half a second.
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)


class JSONSink(HTTPThread):
    """Records JSON POST bodies and answers with scripted status codes (204 once they run out).

    ``gate`` (set by default) holds each request inside the handler while cleared, and
    ``arrived`` is set when a request comes in: for tests of slow or hung endpoints.

    Args:
        statuses: the status codes to answer, in order.
        path: the path part of `url`.
    """

    def __init__(self, statuses: list[int] | None = None, *, path: str = "/") -> None:
        self.bodies: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self.times: list[float] = []
        self.statuses = list(statuses or [])
        self.gate = threading.Event()
        self.gate.set()
        self.arrived = threading.Event()
        self.cond = threading.Condition()
        sink = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                sink.arrived.set()
                sink.gate.wait(30)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                with sink.cond:
                    status = sink.statuses.pop(0) if sink.statuses else 204
                    sink.bodies.append(body)
                    sink.headers.append({k.lower(): v for k, v in self.headers.items()})
                    sink.times.append(time.monotonic())
                    sink.cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        super().__init__(Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.port}{path}"

    def wait(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until *count* bodies arrived."""
        with self.cond:
            return self.cond.wait_for(lambda: len(self.bodies) >= count, timeout)

    def close(self) -> None:
        """Release held requests and stop."""
        self.gate.set()
        super().close()


class DripServer:
    """A loopback server (TLS when given a context) that answers every request slowly.

    It sends *prefix* at once, then one byte of *drip* every *interval* seconds, for as long as
    the client stays: each read returns quickly, so only an overall deadline can end the exchange.
    Once `full` is set, new connections get that whole response at once instead.

    Args:
        prefix: bytes sent as soon as the request head has arrived.
        drip: bytes then sent one at a time (repeated).
        context: server-side TLS context, or None for plain HTTP.
        interval: seconds between dripped bytes.
    """

    def __init__(
        self,
        prefix: bytes,
        drip: bytes,
        *,
        context: Any = None,
        interval: float = 0.05,
    ) -> None:
        import socket

        self.prefix, self.drip, self.interval = prefix, drip, interval
        self.full: bytes | None = None
        self.dripped = 0
        self._context = context
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            worker = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            worker.start()
            self._threads.append(worker)

    def _serve(self, raw: Any) -> None:
        conn = raw
        try:
            if self._context is not None:
                raw.settimeout(10)
                conn = self._context.wrap_socket(raw, server_side=True)
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(65536)
                if not data:
                    return
                head += data
            if self.full is not None:
                conn.sendall(self.full)
                return
            conn.sendall(self.prefix)
            index = 0
            while not self._stop.wait(self.interval):
                conn.sendall(self.drip[index % len(self.drip) : index % len(self.drip) + 1])
                index += 1
                self.dripped += 1
        except OSError:
            return
        finally:
            conn.close()
            raw.close()

    def close(self) -> None:
        """Stop dripping and close everything."""
        import contextlib
        import socket

        self._stop.set()
        with contextlib.suppress(OSError):  # wakes the accept() of the listening socket
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for thread in self._threads:
            thread.join(5)
