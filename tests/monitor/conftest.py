"""Fixtures for the monitor tests: a small PKI, a trusting context and a webhook receiver."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from _httpd import HTTPThread, QuietHandler
from tlspin.monitor import MonitorRun, Target, run_once, verified_context
from tlspin.policy import PinPolicy
from tlspin.testing.pki import CA


@dataclass
class PKI:
    """Two trusted intermediates under one root, a spare key and an untrusted CA."""

    root: CA
    int1: CA
    int2: CA
    backup: CA
    untrusted: CA


@pytest.fixture(scope="session")
def pki() -> PKI:
    """One PKI for the whole monitor suite (EC keys, so it is quick to make)."""
    root = CA.root("monitor root")
    return PKI(
        root=root,
        int1=root.intermediate("Issuing CA 1"),
        int2=root.intermediate("Issuing CA 2"),
        backup=CA.root("offline backup key"),
        untrusted=CA.root("untrusted root"),
    )


@pytest.fixture
def run(pki: PKI):  # type: ignore[no-untyped-def]
    """Run the monitor once against loopback targets, trusting the test root only."""
    context = verified_context(cadata=pki.root.cert_pem.decode())

    def _run(
        policy: PinPolicy,
        targets: Sequence[Target],
        *,
        previous: dict[str, dict[str, Any]] | None = None,
        **options: Any,
    ) -> MonitorRun:
        return asyncio.run(
            run_once(policy, list(targets), context=context, previous=previous, **options)
        )

    return _run


class WebhookReceiver(HTTPThread):
    """An HTTP server on 127.0.0.1 that records every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(size))
                with receiver.cond:
                    receiver.bodies.append(body)
                    receiver.cond.notify_all()
                self.send_response(204)
                self.end_headers()

        super().__init__(Handler)
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least *count* bodies arrived; return them all."""
        with self.cond:
            self.cond.wait_for(lambda: len(self.bodies) >= count, timeout)
            return list(self.bodies)


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    """A real webhook receiver on loopback."""
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening (bound once, then released)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts connections and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        """Close the listener and every accepted connection."""
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    """A server that accepts TCP and never speaks TLS."""
    server = SilentServer()
    yield server
    server.close()
