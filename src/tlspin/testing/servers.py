"""A threaded loopback HTTPS origin that records every decrypted byte it receives.

Pinning tests need to prove a negative: a refused connection must not leak a single request
byte to the server. `TLSServer` therefore appends each chunk it decrypts to `TLSServer.received`
before it parses anything, so even a client that sends half a request and vanishes is counted.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self

from tlspin._shared.net import LOOPBACK_HOSTS, Listener, unblock_socket, url_host
from tlspin._shared.numbers import decimal, hexadecimal
from tlspin.testing.pki import Leaf, server_context

__all__ = ["LOOPBACK_HOSTS", "TLSServer"]

_MAX_HEAD = 64 * 1024


class TLSServer(Listener):
    """Threaded HTTPS origin on 127.0.0.1 or ::1 serving HTTP/1.1 and (via ALPN) HTTP/2.

    Every request gets ``200`` with `response_body`. Use it as a context manager or call
    `start` and `stop`.

    Records (all thread-safe): `received`, `requests`, `handshakes`, `connections`,
    `handshake_errors`, `alpn_protocols`, `server_names`, `resumed`.
    """

    def __init__(
        self,
        leaf: Leaf,
        *,
        host: str = "127.0.0.1",
        alpn: Sequence[str] | None = ("http/1.1",),
        response_body: bytes = b"ok",
        sni: Mapping[str, Leaf] | None = None,
        handshake_delay: float = 0,
        tls_max_version: ssl.TLSVersion | None = None,
        handshake_timeout: float = 5.0,
        idle_timeout: float = 30.0,
    ) -> None:
        """Configure the server; nothing listens until `start`.

        Args:
            leaf: certificate chain and key served by default.
            host: ``"127.0.0.1"`` or ``"::1"``; anything else raises ValueError.
            alpn: ALPN protocols offered; include ``"h2"`` to serve HTTP/2.
            response_body: body of every response.
            sni: server name → leaf served when a client sends that SNI.
            handshake_delay: seconds to wait before starting each TLS handshake.
            tls_max_version: highest TLS version to negotiate.
            handshake_timeout: seconds a client may take to finish the handshake.
            idle_timeout: seconds an idle connection is kept open.
        """
        super().__init__(host)
        self._alpn = tuple(alpn or ())
        self._max_version = tls_max_version
        self.response_body = response_body
        self.handshake_delay = handshake_delay
        self._handshake_timeout = handshake_timeout
        self._idle_timeout = idle_timeout
        self._contexts: dict[str | None, ssl.SSLContext] = {}
        self.set_leaf(leaf)
        for name, sni_leaf in (sni or {}).items():
            self.set_leaf(sni_leaf, server_name=name)
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._threads: set[threading.Thread] = set()
        self._live: set[ssl.SSLSocket] = set()
        self._received = bytearray()
        self._requests: list[str] = []
        self._handshakes = 0
        self._connections = 0
        self._handshake_errors: list[str] = []
        self._alpn_protocols: list[str | None] = []
        self._server_names: list[str | None] = []
        self._resumed = 0

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind an ephemeral port and start accepting connections."""
        if self._listener is not None:
            return self
        listener = socket.socket(self._family, socket.SOCK_STREAM)
        listener.bind((self._host, 0))
        listener.listen(64)
        # A short accept timeout lets the loop notice stop() even where shutdown() on a
        # listening socket does not wake accept().
        listener.settimeout(0.25)
        self._listener = listener
        self._port = listener.getsockname()[1]
        self._stopping.clear()
        self._accept_thread = self._spawn(self._accept_loop, listener)
        return self

    def stop(self) -> None:
        """Stop accepting, cut every open connection and join the server threads."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self._stopping.set()
        unblock_socket(listener)
        # Join the accept loop before sweeping connections, so none is accepted unseen; a
        # handler that registers after the sweep sees the stop flag and leaves on its own.
        if self._accept_thread is not None:
            self._accept_thread.join(5.0)
        listener.close()
        with self._cond:
            live = list(self._live)
        for sock in live:
            unblock_socket(sock)
        deadline = time.monotonic() + 5.0
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    # --- addresses --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``https://localhost:PORT/`` (``https://[::1]:PORT/`` for an IPv6 server)."""
        return self.url_for("localhost" if self._host == "127.0.0.1" else self._host)

    def url_for(self, hostname: str, path: str = "/") -> str:
        """``https://HOSTNAME:PORT/path``; the caller makes *hostname* resolve to this server."""
        return f"https://{url_host(hostname)}:{self._port}{path}"

    # --- certificates -----------------------------------------------------------------------

    def set_leaf(self, leaf: Leaf, *, server_name: str | None = None) -> None:
        """Serve *leaf* on new connections (for *server_name* only when given)."""
        ctx = server_context(leaf, alpn=self._alpn, maximum_version=self._max_version)
        ctx.sni_callback = self._on_sni
        with self._cond:
            key = server_name.lower().rstrip(".") if server_name else None
            self._contexts[key] = ctx

    def _on_sni(self, sslobj: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        with self._cond:
            self._server_names.append(server_name)
            chosen = self._contexts.get(server_name.lower().rstrip(".")) if server_name else None
        if chosen is not None:
            sslobj.context = chosen

    # --- records ----------------------------------------------------------------------------

    @property
    def received(self) -> bytes:
        """Every decrypted application byte received, all connections concatenated."""
        with self._cond:
            return bytes(self._received)

    @property
    def requests(self) -> list[str]:
        """Request lines such as ``"GET /path HTTP/1.1"`` or ``"GET /path HTTP/2"``."""
        with self._cond:
            return list(self._requests)

    @property
    def handshakes(self) -> int:
        """Number of TLS handshakes that completed."""
        with self._cond:
            return self._handshakes

    @property
    def connections(self) -> int:
        """Number of TCP connections accepted."""
        with self._cond:
            return self._connections

    @property
    def handshake_errors(self) -> list[str]:
        """One message per failed server-side handshake (alerts, timeouts, resets)."""
        with self._cond:
            return list(self._handshake_errors)

    @property
    def alpn_protocols(self) -> list[str | None]:
        """ALPN protocol selected on each completed handshake (None when none was)."""
        with self._cond:
            return list(self._alpn_protocols)

    @property
    def server_names(self) -> list[str | None]:
        """SNI value of each handshake that reached the server-name step."""
        with self._cond:
            return list(self._server_names)

    @property
    def resumed(self) -> int:
        """Number of completed handshakes that resumed a TLS session."""
        with self._cond:
            return self._resumed

    def reset(self) -> None:
        """Clear every record (the listening socket and certificates stay)."""
        with self._cond:
            self._received.clear()
            self._requests.clear()
            self._handshake_errors.clear()
            self._alpn_protocols.clear()
            self._server_names.clear()
            self._handshakes = self._connections = self._resumed = 0
            self._cond.notify_all()

    def _record(self, **updates: Any) -> None:
        with self._cond:
            for name, value in updates.items():
                if name in ("handshakes", "connections", "resumed"):
                    setattr(self, f"_{name}", getattr(self, f"_{name}") + value)
                else:
                    getattr(self, f"_{name}").append(value)
            self._cond.notify_all()

    # --- connection handling ----------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, daemon=True, name="tlspin-server")
        self._threads.add(thread)
        thread.start()
        return thread

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._threads = {t for t in self._threads if t.is_alive()}
            self._spawn(self._handle, raw)

    def _handle(self, raw: socket.socket) -> None:
        self._enter()
        self._record(connections=1)
        tls: ssl.SSLSocket | None = None
        try:
            raw.settimeout(self._handshake_timeout)
            if self.handshake_delay and self._stopping.wait(self.handshake_delay):
                return
            with self._cond:
                ctx = self._contexts[None]
            tls = ctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            with self._cond:
                self._live.add(tls)
            if self._stopping.is_set():
                return
            try:
                tls.do_handshake()
            except (OSError, ValueError) as exc:
                self._record(handshake_errors=f"{type(exc).__name__}: {exc}")
                return
            protocol = tls.selected_alpn_protocol()
            self._record(
                handshakes=1, alpn_protocols=protocol, resumed=1 if tls.session_reused else 0
            )
            tls.settimeout(self._idle_timeout)
            if protocol == "h2":
                self._serve_h2(tls)
            else:
                self._serve_http1(tls)
        except (OSError, ValueError):
            pass  # the peer went away or spoke nonsense; the bytes are already recorded
        finally:
            if tls is not None:
                with self._cond:
                    self._live.discard(tls)
                tls.close()
            else:
                raw.close()
            self._leave()

    def _recv(self, tls: ssl.SSLSocket) -> bytes:
        """Read one chunk and record it before anyone parses it; b"" on EOF or error."""
        try:
            data = tls.recv(65536)
        except (OSError, ValueError):
            return b""
        if data:
            with self._cond:
                self._received += data
                self._cond.notify_all()
        return data

    def _serve_http1(self, tls: ssl.SSLSocket) -> None:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                if len(buffer) > _MAX_HEAD:
                    return
                data = self._recv(tls)
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            self._record(requests=request_line)
            headers = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            while (end := _body_end(buffer, headers)) is None:
                data = self._recv(tls)
                if not data:
                    return
                buffer += data
            buffer = buffer[end:]
            method, _, rest = request_line.partition(" ")
            close = headers.get("connection", "").lower() == "close" or rest.endswith("HTTP/1.0")
            body = self.response_body
            response = (
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\n"
                f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
            ).encode("ascii")
            tls.sendall(response if method == "HEAD" else response + body)
            if close:
                return

    def _serve_h2(self, tls: ssl.SSLSocket) -> None:
        # h2 is only needed by tests that exercise HTTP/2, so it is imported on first use.
        from h2.config import H2Configuration
        from h2.connection import H2Connection
        from h2.events import (
            ConnectionTerminated,
            DataReceived,
            RequestReceived,
            StreamEnded,
            StreamReset,
            WindowUpdated,
        )
        from h2.exceptions import H2Error

        conn = H2Connection(config=H2Configuration(client_side=False))
        methods: dict[int, str] = {}
        pending: dict[int, bytes] = {}  # response bytes waiting for flow-control window

        def flush(stream_id: int) -> None:
            data = pending.pop(stream_id, b"")
            while data:
                room = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
                if room <= 0:
                    pending[stream_id] = data
                    return
                chunk, data = data[:room], data[room:]
                conn.send_data(stream_id, chunk, end_stream=not data)

        try:
            conn.initiate_connection()
            tls.sendall(conn.data_to_send())
            while data := self._recv(tls):
                for event in conn.receive_data(data):
                    if isinstance(event, RequestReceived):
                        fields = {_text(k): _text(v) for k, v in event.headers}
                        method = methods[event.stream_id] = fields.get(":method", "")
                        self._record(requests=f"{method} {fields.get(':path', '')} HTTP/2")
                    elif isinstance(event, DataReceived):
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, StreamEnded):
                        body = self.response_body
                        head_only = methods.pop(event.stream_id, "") == "HEAD"
                        headers = [
                            (":status", "200"),
                            ("content-type", "text/plain"),
                            ("content-length", str(len(body))),
                        ]
                        conn.send_headers(
                            event.stream_id, headers, end_stream=head_only or not body
                        )
                        if body and not head_only:
                            pending[event.stream_id] = body
                            flush(event.stream_id)
                    elif isinstance(event, WindowUpdated):
                        for stream_id in list(pending):
                            flush(stream_id)
                    elif isinstance(event, StreamReset):
                        pending.pop(event.stream_id, None)
                    elif isinstance(event, ConnectionTerminated):
                        tls.sendall(conn.data_to_send())
                        return
                if outgoing := conn.data_to_send():
                    tls.sendall(outgoing)
        except H2Error:
            return  # a misbehaving client; its bytes are already recorded


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _body_end(buffer: bytes, headers: Mapping[str, str]) -> int | None:
    """Return how many bytes of *buffer* the request body takes, or None if incomplete."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        offset = 0
        while True:
            line_end = buffer.find(b"\r\n", offset)
            if line_end < 0:
                return None
            size = hexadecimal(buffer[offset:line_end].split(b";")[0].strip())
            if size is None:  # not HTTP: the connection is dropped (ValueError)
                msg = "expected a chunk size in hex digits"
                raise ValueError(msg)
            offset = line_end + 2
            if size == 0:
                # Skip optional trailers up to the blank line that ends the message.
                end = buffer.find(b"\r\n\r\n", offset - 2)
                return None if end < 0 else end + 4
            offset += size + 2
            if offset > len(buffer):
                return None
    declared = headers.get("content-length", "0") or "0"
    length = decimal(declared)
    if length is None:  # "²", "+5", "1_0", "-1": not HTTP, the connection is dropped
        raise ValueError(f"expected a Content-Length of ASCII digits, found {declared[:40]!r}")
    return length if len(buffer) >= length else None
