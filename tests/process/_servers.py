"""Real servers on 127.0.0.1 for the process-wide proofs: mosquitto, redis-server, moto_server,
aiosmtpd, a websockets echo server and a PEP 503 package index, each with TLS.

Each is a context manager on a free port. A missing binary fails under ``CI`` (scripts/test
installs them all) and skips otherwise.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tlspin.testing.pki import Leaf, server_context


def need(binary: str, *fallbacks: str) -> str:
    """The path of *binary*; a missing one fails under CI and skips otherwise."""
    found = shutil.which(binary) or next((f for f in fallbacks if os.access(f, os.X_OK)), None)
    if found is None:
        msg = f"{binary} is not installed (scripts/test installs it)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return found


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (a server binds it right after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    tail = log.read_text()[-3000:]
    pytest.fail(f"{what} did not listen on 127.0.0.1:{port} within 30 s:\n{tail}")


@contextlib.contextmanager
def _process(cmd: list[str], port: int, directory: Path, what: str) -> Iterator[Path]:
    log = directory / f"{what}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=directory)
    try:
        _wait_port(port, proc, log, what)
        yield log
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _readable_dir() -> Path:
    # pytest's tmp dirs are 0700 as root; mosquitto drops to its own user and must read here.
    directory = Path(tempfile.mkdtemp(prefix="tlspin-srv-"))
    directory.chmod(0o755)
    return directory


@dataclass
class Service:
    """A started server: where it listens and its log."""

    port: int
    directory: Path
    log: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def mosquitto(leaf: Leaf, cafile: str) -> Iterator[Service]:
    """Debian's mosquitto with one TLS listener serving *leaf*."""
    exe = need("mosquitto", "/usr/sbin/mosquitto")
    directory = _readable_dir()
    try:
        chain, key = leaf.write(directory)
        chain.chmod(0o644)
        if os.geteuid() == 0:
            # As root mosquitto drops to the user "mosquitto", which must read its key.
            with contextlib.suppress(KeyError):
                os.chown(key, pwd.getpwnam("mosquitto").pw_uid, -1)
        ca = directory / "ca.pem"
        shutil.copyfile(cafile, ca)
        ca.chmod(0o644)
        port = free_port()
        conf = directory / "mosquitto.conf"
        conf.write_text(
            "per_listener_settings false\n"
            f"listener {port} 127.0.0.1\n"
            f"cafile {ca}\ncertfile {chain}\nkeyfile {key}\n"
            "allow_anonymous true\npersistence false\nlog_dest stderr\nlog_type all\n"
        )
        with _process([exe, "-c", str(conf)], port, directory, "mosquitto") as log:
            yield Service(port, directory, log)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def redis_server(leaf: Leaf, cafile: str) -> Iterator[Service]:
    """Debian's redis-server, TLS only, serving *leaf*."""
    exe = need("redis-server")
    directory = _readable_dir()
    try:
        chain, key = leaf.write(directory)
        port = free_port()
        cmd = [
            exe, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(chain), "--tls-key-file", str(key),
            "--tls-ca-cert-file", cafile, "--tls-auth-clients", "no",
            "--save", "", "--appendonly", "no", "--dir", str(directory),
        ]
        with _process(cmd, port, directory, "redis") as log:
            yield Service(port, directory, log)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def moto_s3(leaf: Leaf) -> Iterator[Service]:
    """moto's S3 API server over HTTPS serving *leaf*."""
    exe = need("moto_server", str(Path(sys.executable).with_name("moto_server")))
    directory = _readable_dir()
    try:
        chain, key = leaf.write(directory)
        port = free_port()
        cmd = [exe, "-H", "127.0.0.1", "-p", str(port), "-s", "-c", str(chain), "-k", str(key)]
        with _process(cmd, port, directory, "moto") as log:
            yield Service(port, directory, log)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class MailRecorder:
    """An aiosmtpd handler that records every MAIL FROM and message."""

    def __init__(self) -> None:
        self.mail_from: list[str] = []
        self.messages: list[bytes] = []

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        """Record the sender (an application command, only ever sent after STARTTLS)."""
        self.mail_from.append(address)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Record the message."""
        self.messages.append(envelope.content)
        return "250 Message accepted"


@contextlib.contextmanager
def smtp(leaf: Leaf) -> Iterator[Service]:
    """aiosmtpd requiring STARTTLS, serving *leaf*; ``extra["handler"]`` is its MailRecorder."""
    from aiosmtpd.controller import Controller

    ctx = server_context(leaf, alpn=None)
    handler = MailRecorder()
    port = free_port()
    controller = Controller(
        handler, hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True
    )
    controller.start()
    try:
        yield Service(port, Path(), extra={"handler": handler})
    finally:
        controller.stop()


@contextlib.contextmanager
def websocket_echo(leaf: Leaf) -> Iterator[Service]:
    """A websockets (sync) echo server over TLS; ``extra["messages"]`` lists what it received."""
    from websockets.sync.server import serve

    messages: list[str | bytes] = []

    def echo(ws: Any) -> None:
        for message in ws:
            messages.append(message)
            ws.send(message)

    server = serve(echo, "127.0.0.1", 0, ssl=server_context(leaf, alpn=None))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Service(server.socket.getsockname()[1], Path(), extra={"messages": messages})
    finally:
        server.shutdown()
        thread.join(10)


def _wheel(directory: Path) -> tuple[str, str]:
    """Write a tiny pure-Python wheel; return its file name and SHA-256 (hex)."""
    name = "tlspin_probe-1.0-py3-none-any.whl"
    files = {
        "tlspin_probe/__init__.py": b"VALUE = 1\n",
        "tlspin_probe-1.0.dist-info/METADATA": (
            b"Metadata-Version: 2.1\nName: tlspin-probe\nVersion: 1.0\n"
        ),
        "tlspin_probe-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: tlspin-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append("tlspin_probe-1.0.dist-info/RECORD,,")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr("tlspin_probe-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    (directory / "files").mkdir()
    (directory / "files" / name).write_bytes(buffer.getvalue())
    return name, hashlib.sha256(buffer.getvalue()).hexdigest()


@contextlib.contextmanager
def package_index(leaf: Leaf) -> Iterator[Service]:
    """A PEP 503 index over HTTPS (one project, ``tlspin-probe``); ``extra["requests"]``."""
    directory = Path(tempfile.mkdtemp(prefix="tlspin-index-"))
    requests: list[str] = []
    try:
        name, digest = _wheel(directory)
        project = directory / "simple" / "tlspin-probe"
        project.mkdir(parents=True)
        (project / "index.html").write_text(
            f'<!DOCTYPE html><html><body><a href="/files/{name}#sha256={digest}">{name}</a>'
            "</body></html>\n"
        )

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(directory), **kwargs)

            def log_message(self, format: str, *args: Any) -> None:
                requests.append(self.requestline)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.socket = server_context(leaf, alpn=None).wrap_socket(
            server.socket, server_side=True
        )
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield Service(server.server_address[1], directory, extra={"requests": requests})
        finally:
            server.shutdown()
            server.server_close()
            thread.join(10)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def client_trust(*cafiles: str) -> ssl.SSLContext:
    """A plain verifying client context trusting *cafiles* (for relays and checkers)."""
    ctx = ssl.create_default_context()
    for cafile in cafiles:
        ctx.load_verify_locations(cafile)
    return ctx
