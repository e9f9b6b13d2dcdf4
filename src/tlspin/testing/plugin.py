"""pytest plugin: test your client's pinning against real TLS on loopback in ten lines.

Installed with tlspin (entry point ``pytest11: tlspin``). Importing this module costs nothing
beyond pytest itself: every fixture imports its machinery (cryptography, servers, proxies)
only when a test asks for it.

Fixtures:

* ``pki`` — a `tlspin.testing.scenarios.ServerPKI`: root, intermediate, the server's leaf
  (``localhost``, ``127.0.0.1``, ``::1``), a backup key, an attacker CA, and ``pki.cafile``
  (the trust bundle to give your client), ``pki.pins()`` and ``pki.policy(...)``.
* ``tls_server`` — a started HTTPS server on 127.0.0.1 serving ``pki.leaf``; ``.url`` is
  ``https://localhost:PORT/``; it records every application byte (``.received``) and
  request line (``.requests``).
* ``make_tls_server`` — a factory ``make_tls_server(leaf=None, **options)`` for more servers.
* ``mitm_proxy`` — an intercepting proxy (``.url`` is ``http://127.0.0.1:PORT``) that forges a
  certificate for each CONNECT host with the attacker CA your client trusts.
* ``mitm_reverse_proxy`` — the same attacker in reverse-proxy mode in front of ``tls_server``:
  the client connects to ``mitm_reverse_proxy.url`` as if it were the server.
* ``rotate_leaf(same_key=True)``, ``rotate_to_backup()``, ``rogue_ca_issues(host=None)`` —
  change what the servers of the test serve; ``expire_policy(policy, ...)`` — an expired copy.
* ``assert_refused(call)`` — the call failed with a `tlspin.PinVerificationError` in its
  exception chain, and the test's servers received zero bytes and its proxies no request.
* ``assert_accepted(call)`` — the call succeeded and reached the test's server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    from pathlib import Path

    from tlspin.exceptions import PinVerificationError
    from tlspin.policy import PinPolicy
    from tlspin.testing.pki import Leaf
    from tlspin.testing.proxies import MitmProxy
    from tlspin.testing.scenarios import ServerPKI
    from tlspin.testing.servers import TLSServer

T = TypeVar("T")

_MADE_SERVERS = "_tlspin_made_servers"


# Variables that would silently replace the test's trust bundle (requests prefers
# REQUESTS_CA_BUNDLE over a session's own setting) or send loopback requests to a real proxy.
_ISOLATED_ENV = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "all_proxy",
    "no_proxy",
)


@pytest.fixture
def pki(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ServerPKI:
    """The certificates of this test: CA chain, server leaf, backup key and an attacker CA.

    For the test's duration it also removes the machine's trust-store and proxy variables
    (``REQUESTS_CA_BUNDLE``, ``SSL_CERT_FILE``, ``HTTPS_PROXY``…), which would otherwise
    replace ``pki.cafile`` or route loopback requests elsewhere.
    """
    from tlspin.testing.scenarios import ServerPKI

    for name in _ISOLATED_ENV:
        monkeypatch.delenv(name, raising=False)
    return ServerPKI(tmp_path)


@pytest.fixture
def tls_server(pki: ServerPKI) -> Iterator[TLSServer]:
    """A started HTTPS server on 127.0.0.1 serving ``pki.leaf`` and recording what it receives."""
    from tlspin.testing.servers import TLSServer

    with TLSServer(pki.leaf, host="127.0.0.1") as server:
        yield server


@pytest.fixture
def make_tls_server(
    pki: ServerPKI, request: pytest.FixtureRequest
) -> Iterator[Callable[..., TLSServer]]:
    """A factory ``make_tls_server(leaf=None, **options)`` of started servers, stopped after."""
    from tlspin.testing.servers import TLSServer

    made: list[TLSServer] = []
    setattr(request.node, _MADE_SERVERS, made)

    def make(leaf: Leaf | None = None, **options: Any) -> TLSServer:
        server = TLSServer(leaf if leaf is not None else pki.leaf, **options).start()
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def mitm_proxy(pki: ServerPKI) -> Iterator[MitmProxy]:
    """An intercepting proxy forging certificates with the attacker CA that the client trusts."""
    from tlspin.testing.proxies import MitmProxy

    with MitmProxy(ca=pki.attacker, upstream_ca=pki.root) as proxy:
        yield proxy


@pytest.fixture
def mitm_reverse_proxy(pki: ServerPKI, tls_server: TLSServer) -> Iterator[MitmProxy]:
    """The attacker as a reverse proxy in front of ``tls_server``, impersonating localhost."""
    from tlspin.testing.proxies import MitmProxy

    with MitmProxy(
        ca=pki.attacker,
        upstream_ca=pki.root,
        reverse_to=tls_server.address,
        reverse_host="localhost",
    ) as proxy:
        yield proxy


def _servers(request: pytest.FixtureRequest) -> list[TLSServer]:
    """The servers this test uses: ``tls_server`` (if requested) and those it made."""
    found: list[TLSServer] = []
    if "tls_server" in request.fixturenames:
        found.append(request.getfixturevalue("tls_server"))
    if "make_tls_server" in request.fixturenames:
        request.getfixturevalue("make_tls_server")
        found.extend(getattr(request.node, _MADE_SERVERS, []))
    return found


def _proxies(request: pytest.FixtureRequest) -> list[MitmProxy]:
    return [
        request.getfixturevalue(name)
        for name in ("mitm_proxy", "mitm_reverse_proxy")
        if name in request.fixturenames
    ]


@pytest.fixture
def rotate_leaf(pki: ServerPKI, request: pytest.FixtureRequest) -> Callable[..., Leaf]:
    """``rotate_leaf(same_key=True)``: renew the servers' certificate; returns the new leaf."""
    from tlspin.testing import scenarios

    def rotate(*, same_key: bool = True) -> Leaf:
        leaf = scenarios.rotate_leaf(pki, None, same_key=same_key)
        for server in _servers(request):
            server.set_leaf(leaf)
        return leaf

    return rotate


@pytest.fixture
def rotate_to_backup(pki: ServerPKI, request: pytest.FixtureRequest) -> Callable[[], Leaf]:
    """``rotate_to_backup()``: certify the pinned backup key and serve it; returns the leaf."""
    from tlspin.testing import scenarios

    def rotate() -> Leaf:
        leaf = scenarios.rotate_to_backup(pki, None)
        for server in _servers(request):
            server.set_leaf(leaf)
        return leaf

    return rotate


@pytest.fixture
def rogue_ca_issues(pki: ServerPKI, request: pytest.FixtureRequest) -> Callable[..., Leaf]:
    """``rogue_ca_issues(host=None)``: the trusted attacker CA certifies *host*; servers use it."""
    from tlspin.testing import scenarios

    def issue(host: str | None = None) -> Leaf:
        leaf = scenarios.rogue_ca_issues(pki, None, host)
        for server in _servers(request):
            server.set_leaf(leaf)
        return leaf

    return issue


@pytest.fixture
def expire_policy() -> Callable[..., PinPolicy]:
    """``expire_policy(policy, expired_on=None, on_expiry=None)``: a copy past its expiry."""
    from tlspin.testing.scenarios import expire_policy

    return expire_policy


@pytest.fixture
def assert_refused(request: pytest.FixtureRequest) -> Callable[..., PinVerificationError]:
    """``assert_refused(call)``: refused by pinning, zero bytes to the servers, nothing read."""
    from tlspin.testing import assertions

    def check(call: Callable[[], object]) -> PinVerificationError:
        __tracebackhide__ = True  # failures point at the test, not at the plugin
        servers = _servers(request)
        if not servers:
            msg = (
                "assert_refused must check that zero bytes reached the server, but this test "
                "uses no tls_server (or make_tls_server) fixture; for a server of your own call "
                "tlspin.testing.assertions.assert_refused(call, servers=[...])"
            )
            raise pytest.UsageError(msg)
        return assertions.assert_refused(call, servers=servers, proxies=_proxies(request))

    return check


@pytest.fixture
def assert_accepted(request: pytest.FixtureRequest) -> Callable[[Callable[[], T]], T]:
    """``assert_accepted(call)``: the call succeeded and its request reached the test's server."""
    from tlspin.testing import assertions

    def check(call: Callable[[], T]) -> T:
        __tracebackhide__ = True
        return assertions.assert_accepted(call, servers=_servers(request))

    return check
