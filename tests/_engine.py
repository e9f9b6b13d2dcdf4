"""Helpers for the engine tests: clients on blocking sockets and memory BIOs, forged chains."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

from tlspin.testing.pki import CA, Leaf, generate_key
from tlspin.testing.servers import TLSServer

HOST = "127.0.0.1"
REQUEST = b"GET / HTTP/1.1\r\nHost: origin\r\n\r\n"


def stranger_pins() -> list[str]:
    """Two pins no test server has (an enforced rule wants a backup pin)."""
    return [CA.root("stranger one").pin, CA.root("stranger two").pin]


def forged_under(intermediate: CA, *names: str) -> Leaf:
    """A leaf that names *intermediate* as its issuer (subject and key id) but is signed with an
    attacker's key, served with the genuine intermediate appended.

    Unverified (``CERT_NONE``), OpenSSL still "builds" the chain ``[forged leaf, genuine
    intermediate, root]``, so an intermediate or root pin would pass it.
    """
    impostor = CA(intermediate.cert, generate_key(), "ec256", None)
    forged = impostor.issue(*(names or (HOST, "localhost")))
    return Leaf(forged.cert, forged.key, [intermediate.cert])


def read_response(sock: ssl.SSLSocket) -> bytes:
    """Read one HTTP/1.1 response with a Content-Length and return its body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, "the server closed before answering"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(4096)
    return body


def open_socket(
    ctx: ssl.SSLContext,
    server: TLSServer,
    *,
    host: str | None = HOST,
    session: ssl.SSLSession | None = None,
    handshake: bool = True,
) -> ssl.SSLSocket:
    """Wrap a TCP connection to *server* (the handshake runs unless *handshake* is False)."""
    raw = socket.create_connection(server.address, timeout=5)
    try:
        return ctx.wrap_socket(
            raw, server_hostname=host, session=session, do_handshake_on_connect=handshake
        )
    except BaseException:
        raw.close()
        raise


def fetch(ctx: ssl.SSLContext, server: TLSServer, *, host: str | None = HOST) -> ssl.SSLSocket:
    """Make one request; return the (closed) socket after checking the body is ``ok``."""
    with open_socket(ctx, server, host=host) as sock:
        sock.sendall(REQUEST)
        assert read_response(sock) == b"ok"
    return sock


@dataclass
class BioClient:
    """A memory-BIO client (what asyncio, anyio and TLS-in-TLS use), pumped over a socket."""

    obj: ssl.SSLObject
    sock: socket.socket
    incoming: ssl.MemoryBIO
    outgoing: ssl.MemoryBIO

    @classmethod
    def open(cls, ctx: ssl.SSLContext, server: TLSServer, *, host: str = HOST) -> BioClient:
        """Create the SSLObject (no handshake yet) and connect its socket."""
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_hostname=host)
        return cls(obj, socket.create_connection(server.address, timeout=5), incoming, outgoing)

    def _pump(self, step: object) -> object:
        while True:
            try:
                return step()  # type: ignore[operator]
            except ssl.SSLWantReadError:
                self.sock.sendall(self.outgoing.read())
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("server closed") from None
                self.incoming.write(data)

    def handshake(self) -> None:
        """Run the handshake (and tlspin's check) to the end."""
        try:
            self._pump(self.obj.do_handshake)
        finally:
            # Whatever the client produced (its Finished): never application data.
            self.sock.sendall(self.outgoing.read())

    def request(self) -> bytes:
        """Send the request and return the raw answer bytes read."""
        self.obj.write(REQUEST)
        self.sock.sendall(self.outgoing.read())
        return self._pump(lambda: self.obj.read(4096))  # type: ignore[return-value]

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()
