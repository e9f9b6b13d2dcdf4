"""tlspin.inject(): every client TLS connection in the process is checked; extract() undoes it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import truststore
import urllib3
from pip._vendor import truststore as pip_truststore

import tlspin
from _engine import HOST, REQUEST, fetch, forged_under, stranger_pins
from tlspin import (
    PinMismatchError,
    PinningUnavailableError,
    PinPolicy,
    PinRule,
    PinVerificationError,
)
from tlspin._guard import STDLIB_CONTEXT
from tlspin.context import PinnedSSLObject, PinnedSSLSocket
from tlspin.injection import injected_policy
from tlspin.integrations._common import find_pin_error
from tlspin.testing.proxies import ConnectProxy
from tlspin.testing.scenarios import ServerPKI
from tlspin.testing.servers import TLSServer

_CLASS_ATTRS = ("sslsocket_class", "sslobject_class")
MakeServer = Callable[..., TLSServer]


@pytest.fixture(autouse=True)
def _always_extract() -> Iterator[None]:
    """Each test starts and ends with nothing injected and the stdlib class attributes intact."""
    before = {name: STDLIB_CONTEXT.__dict__[name] for name in _CLASS_ATTRS}
    assert before == {"sslsocket_class": ssl.SSLSocket, "sslobject_class": ssl.SSLObject}
    yield
    tlspin.extract()
    assert {name: STDLIB_CONTEXT.__dict__[name] for name in _CLASS_ATTRS} == before


def good(pki: ServerPKI, host: str = HOST) -> PinPolicy:
    """Pins the genuine leaf (and a backup) for *host*."""
    return PinPolicy.from_mapping({host: [pki.leaf_pin, pki.intermediate_pin]})


def bad(host: str = HOST) -> PinPolicy:
    """Pins keys no server has, for *host*."""
    return PinPolicy.from_mapping({host: stranger_pins()})


def refused(server: TLSServer, call: Callable[[], object]) -> PinVerificationError:
    """*call* fails because of a tlspin refusal (however the client wrapped it), and *server*
    receives not one application byte."""
    with pytest.raises(Exception) as excinfo:
        call()
    error = find_pin_error(excinfo.value)
    assert error is not None, f"not a pin refusal: {excinfo.value!r}"
    server.wait_idle()
    assert server.received == b""
    return error


# -- reach ---------------------------------------------------------------------------------------


def test_context_made_before_inject_is_checked(pki: ServerPKI, tls_server: TLSServer) -> None:
    """A context made before inject() gets pinned sockets and passes with the right pins."""
    ctx = ssl.create_default_context(cafile=pki.cafile)
    tlspin.inject(good(pki))
    sock = fetch(ctx, tls_server)
    assert isinstance(sock, PinnedSSLSocket)
    assert sock.tlspin_checked


def test_context_made_before_inject_refuses_a_forged_leaf(
    pki: ServerPKI, make_tls_server: MakeServer
) -> None:
    """Twin: the same context refuses a leaf from a CA it trusts but no pin names; 0 bytes."""
    forged = make_tls_server(pki.attacker.issue(HOST))
    ctx = ssl.create_default_context(cafile=pki.cafile)
    fetch(ctx, forged)  # without tlspin, the trusted attacker CA gets through
    forged.wait_idle()
    forged.reset()
    tlspin.inject(good(pki))
    error = refused(forged, lambda: fetch(ctx, forged))
    assert isinstance(error, PinMismatchError)


def _asyncio_get(ctx: ssl.SSLContext, server: TLSServer) -> bytes:
    async def main() -> bytes:
        try:
            reader, writer = await asyncio.open_connection(
                *server.address, ssl=ctx, server_hostname=HOST
            )
        except ssl.SSLError:
            # asyncio closes the failed transport in a callback: let it run before the loop ends.
            await asyncio.sleep(0.01)
            raise
        try:
            obj = writer.get_extra_info("ssl_object")
            assert isinstance(obj, PinnedSSLObject)
            writer.write(REQUEST)
            return await reader.readuntil(b"ok")
        finally:
            writer.close()
            # Let the TLS transport finish closing before the loop ends (else it is left open).
            with contextlib.suppress(OSError):  # the server may hang up first
                await writer.wait_closed()

    return asyncio.run(main())


def test_asyncio_open_connection_is_checked(pki: ServerPKI, tls_server: TLSServer) -> None:
    """asyncio (memory BIO) on a context made before inject(): right pins pass."""
    ctx = ssl.create_default_context(cafile=pki.cafile)
    tlspin.inject(good(pki))
    assert _asyncio_get(ctx, tls_server).endswith(b"ok")


def test_asyncio_open_connection_refuses_wrong_pins(pki: ServerPKI, tls_server: TLSServer) -> None:
    """Twin: wrong pins fail open_connection with the pin error (an ssl.SSLError); 0 bytes."""
    ctx = ssl.create_default_context(cafile=pki.cafile)
    tlspin.inject(bad())
    error = refused(tls_server, lambda: _asyncio_get(ctx, tls_server))
    assert isinstance(error, PinMismatchError)


@pytest.mark.parametrize("pins", ["good", "bad"])
def test_tls_in_tls_through_an_https_proxy(
    pki: ServerPKI, tls_server: TLSServer, pins: str
) -> None:
    """urllib3 through an HTTPS proxy: the origin leg inside the tunnel (a memory BIO) is checked.

    The proxy leg (``localhost``) is not covered by the policy and passes either way.
    """
    ctx = ssl.create_default_context(cafile=pki.cafile)
    with ConnectProxy(tls_leaf=pki.leaf) as proxy:
        tlspin.inject(good(pki) if pins == "good" else bad())
        manager = urllib3.ProxyManager(
            f"https://localhost:{proxy.port}",
            ssl_context=ctx,
            proxy_ssl_context=ctx,
            retries=False,
        )
        url = f"https://{HOST}:{tls_server.port}/"
        with manager:
            if pins == "good":
                assert manager.request("GET", url).data == b"ok"
            else:
                refused(tls_server, lambda: manager.request("GET", url))
        assert proxy.connects == [f"{HOST}:{tls_server.port}"]


def test_host_not_covered_is_unaffected(pki: ServerPKI, make_tls_server: MakeServer) -> None:
    """A host the policy does not cover gets CA verification only, as without tlspin."""
    forged = make_tls_server(pki.attacker.issue("localhost"))
    ctx = ssl.create_default_context(cafile=pki.cafile)
    tlspin.inject(bad(HOST))
    sock = fetch(ctx, forged, host="localhost")
    assert isinstance(sock, PinnedSSLSocket)


def test_server_side_connections_are_untouched(pki: ServerPKI) -> None:
    """Server-side sockets and objects are the stdlib classes, never tlspin's, under inject()."""
    from tlspin.testing.pki import server_context

    tlspin.inject(bad("localhost"))
    server = server_context(pki.leaf)
    a, b = socket.socketpair()
    with a, b:
        wrapped = server.wrap_socket(a, server_side=True, do_handshake_on_connect=False)
        assert type(wrapped) is ssl.SSLSocket
        wrapped.detach()
    obj = server.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)
    assert type(obj) is ssl.SSLObject


# -- contexts that verify less -------------------------------------------------------------------


def test_cert_none_passes_on_a_leaf_pin(pki: ServerPKI, tls_server: TLSServer) -> None:
    """smtplib's default context (CERT_NONE) reaches a pinned host when the leaf key is pinned."""
    ctx = ssl._create_stdlib_context()  # what smtplib.starttls() and others use by default
    assert ctx.verify_mode == ssl.CERT_NONE
    tlspin.inject(PinPolicy.from_mapping({HOST: [pki.leaf_pin, *stranger_pins()]}))
    assert fetch(ctx, tls_server).tlspin_checked  # type: ignore[attr-defined]


def test_cert_none_refuses_an_intermediate_pin_on_a_forged_chain(
    pki: ServerPKI, make_tls_server: MakeServer
) -> None:
    """A forged leaf naming the genuine intermediate is refused despite the intermediate pin.

    Unverified, OpenSSL returns ``[forged leaf, genuine intermediate, root]`` as the chain: only
    the leaf is proven, so only a leaf pin counts. The message says why and how to fix it.
    """
    server = make_tls_server(forged_under(pki.intermediate))
    seen: list[tlspin.Violation] = []
    policy = PinPolicy.from_mapping({HOST: [pki.intermediate_pin, *stranger_pins()]})
    tlspin.inject(policy.with_observers(seen.append))
    error = refused(server, lambda: fetch(ssl._create_stdlib_context(), server))
    assert isinstance(error, PinningUnavailableError)
    assert error.reason == "unverified-chain"
    assert "certificate verification is off in this client" in str(error)
    assert "only a pin of the leaf's own key can vouch" in str(error)
    assert "give this client a verifying context" in str(error)
    assert [v.reason for v in seen] == ["unverified-chain"]


def test_intermediate_pin_passes_with_verification_on(
    pki: ServerPKI, tls_server: TLSServer
) -> None:
    """Twin: the same intermediate pin passes on the genuine server through a verifying context."""
    tlspin.inject(PinPolicy.from_mapping({HOST: [pki.intermediate_pin, *stranger_pins()]}))
    assert fetch(ssl.create_default_context(cafile=pki.cafile), tls_server).tlspin_checked  # type: ignore[attr-defined]


def test_cert_none_deny_pin_on_the_served_chain_refuses(
    pki: ServerPKI, tls_server: TLSServer
) -> None:
    """A deny pin refuses an unverified connection even when the leaf pin matches."""
    rule = PinRule(HOST, [pki.leaf_pin, *stranger_pins()], deny=[pki.intermediate_pin])
    tlspin.inject(PinPolicy([rule]))
    error = refused(tls_server, lambda: fetch(ssl._create_stdlib_context(), tls_server))
    assert isinstance(error, PinMismatchError)
    assert error.reason == "denied"


def test_cert_none_report_only_rule_reports_and_allows(
    pki: ServerPKI, make_tls_server: MakeServer
) -> None:
    """A report-only rule reports the unverified forged chain and lets the connection through."""
    server = make_tls_server(forged_under(pki.intermediate))
    seen: list[tlspin.Violation] = []
    rule = PinRule(HOST, [pki.intermediate_pin], mode="report")
    tlspin.inject(PinPolicy([rule], observers=[seen.append]))
    fetch(ssl._create_stdlib_context(), server)
    assert [(v.mode, v.reason) for v in seen] == [("report", "unverified-chain")]


@pytest.mark.parametrize("pins", ["good", "bad"])
def test_check_hostname_off_pins_the_sni_name(
    pki: ServerPKI, tls_server: TLSServer, pins: str
) -> None:
    """CERT_REQUIRED without check_hostname (botocore, urllib3): pins apply to the SNI name."""
    ctx = ssl.create_default_context(cafile=pki.cafile)
    ctx.check_hostname = False
    tlspin.inject(good(pki, "localhost") if pins == "good" else bad("localhost"))
    if pins == "good":
        assert fetch(ctx, tls_server, host="localhost").tlspin_checked  # type: ignore[attr-defined]
    else:
        refused(tls_server, lambda: fetch(ctx, tls_server, host="localhost"))


def test_no_server_name_is_not_covered(pki: ServerPKI, tls_server: TLSServer) -> None:
    """Under inject(), a connection without any server name names no host: not checked."""
    ctx = ssl.create_default_context(cafile=pki.cafile)
    ctx.check_hostname = False
    tlspin.inject(bad(HOST))
    fetch(ctx, tls_server, host=None)


def test_no_server_name_on_a_pinned_context_still_refuses(
    pki: ServerPKI, tls_server: TLSServer
) -> None:
    """Twin: a context pinned with pin_context keeps refusing connections without a name."""
    ctx = tlspin.create_context(good(pki), cafile=pki.cafile)
    ctx.check_hostname = False
    tlspin.inject(good(pki))
    error = refused(tls_server, lambda: fetch(ctx, tls_server, host=None))
    assert error.reason in {"no-hostname", "verification-off"}


# -- composition with explicit pinning and truststore -------------------------------------------


@pytest.mark.parametrize("own", ["good", "bad"])
def test_pin_context_keeps_its_own_policy(pki: ServerPKI, tls_server: TLSServer, own: str) -> None:
    """A context pinned with pin_context follows its own policy, whatever is injected."""
    pinned = tlspin.create_context(good(pki) if own == "good" else bad(), cafile=pki.cafile)
    tlspin.inject(bad() if own == "good" else good(pki))
    if own == "good":
        assert fetch(pinned, tls_server).tlspin_checked  # type: ignore[attr-defined]
    else:
        refused(tls_server, lambda: fetch(pinned, tls_server))


def test_pin_context_leaves_hosts_it_does_not_cover_to_the_injected_policy(
    pki: ServerPKI, make_tls_server: MakeServer
) -> None:
    """A library's own pinned context (for its vendor's host) used to reach a host the injected
    policy pins gets the injected pins there: a forged leaf is refused, 0 bytes."""
    forged = make_tls_server(pki.attacker.issue(HOST))
    vendor = PinPolicy.from_mapping({"vendor.example": [pki.leaf_pin, pki.intermediate_pin]})
    library_ctx = tlspin.create_context(vendor, cafile=pki.cafile)
    tlspin.inject(good(pki))
    error = refused(forged, lambda: fetch(library_ctx, forged))
    assert isinstance(error, PinMismatchError)


def test_pin_context_reaches_a_host_the_injected_policy_pins_genuinely(
    pki: ServerPKI, tls_server: TLSServer, make_tls_server: MakeServer
) -> None:
    """Twin: the same context reaches the genuine server of that host, and a host neither
    policy covers stays CA-verified only."""
    vendor = PinPolicy.from_mapping({"vendor.example": [pki.leaf_pin, pki.intermediate_pin]})
    library_ctx = tlspin.create_context(vendor, cafile=pki.cafile)
    tlspin.inject(good(pki))
    assert fetch(library_ctx, tls_server).tlspin_checked  # type: ignore[attr-defined]
    other = make_tls_server(pki.attacker.issue("localhost"))
    fetch(library_ctx, other, host="localhost")


@pytest.mark.parametrize("order", ["truststore-first", "tlspin-first"])
def test_truststore_injection_in_either_order(
    pki: ServerPKI, make_tls_server: MakeServer, order: str
) -> None:
    """truststore.inject_into_ssl() and tlspin.inject() together: pins checked, then undone."""
    good_server = make_tls_server()
    forged = make_tls_server(pki.attacker.issue(HOST))
    steps = [truststore.inject_into_ssl, lambda: tlspin.inject(good(pki))]
    try:
        for step in steps if order == "truststore-first" else steps[::-1]:
            step()
        ctx = ssl.create_default_context()
        ctx.load_verify_locations(pki.cafile)
        assert isinstance(ctx, truststore.SSLContext)
        sock = fetch(ctx, good_server)
        assert isinstance(sock, PinnedSSLSocket)
        assert type(sock).__name__ == "PinnedTruststoreSSLSocket"
        refused(forged, lambda: fetch(ctx, forged))
    finally:
        truststore.extract_from_ssl()
        tlspin.extract()
    assert ssl.SSLContext is STDLIB_CONTEXT


def test_truststore_context_made_before_inject(pki: ServerPKI, make_tls_server: MakeServer) -> None:
    """A truststore context made before inject() is reached; extract() undoes the composition."""
    forged = make_tls_server(pki.attacker.issue(HOST))
    ctx = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.cafile)
    own = ctx._ctx.__dict__["sslsocket_class"]
    tlspin.inject(good(pki))
    refused(forged, lambda: fetch(ctx, forged))
    tlspin.extract()
    assert ctx._ctx.sslsocket_class is own
    assert not [k for k in vars(ctx._ctx) if k.startswith("_tlspin_composed")]
    forged.reset()
    fetch(ctx, forged)  # unpinned again: the attacker's CA is trusted


@pytest.mark.parametrize("pins", ["good", "bad"])
def test_pip_vendored_truststore_is_pinned(
    pki: ServerPKI, tls_server: TLSServer, pins: str
) -> None:
    """pip's own truststore copy (what pip uses by default) is reached by inject()."""
    ctx = pip_truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.cafile)
    tlspin.inject(good(pki) if pins == "good" else bad())
    if pins == "good":
        assert isinstance(fetch(ctx, tls_server), PinnedSSLSocket)
    else:
        refused(tls_server, lambda: fetch(ctx, tls_server))


def test_pin_context_accepts_pips_truststore(pki: ServerPKI, tls_server: TLSServer) -> None:
    """pin_context() pins a pip._vendor.truststore context through its inner context."""
    ctx = pip_truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.cafile)
    tlspin.pin_context(ctx, bad())
    refused(tls_server, lambda: fetch(ctx, tls_server))


@pytest.mark.parametrize("pins", ["good", "bad"])
def test_pin_context_after_truststore_injection(
    pki: ServerPKI, tls_server: TLSServer, pins: str
) -> None:
    """pin_context() on ssl.SSLContext() while truststore renames it pins the inner context."""
    truststore.inject_into_ssl()
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(pki.cafile)
        tlspin.pin_context(ctx, good(pki) if pins == "good" else bad())
    finally:
        truststore.extract_from_ssl()
    if pins == "good":
        assert fetch(ctx, tls_server).tlspin_checked  # type: ignore[attr-defined]
    else:
        refused(tls_server, lambda: fetch(ctx, tls_server))


# -- lifecycle -----------------------------------------------------------------------------------


def test_extract_restores_exactly(pki: ServerPKI, tls_server: TLSServer) -> None:
    """extract() puts back the very objects; inject twice, extract twice are safe."""
    watched = (*_CLASS_ATTRS, "verify_mode", "check_hostname", "_wrap_socket", "_wrap_bio")
    before = {name: STDLIB_CONTEXT.__dict__.get(name) for name in watched}
    ctx = ssl.create_default_context(cafile=pki.cafile)
    tlspin.inject(bad())
    tlspin.inject(good(pki))  # replaces the policy
    assert injected_policy() == good(pki)
    assert fetch(ctx, tls_server).tlspin_checked  # type: ignore[attr-defined]
    tlspin.extract()
    tlspin.extract()
    assert {name: STDLIB_CONTEXT.__dict__.get(name) for name in watched} == before
    assert injected_policy() is None
    assert type(fetch(ctx, tls_server)) is ssl.SSLSocket


def test_injected_context_manager_nests(pki: ServerPKI, tls_server: TLSServer) -> None:
    """`with tlspin.injected(p)` restores the outer policy, then nothing."""
    ctx = ssl.create_default_context(cafile=pki.cafile)
    with tlspin.injected(good(pki)):
        with tlspin.injected(bad()):
            refused(tls_server, lambda: fetch(ctx, tls_server))
        fetch(ctx, tls_server)
        assert injected_policy() == good(pki)
    assert injected_policy() is None
    assert type(fetch(ctx, tls_server)) is ssl.SSLSocket


def test_policy_source_is_read_at_each_handshake(pki: ServerPKI, tls_server: TLSServer) -> None:
    """An injected policy source (e.g. BundleUpdater) applies whatever policy it holds now."""

    class Source:
        policy = good(pki)

        def current_policy(self) -> PinPolicy:
            return self.policy

    source = Source()
    ctx = ssl.create_default_context(cafile=pki.cafile)
    tlspin.inject(source)
    fetch(ctx, tls_server)
    tls_server.wait_idle()
    tls_server.reset()
    source.policy = bad()
    refused(tls_server, lambda: fetch(ctx, tls_server))


def test_policy_source_that_raises_refuses(pki: ServerPKI, tls_server: TLSServer) -> None:
    """A policy source that fails refuses the connection with a TLS error (asyncio included)."""

    class Broken:
        def current_policy(self) -> PinPolicy:
            raise RuntimeError("bundle store unreadable")

    tlspin.inject(Broken())
    ctx = ssl.create_default_context(cafile=pki.cafile)
    for call in (lambda: fetch(ctx, tls_server), lambda: _asyncio_get(ctx, tls_server)):
        error = refused(tls_server, call)
        assert isinstance(error, PinningUnavailableError)
        assert "bundle store unreadable" in str(error)


def test_inject_refuses_something_else() -> None:
    """inject() takes a PinPolicy or a policy source, nothing else."""
    with pytest.raises(tlspin.PinConfigurationError, match="expected a PinPolicy"):
        tlspin.inject({"127.0.0.1": ["sha256/x"]})  # type: ignore[arg-type]


def test_many_threads_inject_and_connect(pki: ServerPKI, tls_server: TLSServer) -> None:
    """8 threads inject, connect and extract at once: every connection is either checked and
    passes, or (between an extract and an inject) plain; nothing errs."""
    ctx = ssl.create_default_context(cafile=pki.cafile)
    policy = good(pki)
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        for j in range(6):
            try:
                if (i + j) % 3 == 0:
                    tlspin.extract()
                else:
                    tlspin.inject(policy)
                sock = fetch(ctx, tls_server)
                result = "checked" if getattr(sock, "tlspin_checked", False) else "plain"
            except BaseException as exc:
                result = repr(exc)
            with lock:
                outcomes.append(result)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(outcomes) == 48
    assert set(outcomes) <= {"checked", "plain"}, outcomes


def test_many_threads_never_let_a_forged_leaf_through(
    pki: ServerPKI, make_tls_server: MakeServer
) -> None:
    """While injected, 8 threads connecting at once to a forging server are all refused; 0 bytes."""
    forged = make_tls_server(pki.attacker.issue(HOST))
    ctx = ssl.create_default_context(cafile=pki.cafile)
    tlspin.inject(good(pki))
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(6):
            try:
                fetch(ctx, forged)
                result = "passed"
            except PinMismatchError:
                result = "refused"
            except BaseException as exc:
                result = repr(exc)
            with lock:
                outcomes.append(result)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert outcomes == ["refused"] * 48
    forged.wait_idle()
    assert forged.received == b""


# -- the ssl module executed again ---------------------------------------------------------------

RELOAD = """
import importlib, json, socket, ssl, sys, warnings
import tlspin
port, cafile, pins = int(sys.argv[1]), sys.argv[2], sys.argv[3].split(",")
tlspin.inject(tlspin.PinPolicy.from_mapping({"127.0.0.1": pins}))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    importlib.reload(ssl)
ctx = ssl.create_default_context(cafile=cafile)
out = {"warnings": [w.category.__name__ for w in caught]}
for host, path in (("127.0.0.1", "/pinned"), ("localhost", "/unpinned")):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                tls.sendall(f"GET {path} HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n".encode())
                tls.recv(100)
        out[host] = "sent"
    except tlspin.PinVerificationError as exc:
        out[host] = exc.reason
print(json.dumps(out))
"""


def test_contexts_of_a_reloaded_ssl_module_never_reach_a_pinned_host(
    pki: ServerPKI, make_tls_server: MakeServer, tmp_path: Path
) -> None:
    """importlib.reload(ssl) under inject makes an SSLContext class tlspin cannot check: its
    connections to pinned hosts are refused (0 bytes) with a warning; others are CA-verified.

    In a child process: reloading ssl here would change the test run's own ssl module.
    """
    forged = make_tls_server(pki.attacker.issue(HOST, "localhost"))
    (tmp_path / "reload.py").write_text(RELOAD)
    pins = ",".join([pki.leaf_pin, pki.intermediate_pin])
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "reload.py"), str(forged.port), pki.cafile, pins],
        capture_output=True, text=True, timeout=60, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith(("TLSPIN_", "PYTHONPATH"))},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out == {"warnings": ["TlspinWarning"], "127.0.0.1": "ssl-reloaded", "localhost": "sent"}
    forged.wait_idle()
    assert forged.requests == ["GET /unpinned HTTP/1.1"]
