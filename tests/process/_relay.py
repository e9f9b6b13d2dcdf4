"""A forging TLS relay: the attacker in front of a real server, counting what clients send it.

It terminates TLS with a forged leaf (from the attacker CA the client trusts), records every
application byte the client sends after the handshake (`received`), and relays the connection
to the real server over TLS, so a client that accepts the forged leaf really talks to the
server (the failure twin of every refusal). For PostgreSQL it answers the clear-text
``SSLRequest`` first, and relays a client that starts without TLS (a downgrade) in clear,
recording those bytes as `cleartext`.
"""

from __future__ import annotations

import asyncio
import ssl
import struct

from tlspin._shared.loopserver import TIMEOUT, LoopService, close_writer, pipe
from tlspin.testing.pki import Leaf, server_context

_SSL_REQUEST = struct.pack("!ii", 8, 80877103)


class ForgingRelay(LoopService):
    """Listen on 127.0.0.1, present *forged*, and relay to ``upstream`` (``(host, port)``)."""

    def __init__(
        self,
        forged: Leaf,
        upstream: tuple[str, int],
        *,
        upstream_ssl: ssl.SSLContext,
        upstream_name: str = "localhost",
        postgres: bool = False,
        alpn: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__("127.0.0.1", None, thread_name="forging-relay")
        self._tls = server_context(forged, alpn=alpn)
        self._upstream = upstream
        self._upstream_ssl = upstream_ssl
        self._upstream_name = upstream_name
        self._postgres = postgres
        self._received = bytearray()
        self._cleartext = bytearray()
        self.handshakes = 0

    @property
    def received(self) -> bytes:
        """Application bytes clients sent inside TLS (after the handshake)."""
        with self._cond:
            return bytes(self._received)

    @property
    def cleartext(self) -> bytes:
        """Bytes a PostgreSQL client sent without TLS (a downgrade after a refusal)."""
        with self._cond:
            return bytes(self._cleartext)

    @property
    def requests(self) -> list[str]:
        """For tlspin.testing.assertions: nothing is parsed here."""
        return []

    def _record(self, buffer: bytearray, data: bytes) -> None:
        with self._cond:
            buffer.extend(data)
            self._cond.notify_all()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._postgres:
            first = await asyncio.wait_for(reader.readexactly(8), TIMEOUT)
            if first != _SSL_REQUEST:
                # A client starting in clear text: relay it in clear, and record it.
                self._record(self._cleartext, first)
                up_reader, up_writer = await asyncio.open_connection(*self._upstream)
                self._track(up_writer)
                up_writer.write(first)
                await self._relay(reader, writer, up_reader, up_writer, self._cleartext)
                return
            writer.write(b"S")
            await writer.drain()
        await writer.start_tls(self._tls, ssl_handshake_timeout=TIMEOUT)
        with self._cond:
            self.handshakes += 1
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        self._track(up_writer)
        if self._postgres:
            up_writer.write(_SSL_REQUEST)
            if await up_reader.readexactly(1) != b"S":
                return
        await up_writer.start_tls(self._upstream_ssl, server_hostname=self._upstream_name)
        await self._relay(reader, writer, up_reader, up_writer, self._received)

    async def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        record: bytearray,
    ) -> None:
        async def client_to_server() -> None:
            try:
                while data := await reader.read(65536):
                    self._record(record, data)
                    up_writer.write(data)
                    await up_writer.drain()
            except (OSError, ssl.SSLError):
                pass
            finally:
                await close_writer(up_writer)

        try:
            await asyncio.gather(client_to_server(), pipe(up_reader, writer))
        finally:
            await close_writer(up_writer)
