"""asyncio servers on loopback, each in its own daemon thread: the loop, HTTP/1.1 framing, pipes.

Used by the audit proxy and by the test kit's proxies. One thread owns each loop, so the
TLS-in-TLS legs run on asyncio's memory-BIO SSL (an OpenSSL object is never shared by threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Coroutine, Mapping
from typing import Any, Self

from tlspin._shared.net import Listener, url_host
from tlspin._shared.numbers import decimal, hexadecimal

__all__ = [
    "MAX_HEAD",
    "TIMEOUT",
    "LoopService",
    "close_writer",
    "pipe",
    "read_body",
    "read_head",
    "reply",
    "tunnel",
]

TIMEOUT = 10.0
MAX_HEAD = 64 * 1024


class LoopService(Listener):
    """An asyncio server living in its own daemon thread; subclasses implement `_handle`.

    Args:
        host: ``"127.0.0.1"`` or ``"::1"``.
        server_ssl: when given, clients speak TLS to the listener.
        thread_name: name of the loop thread (shows in debuggers and thread dumps).
    """

    def __init__(
        self, host: str, server_ssl: ssl.SSLContext | None, *, thread_name: str = "tlspin-proxy"
    ) -> None:
        super().__init__(host)
        self._server_ssl = server_ssl
        self._thread_name = thread_name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # Every transport ever opened, so stop() can abort the ones a peer left half-closed;
        # a transport garbage-collected unclosed would raise ResourceWarning in a later test.
        self._transports: set[asyncio.WriteTransport] = set()
        self._errors: list[str] = []

    def start(self) -> Self:
        """Bind an ephemeral loopback port and start serving."""
        if self._loop is not None:
            return self
        loop = asyncio.new_event_loop()
        # Connections a peer aborts are part of the job (a pinned client hangs up); keep the
        # loop's own reports out of the log, for debugging only.
        loop.set_exception_handler(self._on_loop_error)
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, daemon=True, name=self._thread_name
        )
        self._thread.start()
        try:
            self._call(self._open()).result(TIMEOUT)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Close the listener and every connection, then end the loop thread."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(TIMEOUT)
        loop.close()

    @property
    def url(self) -> str:
        """Proxy URL such as ``http://127.0.0.1:PORT`` (``https://`` for a TLS listener)."""
        scheme = "https" if self._server_ssl is not None else "http"
        return f"{scheme}://{url_host(self._host)}:{self._port}"

    @property
    def errors(self) -> list[str]:
        """Unexpected errors seen while serving (for debugging failing tests)."""
        with self._cond:
            return list(self._errors)

    def _append(self, name: str, value: object) -> None:
        with self._cond:
            getattr(self, name).append(value)
            self._cond.notify_all()

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _on_loop_error(self, _loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self._append("_errors", str(context.get("exception") or context.get("message")))

    async def _open(self) -> None:
        timeout = TIMEOUT if self._server_ssl is not None else None
        self._server = await asyncio.start_server(
            self._serve, self._host, 0, ssl=self._server_ssl, ssl_handshake_timeout=timeout
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for transport in self._transports:
            transport.abort()
        self._transports.clear()
        # Let the connection_lost callbacks scheduled by abort() run and close the sockets.
        for _ in range(3):
            await asyncio.sleep(0)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    def _track(self, writer: asyncio.StreamWriter) -> asyncio.StreamWriter:
        """Remember *writer*'s current transport so `stop` can abort it."""
        self._transports.add(writer.transport)
        return writer

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._track(writer)
        self._enter()
        try:
            await self._handle(reader, writer)
        except (OSError, EOFError, ssl.SSLError, ValueError, asyncio.LimitOverrunError):
            pass  # the peer went away or spoke nonsense (TimeoutError is an OSError)
        finally:
            await close_writer(writer)
            self._tasks.discard(task)
            self._leave()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close gracefully (TLS close_notify included), aborting if the peer does not finish."""
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 1.0)
    except (OSError, ssl.SSLError, TimeoutError):
        writer.transport.abort()


async def read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes] | None:
    """Read one HTTP head; return (start line, lower-cased headers, raw head) or None on EOF."""
    try:
        raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    if len(raw) > MAX_HEAD:
        raise ValueError(f"expected an HTTP head under {MAX_HEAD} bytes; found {len(raw)}")
    start, *lines = raw[:-4].decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return start, headers, raw


async def read_body(
    reader: asyncio.StreamReader, headers: Mapping[str, str], *, until_eof: bool
) -> bytes:
    """Read a message body exactly as framed (raw bytes, chunk framing kept)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        while True:
            line = await reader.readuntil(b"\r\n")
            parts.append(line)
            size = hexadecimal(line.split(b";")[0].strip())
            if size is None:
                raise ValueError(f"expected a chunk size in hex digits, found {line[:40]!r}")
            if size == 0:
                while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                    parts.append(trailer)
                parts.append(trailer)
                return b"".join(parts)
            parts.append(await reader.readexactly(size + 2))
    if "content-length" in headers:
        length = decimal(headers["content-length"])
        if length is None:
            raise ValueError(f"expected a Content-Length of ASCII digits, found "
                             f"{headers['content-length'][:40]!r}")
        return await reader.readexactly(length)
    return await reader.read() if until_eof else b""


async def pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    idle_timeout: float | None = None,
) -> None:
    """Copy bytes until EOF (or *idle_timeout* seconds without any), then half-close or close."""
    try:
        while data := await asyncio.wait_for(reader.read(65536), idle_timeout):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass  # TimeoutError is an OSError
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()
            else:
                writer.close()


async def tunnel(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    *,
    idle_timeout: float | None = None,
) -> None:
    """Pipe *a* and *b* into each other until both directions end."""
    await asyncio.gather(
        pipe(a[0], b[1], idle_timeout=idle_timeout), pipe(b[0], a[1], idle_timeout=idle_timeout)
    )


async def reply(writer: asyncio.StreamWriter, status: str, text: str = "") -> None:
    """Answer with a small ``text/plain`` response and ``Connection: close``."""
    body = text.encode()
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
