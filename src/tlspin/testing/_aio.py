"""asyncio plumbing for the test proxies: a loop thread, HTTP/1.1 framing and byte pipes."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Coroutine, Mapping
from types import TracebackType
from typing import Any, Self

from tlspin.testing._loopback import Recorder, check_bind_host, url_host

TIMEOUT = 10.0
MAX_HEAD = 64 * 1024


def split_target(target: str, default_port: int) -> tuple[str, int]:
    """Split ``host:port`` / ``[v6]:port`` / ``host`` into host and port."""
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    host, sep, port = target.rpartition(":")
    if not sep:
        return target, default_port
    return host, int(port)


class LoopService(Recorder):
    """An asyncio server living in its own daemon thread."""

    def __init__(self, host: str, server_ssl: ssl.SSLContext | None) -> None:
        super().__init__()
        check_bind_host(host)
        self._host = host
        self._server_ssl = server_ssl
        self._port = 0
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
        loop.set_exception_handler(self._on_loop_error)
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, daemon=True, name="tlspin-proxy")
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def host(self) -> str:
        """The bound address, ``"127.0.0.1"`` or ``"::1"``."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port (0 before `start`)."""
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``."""
        return (self._host, self._port)

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
            await self._server.wait_closed()

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
            pass  # the peer went away or spoke nonsense
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
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                    parts.append(trailer)
                parts.append(trailer)
                return b"".join(parts)
            parts.append(await reader.readexactly(size + 2))
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    return await reader.read() if until_eof else b""


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes until EOF, then half-close (or close) the destination."""
    try:
        while data := await asyncio.wait_for(reader.read(65536), TIMEOUT * 3):
            writer.write(data)
            await writer.drain()
    except (OSError, TimeoutError, ssl.SSLError):
        pass
    finally:
        if writer.can_write_eof() and not writer.is_closing():
            with contextlib.suppress(OSError):
                writer.write_eof()
        else:
            writer.close()


async def tunnel(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    await asyncio.gather(pipe(a[0], b[1]), pipe(b[0], a[1]))


async def reply(writer: asyncio.StreamWriter, status: str, text: str = "") -> None:
    body = text.encode()
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
