"""``tlspin serve`` as a real subprocess for the collector tests, and what drives it."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from .conftest import TOKEN


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Collector:
    """``python -m tlspin serve`` as a subprocess on 127.0.0.1."""

    def __init__(self, db_url: str, port: int, *, token: str | None = TOKEN,
                 args: Sequence[str] = (), ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        env = {k: v for k, v in os.environ.items() if k != "TLSPIN_COLLECTOR_TOKEN"}
        if token is not None:
            env["TLSPIN_COLLECTOR_TOKEN"] = token
        self.port = port
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tlspin", "serve", "--db", db_url, "--port", str(port),
             "--ip-rate-limit", "1000000/1", "--log-level", "warning", *args],
            env=env, stderr=subprocess.STDOUT, stdout=subprocess.PIPE, text=True,
        )
        self.output: list[str] = []
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()
        deadline = time.monotonic() + 30
        while not self._healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("collector did not start: " + "".join(self.output))
            time.sleep(0.05)

    def _drain(self) -> None:
        # stdout and stderr both: a token must appear on neither.
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def text(self) -> str:
        """Everything printed so far, once the start-up notes (the last says "Bearer") are in."""
        deadline = time.monotonic() + 10
        while not any("Bearer" in line for line in self.output) and time.monotonic() < deadline:
            time.sleep(0.02)
        return "".join(self.output)

    def status(self, token: str | None, path: str = "/api/incidents") -> int:
        """HTTP status of a GET of *path* with *token* as the bearer token (None: none)."""
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def post(self, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """POST *body* to /reports; the status and the answer."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", "/reports", body=body,
                         headers={"Content-Type": "application/json", **(headers or {})})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def _healthy(self) -> bool:
        try:
            conn = (
                http.client.HTTPSConnection("127.0.0.1", self.port, timeout=2,
                                            context=self.ssl_context)
                if self.ssl_context is not None
                else http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            )
            conn.request("GET", "/healthz")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown at all."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close_pipe()

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close_pipe()

    def _close_pipe(self) -> None:
        self._drainer.join(5)
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()
