"""The pin check rests on what each connection verified when it was made (issue 13, item 2).

OpenSSL copies the verify mode and the host-name check into a connection when it creates it.
A context wrapped with verification off and switched back on before the handshake ends must not
pass the unverified chain; nor may a thread toggling a shared context get one through.

The forged chain: a leaf naming the genuine intermediate (subject and key id) but signed with
an attacker's key, served with the genuine intermediate. Unverified, OpenSSL still returns
``[forged leaf, genuine intermediate, root]`` as the "verified" chain, so the intermediate pin
that every test here uses would pass it if the check trusted the context instead.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import tlspin
from _engine import HOST, BioClient, fetch, forged_under, open_socket, stranger_pins
from tlspin import PinningUnavailableError, PinPolicy, PinVerificationError
from tlspin.testing.scenarios import ServerPKI
from tlspin.testing.servers import TLSServer

MakeServer = Callable[..., TLSServer]


@pytest.fixture(autouse=True)
def _always_extract() -> Iterator[None]:
    """Tests that inject never leave it behind."""
    yield
    tlspin.extract()


@pytest.fixture
def forged(pki: ServerPKI, make_tls_server: MakeServer) -> TLSServer:
    """A server presenting the forged chain that names the genuine intermediate."""
    return make_tls_server(forged_under(pki.intermediate))


def _policy(pki: ServerPKI) -> PinPolicy:
    return PinPolicy.from_mapping({HOST: [pki.intermediate_pin, *stranger_pins()]})


def _context(pki: ServerPKI, how: str) -> ssl.SSLContext:
    """A context pinned with pin_context, or a plain one under inject()."""
    if how == "pin_context":
        return tlspin.create_context(_policy(pki), cafile=pki.cafile)
    tlspin.inject(_policy(pki))
    return ssl.create_default_context(cafile=pki.cafile)


def _off(ctx: ssl.SSLContext) -> None:
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE


def _on(ctx: ssl.SSLContext) -> None:
    ctx.check_hostname = True  # turns CERT_REQUIRED back on as well


def _socket_then(ctx: ssl.SSLContext, server: TLSServer, between: Callable[[], None]) -> None:
    sock = open_socket(ctx, server, handshake=False)
    with sock:
        between()
        sock.do_handshake()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


def _bio_then(ctx: ssl.SSLContext, server: TLSServer, between: Callable[[], None]) -> None:
    client = BioClient.open(ctx, server)
    try:
        between()
        client.handshake()
        client.request()
    finally:
        client.close()


PATHS = {"SSLSocket": _socket_then, "SSLObject": _bio_then}


@pytest.mark.parametrize("how", ["pin_context", "inject"])
@pytest.mark.parametrize("path", list(PATHS))
def test_made_unverified_then_switched_on_is_refused(
    pki: ServerPKI, forged: TLSServer, path: str, how: str
) -> None:
    """Wrapped with verification off, switched back on before the handshake: refused, 0 bytes."""
    ctx = _context(pki, how)
    _off(ctx)
    with pytest.raises(PinningUnavailableError) as excinfo:
        PATHS[path](ctx, forged, lambda: _on(ctx))
    assert excinfo.value.reason == (
        "verification-off" if how == "pin_context" else "unverified-chain"
    )
    forged.wait_idle()
    assert forged.received == b""


@pytest.mark.parametrize("how", ["pin_context", "inject"])
@pytest.mark.parametrize("path", list(PATHS))
def test_made_verified_then_switched_off_still_passes(
    pki: ServerPKI, tls_server: TLSServer, path: str, how: str
) -> None:
    """Twin: a connection made while verification was on did verify; switching the context off
    before its handshake does not undo that, and the genuine server is reached."""
    ctx = _context(pki, how)
    PATHS[path](ctx, tls_server, lambda: _off(ctx))
    tls_server.wait_idle()
    assert tls_server.requests == ["GET / HTTP/1.1"]


@pytest.mark.parametrize("path", list(PATHS))
def test_made_verified_refuses_the_forged_chain(
    pki: ServerPKI, forged: TLSServer, path: str
) -> None:
    """Twin: with verification on throughout, the forged chain fails CA verification."""
    ctx = _context(pki, "pin_context")
    with pytest.raises(ssl.SSLCertVerificationError):
        PATHS[path](ctx, forged, lambda: None)
    forged.wait_idle()
    assert forged.received == b""


def _race(pki: ServerPKI, server: TLSServer, how: str, path: str, rounds: int) -> dict[str, int]:
    """Connect *rounds* times while another thread toggles the shared context off and on."""
    ctx = _context(pki, how)
    stop = threading.Event()

    def toggle() -> None:
        while not stop.is_set():
            _off(ctx)
            time.sleep(0)  # let the connecting thread run while verification is off
            _on(ctx)
            time.sleep(0)

    counts = {"passed": 0, "refused": 0, "unverified": 0}
    toggler = threading.Thread(target=toggle)
    toggler.start()
    try:
        for _ in range(rounds):
            try:
                PATHS[path](ctx, server, lambda: None)
                counts["passed"] += 1
            except PinVerificationError:
                counts["refused"] += 1
            except ssl.SSLError:
                counts["unverified"] += 1  # CA verification ran and failed
    finally:
        stop.set()
        toggler.join(10)
    return counts


@pytest.mark.parametrize("how", ["pin_context", "inject"])
@pytest.mark.parametrize("path", list(PATHS))
def test_thread_toggling_a_shared_context_gets_no_forged_chain_through(
    pki: ServerPKI, forged: TLSServer, path: str, how: str
) -> None:
    """The attack: 100 connections to the forging server while a thread toggles verification.

    Each is refused either by OpenSSL (made while on) or by tlspin (made while off); none
    passes, and the server never receives a byte.
    """
    counts = _race(pki, forged, how, path, rounds=100)
    assert counts["passed"] == 0, counts
    assert counts["refused"] + counts["unverified"] == 100
    forged.wait_idle()
    assert forged.received == b""


@pytest.mark.parametrize("path", list(PATHS))
def test_legitimate_connections_on_a_shared_context_pass(
    pki: ServerPKI, tls_server: TLSServer, path: str
) -> None:
    """Twin: 4 threads share the pinned context (nobody toggles it): all 40 connections pass."""
    ctx = _context(pki, "pin_context")
    failures: list[BaseException] = []

    def worker() -> None:
        for _ in range(10):
            try:
                PATHS[path](ctx, tls_server, lambda: None)
            except BaseException as exc:
                failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    tls_server.wait_idle()
    assert len(tls_server.requests) == 40


def test_under_toggling_legitimate_connections_pass_or_fail_closed(
    pki: ServerPKI, tls_server: TLSServer
) -> None:
    """Twin under attack: genuine connections either pass or are refused as made unverified."""
    counts = _race(pki, tls_server, "pin_context", "SSLSocket", rounds=60)
    assert counts["unverified"] == 0, counts
    assert counts["passed"] + counts["refused"] == 60


def test_a_change_around_the_lock_counts_as_unverified(
    pki: ServerPKI, forged: TLSServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings changed through the C descriptors (around the lock) while OpenSSL creates the
    connection leave it unverified: refused, 0 bytes."""
    import _ssl

    import tlspin._guard as guard

    c_context = _ssl._SSLContext.__dict__
    real_wrap = guard._C_WRAP_SOCKET

    def wrap_then_switch_on(self: ssl.SSLContext, *args: object, **kwargs: object) -> object:
        # Stands for code that bypasses ssl.SSLContext's setters during SSL_new().
        sslobj = real_wrap(self, *args, **kwargs)
        c_context["check_hostname"].__set__(self, True)
        return sslobj

    ctx = _context(pki, "pin_context")
    _off(ctx)
    monkeypatch.setattr(guard, "_C_WRAP_SOCKET", wrap_then_switch_on)
    with pytest.raises(PinningUnavailableError) as excinfo:
        fetch(ctx, forged)
    assert excinfo.value.reason == "verification-off"
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    forged.wait_idle()
    assert forged.received == b""
