"""Session-wide PKI, origins and proxies for the client-integration matrix.

The origins are reached by IP literal (``127.0.0.1`` and ``::1``), which are the pinned hosts;
the proxies are reached as ``localhost``, which no policy pins, so only the origin leg inside
each tunnel is checked against the origin's pins.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tlspin import PinPolicy
from tlspin.testing.pki import CA, Leaf, client_trust_context, generate_key
from tlspin.testing.proxies import ConnectProxy, MitmProxy
from tlspin.testing.servers import TLSServer

from ._hostile import InjectingProxy

FAMILIES = ("127.0.0.1", "::1")
BODY = b"pinned origin says hi"


def _pin_of_key(key: object) -> str:
    spki = key.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256/" + base64.b64encode(hashlib.sha256(spki).digest()).decode()


@dataclass(frozen=True)
class Pki:
    """Every certificate the matrix needs."""

    root: CA
    intermediate: CA
    leaf: Leaf
    backup_leaf: Leaf  # the same names, certified for the backup key (a key rotation)
    backup_pin: str
    attacker: CA  # trusted by the clients too, as a corporate or compromised CA would be
    forged: Leaf
    appended: Leaf  # forged leaf + the legitimate intermediate and root appended
    proxy_ca: CA
    proxy_leaf: Leaf
    unrelated_pins: tuple[str, str]
    cafile: str  # root + attacker + proxy CA


@pytest.fixture(scope="session")
def good_policy(pki: Pki) -> PinPolicy:
    """Pins the legitimate leaf (and a backup) for both origin addresses."""
    pins = [pki.leaf.pin, pki.backup_pin]
    return PinPolicy.from_mapping({"127.0.0.1": pins, "::1": pins})


@pytest.fixture(scope="session")
def bad_policy(pki: Pki) -> PinPolicy:
    """Pins keys no origin has, for both origin addresses."""
    pins = list(pki.unrelated_pins)
    return PinPolicy.from_mapping({"127.0.0.1": pins, "::1": pins})


@pytest.fixture(scope="session")
def root_only_cafile(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A CA file with the legitimate root alone (no attacker, no proxy CA)."""
    return str(pki.root.write(tmp_path_factory.mktemp("root-only")))


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Build the matrix PKI once."""
    root = CA.root("tlspin matrix root")
    intermediate = root.intermediate("tlspin matrix intermediate")
    names = ("127.0.0.1", "::1", "localhost")
    leaf = intermediate.issue(*names)
    backup = generate_key()
    backup_leaf = intermediate.issue(*names, key=backup)
    attacker = CA.root("tlspin matrix attacker root")
    forged = attacker.issue(*names)
    appended = Leaf(forged.cert, forged.key, [intermediate.cert, root.cert])
    proxy_ca = CA.root("tlspin matrix proxy CA")
    proxy_leaf = proxy_ca.issue("localhost")
    directory = tmp_path_factory.mktemp("matrix-pki")
    cafile = Path(directory, "trusted.pem")
    cafile.write_bytes(root.cert_pem + attacker.cert_pem + proxy_ca.cert_pem)
    return Pki(
        root=root,
        intermediate=intermediate,
        leaf=leaf,
        backup_leaf=backup_leaf,
        backup_pin=_pin_of_key(backup),
        attacker=attacker,
        forged=forged,
        appended=appended,
        proxy_ca=proxy_ca,
        proxy_leaf=proxy_leaf,
        unrelated_pins=(_pin_of_key(generate_key()), _pin_of_key(generate_key())),
        cafile=str(cafile),
    )


@dataclass(frozen=True)
class Origins:
    """Servers per role and address family."""

    good: dict[str, TLSServer]  # legitimate leaf; only successful tests talk to it
    rotated: dict[str, TLSServer]  # legitimate chain, leaf on the backup key
    victim: dict[str, TLSServer]  # legitimate leaf; only wrong-pin tests talk to it
    mitm: dict[str, TLSServer]  # leaf forged by the attacker CA
    appended: dict[str, TLSServer]  # forged leaf with the pinned certificates appended

    def refusal_servers(self) -> list[TLSServer]:
        """Servers that must never receive an application byte."""
        return [*self.victim.values(), *self.mitm.values(), *self.appended.values()]


@pytest.fixture(scope="session")
def origins(pki: Pki) -> Iterator[Origins]:
    """Start every origin on 127.0.0.1 and ::1 (HTTP/2 and HTTP/1.1 via ALPN)."""
    alpn = ("h2", "http/1.1")
    roles = {
        "good": pki.leaf,
        "rotated": pki.backup_leaf,
        "victim": pki.leaf,
        "mitm": pki.forged,
        "appended": pki.appended,
    }
    servers = {
        role: {
            host: TLSServer(leaf, host=host, alpn=alpn, response_body=BODY).start()
            for host in FAMILIES
        }
        for role, leaf in roles.items()
    }
    try:
        yield Origins(**servers)
    finally:
        for by_host in servers.values():
            for server in by_host.values():
                server.stop()


@dataclass(frozen=True)
class Route:
    """How a client reaches the origin: directly, or through a CONNECT proxy."""

    kind: str  # "direct", "connect" (plain HTTP proxy) or "https-proxy" (TLS to the proxy)
    proxy: ConnectProxy | MitmProxy | InjectingProxy | None = None
    proxy_ctx: ssl.SSLContext | None = None  # trust for the TLS leg to an HTTPS proxy

    @property
    def proxy_url(self) -> str:
        """The proxy URL by name (``localhost`` is not pinned)."""
        assert self.proxy is not None
        scheme = "https" if self.kind == "https-proxy" else "http"
        return f"{scheme}://localhost:{self.proxy.port}"


@pytest.fixture(scope="session")
def proxies(pki: Pki) -> Iterator[dict[str, Route]]:
    """Start a plain and a TLS CONNECT proxy on 127.0.0.1."""
    plain = ConnectProxy().start()
    tls = ConnectProxy(tls_leaf=pki.proxy_leaf).start()
    try:
        yield {
            "direct": Route("direct"),
            "connect": Route("connect", plain),
            "https-proxy": Route("https-proxy", tls, client_trust_context(pki.proxy_ca)),
        }
    finally:
        plain.stop()
        tls.stop()


@pytest.fixture(scope="session")
def intercepting_proxy(pki: Pki) -> Iterator[Route]:
    """A mitmproxy-like CONNECT proxy forging leaves with the attacker CA the clients trust."""
    proxy = MitmProxy(ca=pki.attacker, upstream_ca=pki.root).start()
    try:
        yield Route("connect", proxy)
    finally:
        proxy.stop()
