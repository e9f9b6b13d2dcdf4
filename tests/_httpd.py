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
