"""What the audit sees of a TLS connection it passes through without a key: the record layer.

In the control run of ``tlspin audit`` the proxy relays a connection between the program and the
genuine server unchanged, so it holds no key and decrypts nothing. The record layer stays in
clear, and it is enough to tell whether the program sent application data once its handshake
with the genuine server was over:

* the hellos are plaintext: the program's ClientHello names the server (SNI), and the server's
  ServerHello names the version and cipher suite (a HelloRetryRequest is skipped);
* TLS 1.2 and earlier: a record of type 23 (application data) from the program *is* application
  data; its Finished is a handshake record and its alerts are alert records;
* TLS 1.3 hides every content type behind type 23. The program's first encrypted records are its
  handshake flight, which ends with its Finished: a record of exactly ``4 + hash length + 1 +
  tag length`` bytes for the negotiated suite. After it, a record longer than the longest
  non-data message a client sends at that point (a 2-byte alert or a 5-byte KeyUpdate, plus the
  content-type byte and the tag) is application data. Smaller records are not counted.

Every way of getting this wrong counts *less*: a flight that never shows a Finished-sized record
(a client that packs its handshake messages, pads records, or offered 0-RTT data) counts nothing,
and the audit then says "inconclusive", never "pinned". Nothing here does I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

__all__ = ["RecordWatch", "watch_tunnel"]

_CCS, _ALERT, _HANDSHAKE, _APPLICATION = 20, 21, 22, 23
_RECORD_TYPES = frozenset({20, 21, 22, 23, 24})
_MAX_RECORD = 2**14 + 2048  # the largest TLSCiphertext any version allows (RFC 5246 §6.2.3)
_MAX_HELLO = 64 * 1024  # a hello longer than this is not one the audit needs to read
_MAX_HELD = 256 * 1024  # server bytes held back while the program has not spoken
_CLIENT_HELLO, _SERVER_HELLO = 1, 2
_EXT_SERVER_NAME, _EXT_ALPN, _EXT_SUPPORTED_VERSIONS = 0, 16, 43
# RFC 8446 §4.1.3: a ServerHello with this random is a HelloRetryRequest.
_HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
# TLS 1.3 cipher suites: (hash length, AEAD tag length) (RFC 8446 §B.4).
_TLS13_SUITES = {
    0x1301: (32, 16), 0x1302: (48, 16), 0x1303: (32, 16), 0x1304: (32, 16), 0x1305: (32, 8),
}
_VERSIONS = {0x0301: "TLSv1.0", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}
# The longest TLS 1.3 plaintext a client sends after its Finished that is not application data:
# KeyUpdate (4-byte header + 1). An alert is 2 bytes.
_TLS13_NON_DATA = 5


class _Cursor:
    """Bounds-checked reading of a TLS structure (ValueError when it is cut short)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, size: int) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            msg = "a TLS structure was cut short"
            raise ValueError(msg)
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, length_size: int) -> bytes:
        return self.take(self.number(length_size))

    @property
    def done(self) -> bool:
        return self._pos >= len(self._data)

    def extensions(self) -> list[tuple[int, bytes]]:
        """The extensions block that ends a hello (none when the hello ends before it)."""
        if self.done:
            return []
        block = _Cursor(self.vector(2))
        found = []
        while not block.done:
            kind = block.number(2)
            found.append((kind, block.vector(2)))
        return found


def _client_hello(body: bytes) -> tuple[str | None, tuple[str, ...]]:
    """The SNI host name (None without one) and the ALPN protocols of a ClientHello."""
    hello = _Cursor(body)
    hello.take(2 + 32)  # legacy_version, random
    hello.vector(1)  # legacy_session_id
    hello.vector(2)  # cipher_suites
    hello.vector(1)  # legacy_compression_methods
    server_name, alpn = None, []
    for kind, data in hello.extensions():
        if kind == _EXT_SERVER_NAME:
            names = _Cursor(_Cursor(data).vector(2))
            while not names.done:
                name_type, name = names.number(1), names.vector(2)
                if name_type == 0:  # host_name; a UnicodeDecodeError is a ValueError
                    server_name = name.decode("ascii")
        elif kind == _EXT_ALPN:
            protocols = _Cursor(_Cursor(data).vector(2))
            while not protocols.done:
                alpn.append(protocols.vector(1).decode("latin-1"))
    return server_name, tuple(alpn)


def _server_hello(body: bytes) -> tuple[bool, int, int]:
    """``(is a HelloRetryRequest, cipher suite, negotiated version)`` of a ServerHello."""
    hello = _Cursor(body)
    version = hello.number(2)
    retry = hello.take(32) == _HRR_RANDOM
    hello.vector(1)  # legacy_session_id_echo
    suite = hello.number(2)
    hello.take(1)  # legacy_compression_method
    for kind, data in hello.extensions():
        if kind == _EXT_SUPPORTED_VERSIONS:
            version = _Cursor(data).number(2)
    return retry, suite, version


class _Records:
    """Splits one direction of a TLS stream into records: ``(type, length, payload)``.

    Only handshake payloads are kept (the hellos are read from them); for the others the length
    is all the audit needs.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        self._buffer += data
        records = []
        while (record := _record_at(self._buffer)) is not None:
            kind, size = record
            payload = bytes(self._buffer[5:size]) if kind == _HANDSHAKE else b""
            records.append((kind, size - 5, payload))
            del self._buffer[:size]
        return records


def _record_at(buffer: bytearray) -> tuple[int, int] | None:
    """``(type, size with header)`` of the complete record *buffer* starts with, if any."""
    if len(buffer) < 5:
        return None
    kind, major, length = buffer[0], buffer[1], int.from_bytes(buffer[3:5], "big")
    if kind not in _RECORD_TYPES or major != 3 or length > _MAX_RECORD:
        msg = f"expected a TLS record header, found bytes {bytes(buffer[:5]).hex()}"
        raise ValueError(msg)
    return (kind, 5 + length) if len(buffer) >= 5 + length else None


class _Messages:
    """Reassembles plaintext handshake messages (a hello may span records)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, payload: bytes) -> list[tuple[int, bytes]]:
        self._buffer += payload
        messages = []
        while len(self._buffer) >= 4:
            length = int.from_bytes(self._buffer[1:4], "big")
            if length > _MAX_HELLO:
                msg = f"expected a hello under {_MAX_HELLO} bytes, found one of {length}"
                raise ValueError(msg)
            if len(self._buffer) < 4 + length:
                break
            messages.append((self._buffer[0], bytes(self._buffer[4 : 4 + length])))
            del self._buffer[: 4 + length]
        return messages


class RecordWatch:
    """Follows one passed-through TLS connection and counts the program's application data.

    Show it what the program sent (`from_client`) and what the server sent (`from_server`)
    *before* relaying either: the program cannot answer a ServerHello it has not received, so
    every record it sends after the ServerHello went by is of the negotiated version.

    It also keeps the control run like the forged run in everything but the certificate. The
    forging proxy relays nothing from the server until the program has sent a byte, so here
    what the server sends once the handshake is over (TLS 1.3: after the program's Finished;
    TLS 1.2: from the server's first application-data record) is held until the program sends a
    record of its own. A protocol in which the server speaks first therefore waits in both runs
    alike, and its silence cannot pass for a refused forgery.

    Attributes:
        server_name: the SNI host name of the program's ClientHello (None without one).
        alpn: the ALPN protocols the program offered.
        version: the negotiated version (``"TLSv1.3"``…), None until the ServerHello.
        records: application-data records the program sent after its handshake.
        sent: their size in bytes, as sent (encrypted, headers excluded).
        problem: why the audit stopped following the connection, if it did.
    """

    def __init__(self) -> None:
        self._client = _Records()
        self._client_messages = _Messages()
        self._server = bytearray()  # server bytes not relayed yet
        self._server_messages = _Messages()
        self.hello = False
        self.server_name: str | None = None
        self.alpn: tuple[str, ...] = ()
        self.version: str | None = None
        self._tls13: tuple[int, int] | None = None  # (Finished record length, tag length)
        self._finished = False  # TLS 1.3: the program's Finished went by
        self._server_data = False  # TLS 1.2: the server sent an application-data record
        self._spoke = False  # the program sent a record after its handshake: nothing is held
        self.records = 0
        self.sent = 0
        self.problem: str | None = None

    @property
    def handshake_done(self) -> bool:
        """True once the program's side of the handshake is known to be over (TLS 1.3: its
        Finished went by; earlier versions: the ServerHello did, the Finished is not visible)."""
        return self.version is not None and (self._tls13 is None or self._finished)

    def _holding(self) -> bool:
        if self._spoke or self.problem is not None:
            return False
        return self._finished if self._tls13 is not None else self._server_data

    def from_client(self, data: bytes) -> bytes:
        """Account for bytes the program sent; return held server bytes it may now receive."""
        if self.problem is None:
            try:
                for kind, length, payload in self._client.feed(data):
                    self._client_record(kind, length, payload)
            except ValueError as exc:
                self.problem = f"the program's side: {exc}"
        return self._release()

    def from_server(self, data: bytes) -> bytes:
        """Account for bytes the server sent; return those the program may receive now."""
        if self._spoke or self.problem is not None:
            return self._release() + data  # past the gate for good: relay as is
        self._server += data
        out = bytearray()
        try:
            while not self._holding() and (record := _record_at(self._server)) is not None:
                kind, size = record
                if self.version is None and kind == _HANDSHAKE:
                    self._server_hello(bytes(self._server[5:size]))
                elif self.version is not None and self._tls13 is None and kind == _APPLICATION:
                    self._server_data = True  # TLS 1.2: the server speaks; hold from here
                    break
                out += self._server[:size]
                del self._server[:size]
        except ValueError as exc:
            self.problem = f"the server's side: {exc}"
        if self.problem is None and len(self._server) > _MAX_HELD:
            self.problem = f"the server sent over {_MAX_HELD} bytes before the program spoke"
        return bytes(out) + self._release()

    @property
    def held(self) -> bool:
        """True while server bytes wait for the program to speak."""
        return bool(self._server)

    def _release(self) -> bytes:
        if not (self._spoke or self.problem is not None) or not self._server:
            return b""
        held = bytes(self._server)
        self._server.clear()
        return held

    def _server_hello(self, payload: bytes) -> None:
        for kind, body in self._server_messages.feed(payload):
            if kind != _SERVER_HELLO:
                msg = f"expected a ServerHello, found handshake message type {kind}"
                raise ValueError(msg)
            retry, suite, version = _server_hello(body)
            if retry:
                continue  # a HelloRetryRequest: the real ServerHello follows a new ClientHello
            if version == 0x0304:
                if suite not in _TLS13_SUITES:
                    msg = f"unknown TLS 1.3 cipher suite 0x{suite:04x}"
                    raise ValueError(msg)
                hash_length, tag = _TLS13_SUITES[suite]
                self._tls13 = (4 + hash_length + 1 + tag, tag)
            self.version = _VERSIONS.get(version, f"version 0x{version:04x}")
            return

    def _client_record(self, kind: int, length: int, payload: bytes) -> None:
        if not self.hello:
            if kind != _HANDSHAKE:
                msg = f"expected a TLS handshake to start, found a record of type {kind}"
                raise ValueError(msg)
            for message, body in self._client_messages.feed(payload):
                if message != _CLIENT_HELLO:
                    msg = f"expected a ClientHello, found handshake message type {message}"
                    raise ValueError(msg)
                self.server_name, self.alpn = _client_hello(body)
                self.hello = True
                break
            return
        if self.version is None or kind != _APPLICATION:
            # Before the ServerHello: a second ClientHello, or 0-RTT data, which is not counted.
            # After it: handshake, alert and ChangeCipherSpec records are not application data.
            return
        if self._tls13 is None:
            self._spoke = True
            self._count(length)
            return
        finished, tag = self._tls13
        if not self._finished:
            self._finished = length == finished  # the program's flight ends with its Finished
            return
        self._spoke = True  # whatever it is (data, an alert), the program has spoken
        if length > _TLS13_NON_DATA + 1 + tag:
            self._count(length)

    def _count(self, length: int) -> None:
        self.records += 1
        self.sent += length

    def describe(self) -> str:
        """What the program did on this connection, in words."""
        if self.problem is not None and self.records == 0:
            return f"the audit could not follow the TLS records ({self.problem}); nothing counted"
        if not self.hello:
            return "the program sent no TLS ClientHello"
        if self.version is None:
            return "the server never answered with a ServerHello: no handshake took place"
        if not self.handshake_done:
            return (f"{self.version}: the program did not finish its handshake with the server "
                    "(no Finished record)")
        if self.records == 0:
            return (f"{self.version}: the handshake completed, then the program sent no "
                    "application data")
        return (f"{self.version}: the handshake completed, then the program sent {self.sent} "
                f"byte(s) of application data in {self.records} record(s)")


async def watch_tunnel(
    program: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    watch: RecordWatch,
    *,
    on_program_done: asyncio.Event,
) -> None:
    """Relay bytes both ways through *watch*, which sees them first and may hold the server's.

    *on_program_done* is set when the program can send nothing more (it closed or reset), so the
    audit can record the connection without waiting for the server to hang up too.
    """
    server_done = False

    def end(writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()
            else:
                writer.close()

    async def from_program() -> None:
        try:
            while data := await program[0].read(65536):
                released = watch.from_client(data)
                server[1].write(data)
                if released:  # the server's words the program has now earned, in order
                    program[1].write(released)
                    if server_done:
                        end(program[1])
                await server[1].drain()
        except (OSError, ssl.SSLError):
            pass  # TimeoutError is an OSError
        finally:
            on_program_done.set()
            end(server[1])

    async def from_server() -> None:
        nonlocal server_done
        try:
            while data := await server[0].read(65536):
                if out := watch.from_server(data):
                    program[1].write(out)
                    await program[1].drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            server_done = True
            if not watch.held:  # else the end follows the held bytes, once they are released
                end(program[1])

    await asyncio.gather(from_program(), from_server())
