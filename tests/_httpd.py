"""A stdlib HTTP server on loopback in a daemon thread, for tests that need a plain peer."""

from __future__ import annotations

import http.server
import threading
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
