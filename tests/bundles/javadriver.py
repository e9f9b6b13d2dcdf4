"""The Java driver (io.tlspin.bundles.Driver) and the loopback servers the Java tests share.

The JVM trusts two CAs (the test CA and a rogue one) through a KeyStore built from their PEMs,
so a forged leaf is valid to it: only the pins can refuse it. The long-lived Java process takes
one JSON command per line; every host name resolves to 127.0.0.1 there.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tlspin.testing.pki import CA, Leaf, server_context

from .conftest import BUNDLE_HOST, BundleServer, Pki, public

__all__ = [
    "AuthProxy",
    "EchoServer",
    "Java",
    "World",
    "get",
    "init_updater",
    "java",
    "java_classpath",
    "rules",
    "tool",
    "world",
]

JAVA_DIR = Path(__file__).parents[2] / "clients" / "java"


def tool(name: str, env: str) -> str:
    found = os.environ.get(env) or shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found (scripts/test installs the JDK and exports {env})")
    return found


@pytest.fixture(scope="session")
def java_classpath() -> str:
    """Build clients/java and the README's Kotlin example (cached by content hash)."""
    tool("kotlinc", "TLSPIN_KOTLINC")
    result = subprocess.run(
        [str(JAVA_DIR / "build.sh"), "--kotlin", "--classpath"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"clients/java/build.sh failed:\n{result.stderr[-4000:]}")
    return result.stdout.strip().splitlines()[-1]


class Java:
    """The Driver process: ``java(cmd, **args)`` sends one command and returns the answer."""

    def __init__(self, classpath: str) -> None:
        self.proc = subprocess.Popen(
            [tool("java", "TLSPIN_JAVA"), "-cp", classpath, "io.tlspin.bundles.Driver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )

    def __call__(self, cmd: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            _, err = self.proc.communicate(timeout=10)
            pytest.fail(f"the Java driver ended: {err[-3000:]}")
        answer: dict[str, Any] = json.loads(line)
        assert "error" not in answer, answer["error"]
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@dataclass
class World:
    """The servers and keys the tests share."""

    pki: Pki
    rogue: CA
    cas: list[str]
    legit_api: BundleServer  # api.test, a leaf of the test CA (pki.api_old's key)
    other_api: BundleServer  # api.test, another leaf of the test CA (pki.api_new's key)
    forged_api: BundleServer  # api.test, a leaf of the rogue CA the JVM also trusts
    padded_api: BundleServer  # the forged leaf, served with the test CA's certificate appended
    forged_bundle: BundleServer  # 127.0.0.1 (the update host), a leaf of the rogue CA
    deep: BundleServer  # a.b.deep.test, test CA
    forged_deep: BundleServer  # a.b.deep.test, rogue CA

    def api(self, server: BundleServer, host: str = "api.test") -> str:
        return f"https://{host}:{server.port}/"


@pytest.fixture(scope="module")
def world(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """HTTPS servers on 127.0.0.1 for the legitimate and the forged hosts."""
    tmp = tmp_path_factory.mktemp("java-pki")
    rogue = CA.root("rogue CA the JVM trusts")
    forged = rogue.issue("api.test")
    servers = {
        "legit_api": BundleServer(pki.api_old),
        "other_api": BundleServer(pki.api_new),
        "forged_api": BundleServer(forged),
        "padded_api": BundleServer(Leaf(forged.cert, forged.key, [pki.ca.cert])),
        "forged_bundle": BundleServer(rogue.issue(BUNDLE_HOST)),
        "deep": BundleServer(pki.ca.issue("a.b.deep.test")),
        "forged_deep": BundleServer(rogue.issue("a.b.deep.test")),
    }
    for server in servers.values():
        server.serve(b"{}")
    try:
        yield World(pki, rogue, [pki.cafile, str(rogue.write(tmp, name="rogue"))], **servers)
    finally:
        for server in servers.values():
            server.close()


@pytest.fixture(scope="module")
def java(java_classpath: str) -> Iterator[Java]:
    """One Java driver process for the module; each test's `init` starts a fresh updater."""
    driver = Java(java_classpath)
    yield driver
    driver.close()


def rules(world: World, api_pins: list[str], **api_options: Any) -> dict[str, Any]:
    """A policy (JSON data): the update host pinned to the test CA, api.test to *api_pins*."""
    return {
        "rule": [
            {"hosts": [BUNDLE_HOST], "pins": [world.pki.ca.pin, world.pki.backup]},
            {"hosts": ["api.test"], "pins": api_pins, **api_options},
        ]
    }


def init_updater(
    java: Java, world: World, url: str, store: Path, key: Ed25519PrivateKey, **more: Any
) -> None:
    """Start a fresh updater in the driver: trusting *key*, the embedded policy pinning the
    update host and api.test (api_old's key), unless *more* gives another ``fallback``."""
    fallback = rules(world, [world.pki.api_old.pin, world.pki.backup])
    java(
        "init",
        url=url,
        keys=[public(key).b64],
        threshold=1,
        store=str(store),
        fallback=json.dumps(more.pop("fallback", fallback)),
        cas=world.cas,
        **more,
    )


def get(java: Java, url: str, pinning: str = "both") -> dict[str, Any]:
    """One HTTPS request through the driver, with the updater's pins as *pinning* says."""
    return java("get", url=url, pinning=pinning)


class EchoServer:
    """HTTP/1.1 with keep-alive and WebSocket (RFC 6455) on 127.0.0.1, over TLS with *leaf*, or
    in clear text without one. It records every connection and every byte it receives.

    A GET gets ``200 ok`` on a connection that stays open; a WebSocket upgrade gets ``101``,
    then the first text frame is answered with ``echo: <text>``.
    """

    def __init__(self, leaf: Leaf | None) -> None:
        self.context = server_context(leaf) if leaf is not None else None
        self.connections = 0  # TCP connections whose TLS handshake completed (or any, in clear)
        self.heads: list[str] = []  # request heads received
        self.frames: list[str] = []  # WebSocket text received
        self.lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def received_nothing(self) -> bool:
        """True if no request byte ever arrived."""
        with self.lock:
            return not self.heads and not self.frames

    def close(self) -> None:
        """Stop accepting."""
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(60)
        try:
            conn = (
                self.context.wrap_socket(raw, server_side=True) if self.context is not None else raw
            )
        except (OSError, ssl.SSLError):
            raw.close()
            return
        with self.lock:
            self.connections += 1
        try:
            buffered = b""
            while True:
                while b"\r\n\r\n" not in buffered:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffered += chunk
                head, _, buffered = buffered.partition(b"\r\n\r\n")
                text = head.decode("latin-1")
                with self.lock:
                    self.heads.append(text)
                if "upgrade: websocket" in text.lower():
                    self._websocket(conn, text, buffered)
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except (OSError, ssl.SSLError):
            return
        finally:
            conn.close()

    def _websocket(self, conn: socket.socket, head: str, buffered: bytes) -> None:
        key = next(
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith("sec-websocket-key:")
        )
        magic = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        accept = base64.b64encode(hashlib.sha1((key + magic).encode()).digest()).decode()
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )

        def need(n: int) -> bytes:
            nonlocal buffered
            while len(buffered) < n:
                chunk = conn.recv(65536)
                if not chunk:
                    raise OSError("closed")
                buffered += chunk
            out, buffered = buffered[:n], buffered[n:]
            return out

        first = need(2)
        length = first[1] & 0x7F
        if length == 126:
            length = int.from_bytes(need(2), "big")
        mask = need(4)
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(need(length))).decode()
        with self.lock:
            self.frames.append(data)
        answer = f"echo: {data}".encode()
        conn.sendall(bytes([0x81, len(answer)]) + answer)
        # The client's close frame (masked, with a status code), answered with ours.
        close = need(2)
        need((close[1] & 0x7F) + 4)
        conn.sendall(b"\x88\x02\x03\xe8")


class AuthProxy:
    """An HTTP CONNECT proxy on 127.0.0.1 that wants ``Proxy-Authorization: Basic <credentials>``
    (answering 407 and closing otherwise), then tunnels to 127.0.0.1. It records the
    ``Proxy-Authorization`` header of every CONNECT (None when absent)."""

    def __init__(self, credentials: str) -> None:
        self.expected = "Basic " + base64.b64encode(credentials.encode()).decode()
        self.connects: list[str | None] = []
        self.lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        """Stop accepting."""
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(60)
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            auth = next(
                (
                    v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:])
                    if k.lower() == "proxy-authorization"
                ),
                None,
            )
            with self.lock:
                self.connects.append(auth)
            method, target, _ = lines[0].split(" ", 2)
            host, _, port = target.rpartition(":")
            if method != "CONNECT" or host != "127.0.0.1":
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\n")
                return
            if auth != self.expected:
                client.sendall(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="proxy"\r\nContent-Length: 0\r\n'
                    b"Connection: close\r\n\r\n"
                )
                return
            with socket.create_connection(("127.0.0.1", int(port)), timeout=60) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                pipe = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
                pipe.start()
                _pipe(client, upstream)
                pipe.join(60)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
