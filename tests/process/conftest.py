"""Fixtures for the process-wide proofs: one PKI, one policy, real servers, forging relays.

The servers present the legitimate leaf; a `ForgingRelay` in front of each presents a leaf that
the attacker's CA issued for the same names. Clients trust both CAs (`World.cafile`), so without
pins they would accept the relay; the policy pins the legitimate keys only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

import tlspin
from tlspin.testing.pki import Leaf, spki_pin
from tlspin.testing.scenarios import ServerPKI

from . import _clients, _reactor, _servers
from ._relay import ForgingRelay

CLIENTS = Path(__file__).with_name("_clients.py")


@pytest.fixture(scope="session", autouse=True)
def _stop_reactor() -> Iterator[None]:
    """Stop the session's reactor thread (if a test started it) and the SDK clients at the end."""
    yield
    _reactor.stop()
    for sdk in _clients._SDK.values():
        sdk.close()
    _clients._SDK.clear()


@dataclass
class World:
    """The certificates, trust bundle and policy every proof shares."""

    pki: ServerPKI
    forged: Leaf
    cafile: str  # server root + attacker root (+ the PostgreSQL CA)
    policy_path: str
    policy: tlspin.PinPolicy
    pg: dict[str, Any] | None


def _pg() -> dict[str, Any] | None:
    cafile = os.environ.get("TLSPIN_TEST_PG_CAFILE")
    if not cafile:
        return None
    cert = x509.load_pem_x509_certificate(Path(os.environ["TLSPIN_TEST_PG_CERT"]).read_bytes())
    return {
        "cafile": cafile,
        "pin": spki_pin(cert.public_bytes(Encoding.DER)),
        "port": int(os.environ["TLSPIN_TEST_PG_PORT"]),
        "user": os.environ["TLSPIN_TEST_PG_USER"],
    }


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """One PKI for every server, the attacker's leaf, and the policy pinning the real keys."""
    directory = tmp_path_factory.mktemp("world")
    pki = ServerPKI(directory, names=("localhost", "127.0.0.1"))
    pg = _pg()
    bundle = directory / "trust.pem"
    bundle.write_bytes(
        pki.root.cert_pem + pki.attacker.cert_pem + (Path(pg["cafile"]).read_bytes() if pg else b"")
    )
    pins = [pki.leaf_pin, pki.backup_pin, *([pg["pin"]] if pg else [])]
    quoted = ", ".join(f'"{p}"' for p in pins)
    policy_path = directory / "pins.toml"
    policy_path.write_text(f'[[rule]]\nhosts = ["localhost", "127.0.0.1"]\npins = [{quoted}]\n')
    return World(
        pki=pki,
        forged=pki.attacker.issue("localhost", "127.0.0.1"),
        cafile=str(bundle),
        policy_path=str(policy_path),
        policy=tlspin.PinPolicy.load(policy_path),
        pg=pg,
    )


@pytest.fixture
def relay(world: World) -> Iterator[Callable[..., ForgingRelay]]:
    """``relay(port, postgres=False)``: a started forging relay in front of 127.0.0.1:port."""
    made: list[ForgingRelay] = []

    def make(port: int, *, postgres: bool = False, cafile: str | None = None) -> ForgingRelay:
        upstream = _servers.client_trust(cafile or world.cafile)
        r = ForgingRelay(
            world.forged, ("127.0.0.1", port), upstream_ssl=upstream, postgres=postgres
        ).start()
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


def child_env() -> dict[str, str]:
    """The environment of a child: no trust-store, proxy or pip variables of the machine."""
    return {
        k: v for k, v in os.environ.items()
        if not (k.endswith("_CA_BUNDLE") or k.startswith(("PIP_", "SSL_CERT_", "TLSPIN_POLICY")))
        and k.lower() not in ("https_proxy", "http_proxy", "all_proxy", "no_proxy")
    }


def tlspin_run(world: World, command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``tlspin run --policy P -- COMMAND`` with the child environment."""
    exe = str(Path(sys.executable).with_name("tlspin"))
    return subprocess.run(
        [exe, "run", "--policy", world.policy_path, "--", *command],
        env=kwargs.pop("env", child_env()), capture_output=True, text=True, timeout=180,
        check=False, **kwargs,
    )


@pytest.fixture
def outcome(world: World, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """``outcome(mode, name, **cfg)``: run client operation *name* plain, under inject or run."""

    def run(mode: str, name: str, **cfg: Any) -> dict[str, Any]:
        cfg.setdefault("cafile", world.cafile)
        if mode == "plain":
            return _clients.attempt(name, cfg)
        if mode == "inject":
            with tlspin.injected(world.policy):
                return _clients.attempt(name, cfg)
        assert mode == "run", mode
        out = tmp_path / f"outcome-{len(list(tmp_path.glob('outcome-*')))}.json"
        done = tlspin_run(world, [sys.executable, str(CLIENTS), name, json.dumps(cfg), str(out)])
        assert done.returncode == 0, f"rc {done.returncode}: {done.stderr[-3000:]}"
        result: dict[str, Any] = json.loads(out.read_text())
        return result

    return run


@pytest.fixture(scope="session")
def mosquitto(world: World) -> Iterator[_servers.Service]:
    """Debian's mosquitto with TLS, for the session."""
    with _servers.mosquitto(world.pki.leaf, str(world.pki.root.write(world.pki.directory))) as s:
        yield s


@pytest.fixture(scope="session")
def redis_server(world: World) -> Iterator[_servers.Service]:
    """Debian's redis-server with TLS only, for the session."""
    with _servers.redis_server(world.pki.leaf, world.cafile) as s:
        yield s


@pytest.fixture(scope="session")
def moto(world: World) -> Iterator[_servers.Service]:
    """moto_server (S3) over HTTPS, for the session."""
    with _servers.moto_s3(world.pki.leaf) as s:
        yield s


@pytest.fixture(scope="session")
def smtp_servers(world: World) -> Iterator[tuple[_servers.Service, _servers.Service]]:
    """aiosmtpd requiring STARTTLS: the real server and an impostor with the forged leaf."""
    with _servers.smtp(world.pki.leaf) as good, _servers.smtp(world.forged) as bad:
        yield good, bad


@pytest.fixture(scope="session")
def ws_echo(world: World) -> Iterator[_servers.Service]:
    """A websockets echo server over TLS, for the session."""
    with _servers.websocket_echo(world.pki.leaf) as s:
        yield s


@pytest.fixture(scope="session")
def package_index(world: World) -> Iterator[_servers.Service]:
    """A PEP 503 index over HTTPS, for the session."""
    with _servers.package_index(world.pki.leaf) as s:
        yield s
