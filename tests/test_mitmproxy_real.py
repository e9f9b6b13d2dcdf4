"""The real attacker: PyPI's mitmproxy (``mitmdump``) against unpinned and tlspin-pinned clients.

One mitmdump process serves both modes for the whole module: a regular (CONNECT) proxy and a
reverse proxy in front of the loopback origin. The client trusts mitmproxy's own CA, as a
device with a user- or malware-installed root would. An addon script writes every request
line mitmproxy reads to a file: that file is the attacker's loot.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

import tlspin
from tlspin.integrations.requests import session
from tlspin.testing.assertions import assert_refused
from tlspin.testing.pki import CA, Leaf
from tlspin.testing.servers import TLSServer

ROOT = Path(__file__).resolve().parents[1]

ADDON = """
import os
from mitmproxy import http

LOOT = os.environ["TLSPIN_MITM_LOOT"]


class Loot:
    def request(self, flow: http.HTTPFlow) -> None:
        mode = flow.client_conn.proxy_mode.type_name
        line = f"{mode} {flow.request.method} {flow.request.path} {flow.request.http_version}"
        with open(LOOT, "a", encoding="utf-8") as handle:
            handle.write(line + "\\n")


addons = [Loot()]
"""


def find_mitmdump() -> str:
    """Locate mitmdump: $TLSPIN_MITMDUMP, then .venv-mitm/bin/mitmdump, then PATH."""
    configured = os.environ.get("TLSPIN_MITMDUMP")
    if configured:
        return configured
    local = ROOT / ".venv-mitm" / "bin" / "mitmdump"
    if local.exists():
        return str(local)
    found = shutil.which("mitmdump")
    if found:
        return found
    reason = (
        "mitmdump not found: set TLSPIN_MITMDUMP or create .venv-mitm "
        "(scripts/test does: python3.12 -m venv .venv-mitm && .venv-mitm/bin/pip install mitmproxy)"
    )
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (mitmdump needs a concrete one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until *port* accepts connections, or fail with mitmdump's output."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mitmdump exited with {proc.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"mitmdump did not listen on {port} within 60 s:\n{log.read_text()}")


@dataclass
class Attack:
    """The running mitmdump, the origin behind it, and the trust the client is given."""

    origin: TLSServer
    leaf: Leaf
    backup_pin: str
    regular_port: int
    reverse_port: int
    cafile: str
    loot: Path

    def looted(self) -> list[str]:
        """Request lines mitmproxy has read so far."""
        return self.loot.read_text().splitlines() if self.loot.exists() else []

    def policy(self) -> tlspin.PinPolicy:
        """Pins of the origin's leaf key plus a backup key."""
        return tlspin.PinPolicy.from_mapping({"localhost": [self.leaf.pin, self.backup_pin]})


@pytest.fixture(scope="module")
def attack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Attack]:
    """Start the origin and one mitmdump with a regular and a reverse listener."""
    mitmdump = find_mitmdump()
    tmp = tmp_path_factory.mktemp("mitm")
    root = CA.root("origin root")
    leaf = root.intermediate("origin intermediate").issue("localhost", "127.0.0.1")
    backup_pin = CA.root("offline backup").issue("backup.invalid").pin
    origin_ca = root.write(tmp, name="origin-root")
    (tmp / "addon.py").write_text(ADDON)
    loot, log, confdir = tmp / "loot.txt", tmp / "mitmdump.log", tmp / "confdir"
    regular, reverse = free_port(), free_port()
    with TLSServer(leaf, host="127.0.0.1") as origin:
        command = [
            mitmdump, "--listen-host", "127.0.0.1",
            "--mode", f"regular@{regular}",
            "--mode", f"reverse:https://127.0.0.1:{origin.port}/@{reverse}",
            "--set", f"confdir={confdir}",
            "--set", f"ssl_verify_upstream_trusted_ca={origin_ca}",
            # Contact the origin only when a request arrives, so refusals reach nobody.
            "--set", "connection_strategy=lazy",
            "-s", str(tmp / "addon.py"),
        ]
        env = dict(os.environ, TLSPIN_MITM_LOOT=str(loot))
        with log.open("wb") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            wait_listening(regular, proc, log)
            wait_listening(reverse, proc, log)
            mitm_ca = confdir / "mitmproxy-ca-cert.pem"
            bundle = tmp / "client-trust.pem"
            bundle.write_bytes(root.cert_pem + mitm_ca.read_bytes())
            yield Attack(origin, leaf, backup_pin, regular, reverse, str(bundle), loot)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def unpinned(attack: Attack) -> requests.Session:
    """A client that trusts mitmproxy's CA and pins nothing."""
    client = requests.Session()
    client.verify = attack.cafile
    return client


def pinned(attack: Attack) -> requests.Session:
    """A client that trusts mitmproxy's CA too, but pins the origin's key."""
    return session(attack.policy(), cafile=attack.cafile)


def via_proxy(client: requests.Session, attack: Attack) -> requests.Session:
    """Send the client's HTTPS through mitmproxy's regular (CONNECT) listener."""
    client.proxies = {"https": f"http://127.0.0.1:{attack.regular_port}"}
    return client


def test_regular_mode_intercepts_unpinned_client(attack: Attack) -> None:
    """mitmproxy (regular mode) reads the request of a client that only checks CAs."""
    with via_proxy(unpinned(attack), attack) as client:
        response = client.get(f"https://localhost:{attack.origin.port}/regular-unpinned")
    assert response.status_code == 200
    assert "regular GET /regular-unpinned HTTP/1.1" in attack.looted()
    assert "GET /regular-unpinned HTTP/1.1" in attack.origin.requests


def test_regular_mode_refused_by_pinned_client(attack: Attack) -> None:
    """A tlspin-pinned client refuses mitmproxy's forged certificate; nobody reads a byte."""
    with via_proxy(pinned(attack), attack) as client:
        error = assert_refused(
            lambda: client.get(f"https://localhost:{attack.origin.port}/regular-pinned"),
            servers=[attack.origin],
        )
    assert isinstance(error, tlspin.PinMismatchError)
    assert not any("/regular-pinned" in line for line in attack.looted())
    assert "GET /regular-pinned HTTP/1.1" not in attack.origin.requests


def test_reverse_mode_intercepts_unpinned_client(attack: Attack) -> None:
    """mitmproxy (reverse mode) impersonates the origin to a client that only checks CAs."""
    with unpinned(attack) as client:
        response = client.get(f"https://localhost:{attack.reverse_port}/reverse-unpinned")
    assert response.status_code == 200
    assert "reverse GET /reverse-unpinned HTTP/1.1" in attack.looted()
    assert "GET /reverse-unpinned HTTP/1.1" in attack.origin.requests


def test_reverse_mode_refused_by_pinned_client(attack: Attack) -> None:
    """A tlspin-pinned client refuses mitmproxy in reverse mode; nobody reads a byte."""
    with pinned(attack) as client:
        assert_refused(
            lambda: client.get(f"https://localhost:{attack.reverse_port}/reverse-pinned"),
            servers=[attack.origin],
        )
    assert not any("/reverse-pinned" in line for line in attack.looted())


def test_pinned_client_reaches_the_origin_directly(attack: Attack) -> None:
    """Control: the pinned client works without the attacker, so its pins are right."""
    with pinned(attack) as client:
        response = client.get(f"https://localhost:{attack.origin.port}/direct-pinned")
    assert response.status_code == 200
    assert "GET /direct-pinned HTTP/1.1" in attack.origin.requests
    assert not any("/direct-pinned" in line for line in attack.looted())
