"""A hostile CONNECT proxy: it opens honest tunnels, then slips its own bytes in after its reply.

The bytes land in the tunnel before the origin's TLS, where a client that keeps them buffered
across its TLS upgrade would return them as if the pinned origin had sent them.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Literal

from tlspin._shared.loopserver import TIMEOUT, LoopService, close_writer, read_head, reply, tunnel
from tlspin._shared.net import resolve_loopback, split_target
from tlspin.testing.pki import Leaf, server_context

INJECTED = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nINJECTED"
REPLY = b"HTTP/1.1 200 Connection established\r\n\r\n"

# "same": the reply head and the bytes in one write (one TCP segment, or one TLS record).
# "separate": two writes, once the client's event loop is blocked (see `client_blocked`), so
#     both are queued when the client next reads.
# "later": the bytes follow once the client's event loop says it read the reply head (see
#     `head_read`), i.e. while the client is between its read and its TLS upgrade.
# "hello": the bytes follow the client's first TLS bytes (its ClientHello), ahead of the
#     origin's answer.
Mode = Literal["same", "separate", "later", "hello"]


class InjectingProxy(LoopService):
    """A CONNECT proxy (plain, or TLS with *tls_leaf*) that injects `INJECTED` in each tunnel."""

    def __init__(self, *, mode: Mode, tls_leaf: Leaf | None = None, inject: bytes = INJECTED):
        """Configure the proxy; nothing listens until `start`."""
        super().__init__("127.0.0.1", server_context(tls_leaf) if tls_leaf is not None else None)
        self.mode = mode
        self.inject = inject
        self.connects: list[str] = []
        self.client_blocked = threading.Event()  # set by the client before it blocks its loop
        self.head_read = threading.Event()  # set by the client once it read the reply head
        self.sent = threading.Event()  # set once the injected bytes are on their way

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        if head is None:
            return
        target = head[0].split(" ")[1]
        self.connects.append(target)
        host, port = split_target(target, 443)
        address = resolve_loopback(host)
        if address is None:
            await reply(writer, "403 Forbidden", f"refusing non-loopback target {target}")
            return
        upstream = await asyncio.wait_for(asyncio.open_connection(address, port), TIMEOUT)
        self._track(upstream[1])
        if self.mode == "same":
            writer.write(REPLY + self.inject)
        else:
            if self.mode == "separate":
                await asyncio.to_thread(self.client_blocked.wait, TIMEOUT)
            writer.write(REPLY)
            await writer.drain()
            if self.mode == "later":
                await asyncio.to_thread(self.head_read.wait, TIMEOUT)
            if self.mode == "hello":
                hello = await asyncio.wait_for(reader.read(65536), TIMEOUT)
                upstream[1].write(hello)
            writer.write(self.inject)
        await writer.drain()
        self.sent.set()
        try:
            await tunnel((reader, writer), upstream, idle_timeout=TIMEOUT)
        finally:
            await close_writer(upstream[1])


async def block_loop_until_sent(proxy: InjectingProxy) -> None:
    """Once the proxy has the CONNECT, block this event loop until it has sent everything.

    Both the reply head and the injected bytes are then queued in the socket when the client's
    loop reads again, as they would be on a busy client or a slow network.
    """
    while not proxy.connects:
        await asyncio.sleep(0.005)
    proxy.client_blocked.set()
    proxy.sent.wait(TIMEOUT)  # blocks the loop thread on purpose
