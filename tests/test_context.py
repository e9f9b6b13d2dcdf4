"""The SSLContext seam: sockets, memory BIOs, implicit handshakes, resumption, wrappers."""

from __future__ import annotations

import io
import select
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import truststore

import tlspin
from tlspin import (
    PinConfigurationError,
    PinMismatchError,
    PinningUnavailableError,
    PinPolicy,
    PinRule,
    PinVerificationError,
    create_context,
    pin_context,
    policy_of,
)
from tlspin.context import PinnedSSLObject, PinnedSSLSocket
from tlspin.testing.pki import CA, Leaf, generate_key
from tlspin.testing.servers import TLSServer

HOST = "127.0.0.1"
REQUEST = b"GET / HTTP/1.1\r\nHost: origin\r\n\r\n"


@dataclass(frozen=True)
class Chain:
    """A root → intermediate → leaf chain, its CA file and a pin no certificate has."""

    root: CA
    intermediate: CA
    leaf: Leaf
    cafile: str
    stranger_pin: str


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """One PKI for the module."""
    root = CA.root("tlspin context root")
    intermediate = root.intermediate("tlspin context intermediate")
    leaf = intermediate.issue(HOST, "localhost")
    stranger = CA.root("tlspin stranger").issue("x.test", key=generate_key())
    return Chain(
        root, intermediate, leaf, str(root.write(tmp_path_factory.mktemp("ctx"))), stranger.pin
    )


@pytest.fixture
def server(chain: Chain) -> Iterator[TLSServer]:
    """A fresh origin per test, so byte counts belong to that test alone."""
    with TLSServer(chain.leaf, host=HOST) as srv:
        yield srv


def _policy(*pins: str, host: str = HOST) -> PinPolicy:
    return PinPolicy.from_mapping({host: list(pins)})


def _good(chain: Chain) -> PinPolicy:
    return _policy(chain.leaf.pin, chain.stranger_pin)


def _bad(chain: Chain) -> PinPolicy:
    return _policy(chain.stranger_pin, CA.root("another").pin)


def _read_response(sock: ssl.SSLSocket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, "the server closed before answering"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(4096)
    return body


def _connect(
    ctx: ssl.SSLContext, server: TLSServer, *, session: ssl.SSLSession | None = None, **kw: bool
) -> ssl.SSLSocket:
    raw = socket.create_connection(server.address, timeout=5)
    try:
        return ctx.wrap_socket(raw, server_hostname=HOST, session=session, **kw)
    except BaseException:
        raw.close()
        raise


# -- blocking sockets ---------------------------------------------------------------------------


def test_pinned_socket_passes_and_reports_checked(chain: Chain, server: TLSServer) -> None:
    """A correctly pinned handshake yields a PinnedSSLSocket that says it was checked."""
    with _connect(create_context(_good(chain), cafile=chain.cafile), server) as sock:
        assert isinstance(sock, PinnedSSLSocket)
        assert sock.tlspin_checked
        sock.sendall(REQUEST)
        assert _read_response(sock) == b"ok"


def test_mispinned_socket_raises_pin_mismatch(chain: Chain, server: TLSServer) -> None:
    """A wrong pin fails the handshake with PinMismatchError and no byte reaches the server."""
    with pytest.raises(PinMismatchError) as excinfo:
        _connect(create_context(_bad(chain), cafile=chain.cafile), server)
    assert excinfo.value.hostname == HOST
    assert chain.leaf.pin in str(excinfo.value)
    server.wait_idle()
    assert server.received == b""


@pytest.mark.parametrize("method", ["sendall", "send", "write"])
def test_implicit_handshake_on_write_is_checked(
    chain: Chain, server: TLSServer, method: str
) -> None:
    """With do_handshake_on_connect=False, the first write checks pins and sends 0 bytes."""
    ctx = create_context(_bad(chain), cafile=chain.cafile)
    sock = _connect(ctx, server, do_handshake_on_connect=False)
    with sock, pytest.raises(PinMismatchError):
        getattr(sock, method)(REQUEST)
    server.wait_idle()
    assert server.received == b""


def test_implicit_handshake_on_write_passes_when_pinned(chain: Chain, server: TLSServer) -> None:
    """With do_handshake_on_connect=False and a right pin, sendall delivers the request."""
    ctx = create_context(_good(chain), cafile=chain.cafile)
    with _connect(ctx, server, do_handshake_on_connect=False) as sock:
        sock.sendall(REQUEST)
        assert _read_response(sock) == b"ok"
    assert server.requests == ["GET / HTTP/1.1"]


def test_failed_check_is_sticky(chain: Chain, server: TLSServer) -> None:
    """After a refused implicit handshake, later writes and reads raise the same error."""
    sock = _connect(
        create_context(_bad(chain), cafile=chain.cafile), server, do_handshake_on_connect=False
    )
    with sock:
        with pytest.raises(PinMismatchError) as first:
            sock.sendall(REQUEST)
        with pytest.raises(PinMismatchError) as second:
            sock.recv(10)
        assert second.value is first.value
    server.wait_idle()
    assert server.received == b""


def test_unpinned_host_on_pinned_context_passes(chain: Chain, server: TLSServer) -> None:
    """A host no rule covers is only CA-verified, even on a pinned context."""
    ctx = create_context(
        _policy(chain.stranger_pin, chain.root.pin, host="other.test"), cafile=chain.cafile
    )
    with _connect(ctx, server) as sock:
        sock.sendall(REQUEST)
        assert _read_response(sock) == b"ok"


# -- memory BIOs (asyncio, anyio, TLS-in-TLS) ---------------------------------------------------


def _pump(
    obj: ssl.SSLObject,
    sock: socket.socket,
    outgoing: ssl.MemoryBIO,
    incoming: ssl.MemoryBIO,
    step: object,
) -> object:
    """Run *step* until it stops wanting to read, shuttling bytes through *sock*."""
    while True:
        try:
            return step()  # type: ignore[operator]
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("server closed") from None
            incoming.write(data)


def _bio(
    ctx: ssl.SSLContext, server: TLSServer
) -> tuple[ssl.SSLObject, socket.socket, ssl.MemoryBIO, ssl.MemoryBIO]:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=HOST)
    return obj, socket.create_connection(server.address, timeout=5), incoming, outgoing


def test_memory_bio_passes_when_pinned(chain: Chain, server: TLSServer) -> None:
    """An SSLObject on a pinned context completes, is checked, and carries the request."""
    obj, sock, incoming, outgoing = _bio(create_context(_good(chain), cafile=chain.cafile), server)
    with sock:
        assert isinstance(obj, PinnedSSLObject)
        _pump(obj, sock, outgoing, incoming, obj.do_handshake)
        assert obj.tlspin_checked
        obj.write(REQUEST)
        sock.sendall(outgoing.read())
        _pump(obj, sock, outgoing, incoming, lambda: obj.read(4096))
    server.wait_for(lambda s: s.requests == ["GET / HTTP/1.1"])
    assert server.requests == ["GET / HTTP/1.1"]


def test_memory_bio_write_before_handshake_is_checked(chain: Chain, server: TLSServer) -> None:
    """write() before do_handshake() runs the handshake and the check; nothing is written."""
    obj, sock, incoming, outgoing = _bio(create_context(_bad(chain), cafile=chain.cafile), server)
    with sock:
        with pytest.raises(PinMismatchError):
            _pump(obj, sock, outgoing, incoming, lambda: obj.write(REQUEST))
        # Flush whatever the client produced (its Finished message): no application data.
        sock.sendall(outgoing.read())
        with pytest.raises(PinMismatchError):
            obj.write(REQUEST)
    server.wait_idle()
    assert server.received == b""


# -- verification must stay on ------------------------------------------------------------------


def test_cert_none_refused_at_pin_time(chain: Chain) -> None:
    """A context without certificate verification cannot be pinned."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with pytest.raises(PinConfigurationError, match="CERT_REQUIRED"):
        pin_context(ctx, _good(chain))


def test_check_hostname_off_refused_at_pin_time(chain: Chain) -> None:
    """A context without hostname checking cannot be pinned."""
    ctx = ssl.create_default_context(cafile=chain.cafile)
    ctx.check_hostname = False
    with pytest.raises(PinConfigurationError, match="check_hostname"):
        pin_context(ctx, _good(chain))


def test_empty_policy_pins_any_context() -> None:
    """A policy without rules may be attached to any context (nothing to enforce)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    assert policy_of(pin_context(ctx, PinPolicy())) == PinPolicy()


@pytest.mark.parametrize("switch_off", ["check_hostname", "cert_none"])
def test_verification_switched_off_after_pinning_refuses(
    chain: Chain, server: TLSServer, switch_off: str
) -> None:
    """Turning verification off on a pinned context makes pinned handshakes fail closed."""
    ctx = create_context(_good(chain), cafile=chain.cafile)
    ctx.check_hostname = False
    if switch_off == "cert_none":
        ctx.verify_mode = ssl.CERT_NONE
    with pytest.raises(PinningUnavailableError) as excinfo:
        _connect(ctx, server)
    assert excinfo.value.reason == "verification-off"
    server.wait_idle()
    assert server.received == b""


def test_foreign_socket_class_refused(chain: Chain) -> None:
    """A context whose sslsocket_class was replaced by someone else is not pinned."""

    class Custom(ssl.SSLSocket):
        pass

    ctx = ssl.create_default_context(cafile=chain.cafile)
    ctx.sslsocket_class = Custom
    with pytest.raises(PinConfigurationError, match="custom sslsocket_class"):
        pin_context(ctx, _good(chain))


def test_subclass_of_pinned_socket_accepted(chain: Chain) -> None:
    """A subclass of tlspin's own socket class is kept when (re)pinning."""

    class Mine(PinnedSSLSocket):
        pass

    ctx = ssl.create_default_context(cafile=chain.cafile)
    ctx.sslsocket_class = Mine
    pin_context(ctx, _good(chain))
    assert ctx.sslsocket_class is Mine


def test_wrapper_context_refused(chain: Chain) -> None:
    """A context subclass that overrides wrap_socket is refused: the hook could be skipped."""

    class Wrapper(ssl.SSLContext):
        def wrap_socket(self, *args: object, **kwargs: object) -> ssl.SSLSocket:  # type: ignore[override]
            return super().wrap_socket(*args, **kwargs)  # type: ignore[arg-type]

    ctx = Wrapper(ssl.PROTOCOL_TLS_CLIENT)
    with pytest.raises(PinConfigurationError, match="overrides wrap_socket"):
        pin_context(ctx, _good(chain))


@pytest.mark.parametrize("good", [True, False], ids=["right-pin", "wrong-pin"])
def test_truststore_context_is_hooked_on_inner_context(
    chain: Chain, server: TLSServer, good: bool
) -> None:
    """truststore.SSLContext is pinned through its inner context: right pins pass, wrong fail."""
    ctx = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(chain.cafile)
    pin_context(ctx, _good(chain) if good else _bad(chain))
    assert policy_of(ctx) is not None
    if good:
        with _connect(ctx, server) as sock:
            assert isinstance(sock, PinnedSSLSocket)
            assert sock.tlspin_checked
            sock.sendall(REQUEST)
            assert _read_response(sock) == b"ok"
        return
    with pytest.raises(PinMismatchError):
        _connect(ctx, server)
    server.wait_idle()
    assert server.received == b""


# -- TLS session resumption ---------------------------------------------------------------------

VERSIONS = {"tls1.2": ssl.TLSVersion.TLSv1_2, "tls1.3": ssl.TLSVersion.TLSv1_3}


@pytest.fixture(params=list(VERSIONS))
def resuming_server(request: pytest.FixtureRequest, chain: Chain) -> Iterator[TLSServer]:
    """An origin capped at TLS 1.2 or 1.3 that accepts session resumption."""
    with TLSServer(chain.leaf, host=HOST, tls_max_version=VERSIONS[request.param]) as srv:
        yield srv


def _first_session(ctx: ssl.SSLContext, server: TLSServer) -> ssl.SSLSession:
    with _connect(ctx, server) as sock:
        sock.sendall(REQUEST)
        _read_response(sock)  # TLS 1.3 tickets arrive after the handshake
        session = sock.session
    assert session is not None
    return session


def test_resumed_session_with_leaf_pin_passes(chain: Chain, resuming_server: TLSServer) -> None:
    """A resumed session (no verified chain) passes when the leaf key itself is pinned."""
    ctx = create_context(_good(chain), cafile=chain.cafile)
    session = _first_session(ctx, resuming_server)
    with _connect(ctx, resuming_server, session=session) as sock:
        assert sock.session_reused
        sock.sendall(REQUEST)
        assert _read_response(sock) == b"ok"


def test_resumed_session_with_root_pin_and_seen_leaf_passes(
    chain: Chain, resuming_server: TLSServer
) -> None:
    """A root pin passes on resumption when this leaf passed a full check earlier."""
    ctx = create_context(_policy(chain.root.pin, chain.stranger_pin), cafile=chain.cafile)
    session = _first_session(ctx, resuming_server)
    with _connect(ctx, resuming_server, session=session) as sock:
        assert sock.session_reused
        sock.sendall(REQUEST)
        assert _read_response(sock) == b"ok"


def test_resumed_session_with_root_pin_and_unseen_leaf_fails_closed(
    chain: Chain, resuming_server: TLSServer
) -> None:
    """A root pin on a fresh policy cannot vouch for a resumed leaf: refused, 0 bytes sent."""
    ctx = create_context(_policy(chain.root.pin, chain.stranger_pin), cafile=chain.cafile)
    session = _first_session(ctx, resuming_server)
    resuming_server.wait_idle()
    before = len(resuming_server.received)
    # Same context (sessions only resume on it), re-pinned with a fresh policy object.
    pin_context(ctx, _policy(chain.root.pin, chain.stranger_pin))
    with pytest.raises(PinningUnavailableError) as excinfo:
        _connect(ctx, resuming_server, session=session)
    assert excinfo.value.reason == "resumption"
    resuming_server.wait_idle()
    assert len(resuming_server.received) == before
    assert resuming_server.resumed >= 1


def _resume_as(
    ctx: ssl.SSLContext, server: TLSServer, name: str, session: ssl.SSLSession | None
) -> ssl.SSLSocket:
    raw = socket.create_connection(server.address, timeout=5)
    try:
        return ctx.wrap_socket(raw, server_hostname=name, session=session)
    except BaseException:
        raw.close()
        raise


@pytest.mark.parametrize("spelling", ["LOCALHOST", "localhost."])
def test_resumed_session_under_another_spelling_of_the_checked_host_passes(
    chain: Chain, resuming_server: TLSServer, spelling: str
) -> None:
    """A leaf that passed a full check for ``localhost`` vouches for its session resumed as
    another spelling of that host (the remembered leaves are keyed by the canonical name)."""
    policy = _policy(chain.root.pin, chain.stranger_pin, host="localhost")
    ctx = create_context(policy, cafile=chain.cafile)
    with _resume_as(ctx, resuming_server, "localhost", None) as sock:
        sock.sendall(REQUEST)
        _read_response(sock)
        session = sock.session
    with _resume_as(ctx, resuming_server, spelling, session) as sock:
        assert sock.session_reused
        sock.sendall(REQUEST)
        assert _read_response(sock) == b"ok"


def test_resumed_session_under_another_host_still_fails_closed(
    chain: Chain, resuming_server: TLSServer
) -> None:
    """Twin: the same leaf, checked for ``localhost``, does not vouch for a session resumed for
    another pinned host (``127.0.0.1``): refused, 0 bytes."""
    pins = [chain.root.pin, chain.stranger_pin]
    policy = PinPolicy.from_mapping({"localhost": pins, HOST: pins})
    ctx = create_context(policy, cafile=chain.cafile)
    with _resume_as(ctx, resuming_server, "localhost", None) as sock:
        sock.sendall(REQUEST)
        _read_response(sock)
        session = sock.session
    resuming_server.wait_idle()
    before = len(resuming_server.received)
    with pytest.raises(PinningUnavailableError) as excinfo:
        _resume_as(ctx, resuming_server, HOST, session)
    assert excinfo.value.reason == "resumption"
    resuming_server.wait_idle()
    assert len(resuming_server.received) == before


def test_policy_source_is_read_at_each_handshake(chain: Chain, server: TLSServer) -> None:
    """A context pinned to a policy source applies whatever policy the source holds now."""

    class Source:
        def __init__(self) -> None:
            self.policy = _good(chain)

        def current_policy(self) -> PinPolicy:
            return self.policy

    source = Source()
    ctx = create_context(source, cafile=chain.cafile)
    with _connect(ctx, server):
        pass
    source.policy = _bad(chain)
    with pytest.raises(PinMismatchError):
        _connect(ctx, server)
    assert isinstance(tlspin.policy_of(ctx), PinPolicy)


def test_create_context_defaults(chain: Chain) -> None:
    """create_context verifies certificates and host names and refuses TLS below 1.2."""
    ctx = create_context(_good(chain), cafile=Path(chain.cafile).as_posix())
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert policy_of(ctx) == _good(chain)


# -- adversarial paths -----------------------------------------------------------------------------


class _Relay:
    """A loopback TCP relay that records every byte the client sends, encrypted or not."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server((HOST, 0))
        self.address = self._listener.getsockname()[:2]
        self._lock = threading.Lock()
        self._sent = bytearray()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def client_bytes(self) -> bytes:
        """Everything the client sent so far, as seen on the wire."""
        with self._lock:
            return bytes(self._sent)

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while chunk := src.recv(65536):
                if record:
                    with self._lock:
                        self._sent += chunk
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _run(self) -> None:
        client, _ = self._listener.accept()
        upstream = socket.create_connection(self._target, timeout=5)
        back = threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True)
        back.start()
        self._pump(client, upstream, True)
        back.join(5)
        client.close()
        upstream.close()
        self._done.set()

    def close(self) -> None:
        """Wait for the relay to finish (both sides closed) and release its socket."""
        self._done.wait(5)
        self._listener.close()


SECRET = b"Authorization: Bearer SECRET-TOKEN\r\n"


def _write_via_makefile(sock: ssl.SSLSocket) -> None:
    with sock.makefile("wb", buffering=0) as f:
        f.write(SECRET)


def _sendfile(sock: ssl.SSLSocket) -> None:
    # A real file: socket.sendfile() uses os.sendfile() on it, which writes straight to the fd.
    with tempfile.TemporaryFile() as f:
        f.write(SECRET)
        f.seek(0)
        sock.sendfile(f)


_PLAIN_CALLS = {
    "send": lambda s: s.send(SECRET),
    "sendall": lambda s: s.sendall(SECRET),
    "sendfile": _sendfile,
    "sendto": lambda s: s.sendto(SECRET, s.getpeername()),
    "recv": lambda s: s.recv(100),
    "recv_into": lambda s: s.recv_into(bytearray(100)),
    "recvfrom": lambda s: s.recvfrom(100),
    "recvfrom_into": lambda s: s.recvfrom_into(bytearray(100)),
    "makefile": _write_via_makefile,
}


@pytest.fixture(scope="module")
def forged(chain: Chain) -> Leaf:
    """A leaf for the same names from a CA the client does not trust."""
    return CA.root("tlspin context untrusted").issue(HOST, "localhost")


@pytest.mark.parametrize("failure", ["pin-mismatch", "untrusted-ca"])
@pytest.mark.parametrize("call", list(_PLAIN_CALLS))
def test_no_clear_text_after_a_failed_connect(
    chain: Chain, forged: Leaf, failure: str, call: str
) -> None:
    """After connect() fails its handshake, no I/O call sends or reads bytes in clear."""
    leaf = chain.leaf if failure == "pin-mismatch" else forged
    with TLSServer(leaf, host=HOST) as server:
        relay = _Relay(server.address)
        ctx = create_context(_bad(chain), cafile=chain.cafile)
        sock = ctx.wrap_socket(socket.socket(), server_hostname=HOST)
        try:
            sock.settimeout(5)
            with pytest.raises(ssl.SSLCertVerificationError):
                sock.connect(relay.address)  # ssl.SSLSocket drops TLS, keeps the TCP connection
            with pytest.raises(PinVerificationError):
                _PLAIN_CALLS[call](sock)
        finally:
            sock.close()
            relay.close()
        assert SECRET not in relay.client_bytes
        server.wait_idle()
        assert server.received == b""


def test_connect_path_twin_passes_when_pinned(chain: Chain, server: TLSServer) -> None:
    """A socket wrapped before connect() is checked in connect() and then carries the request."""
    ctx = create_context(_good(chain), cafile=chain.cafile)
    with ctx.wrap_socket(socket.socket(), server_hostname=HOST) as sock:
        sock.settimeout(5)
        sock.connect(server.address)
        assert isinstance(sock, PinnedSSLSocket)
        assert sock.tlspin_checked
        sock.sendfile(io.BytesIO(REQUEST))
        assert _read_response(sock) == b"ok"


@pytest.mark.parametrize(
    ("spelling", "policy_host"),
    [("127.0.0.01", HOST), ("127.000.000.001", HOST), ("LOCALHOST", "localhost")],
)
def test_other_spellings_of_a_pinned_host_are_checked(
    chain: Chain, server: TLSServer, spelling: str, policy_host: str
) -> None:
    """A server name OpenSSL verifies as the pinned host never skips its pins; 0 bytes sent."""
    policy = _policy(chain.stranger_pin, CA.root("z").pin, host=policy_host)
    ctx = create_context(policy, cafile=chain.cafile)
    with pytest.raises(PinVerificationError):
        _connect_as(ctx, server, spelling)
    server.wait_idle()
    assert server.received == b""


def _connect_as(ctx: ssl.SSLContext, server: TLSServer, name: str) -> ssl.SSLSocket:
    raw = socket.create_connection(server.address, timeout=5)
    try:
        return ctx.wrap_socket(raw, server_hostname=name)
    except BaseException:
        raw.close()
        raise


def test_uppercase_spelling_twin_passes_when_pinned(chain: Chain, server: TLSServer) -> None:
    """The same spelling with the right pins passes: the check keys on the canonical name."""
    policy = _policy(chain.leaf.pin, chain.stranger_pin, host="localhost")
    ctx = create_context(policy, cafile=chain.cafile)
    with _connect_as(ctx, server, "LOCALHOST") as sock:
        assert isinstance(sock, PinnedSSLSocket)
        assert sock.tlspin_checked
        sock.sendall(REQUEST)
        assert _read_response(sock) == b"ok"


@pytest.mark.parametrize("seen_first", [True, False], ids=["seen-leaf", "fresh-policy"])
def test_resumed_session_with_root_pin_and_deny_pins(
    chain: Chain, resuming_server: TLSServer, seen_first: bool
) -> None:
    """Deny pins do not refuse a resumed session whose leaf passed; an unseen leaf still fails."""

    def policy() -> PinPolicy:
        rule = PinRule(HOST, [chain.root.pin, chain.stranger_pin], deny=[CA.root("bad").pin])
        return PinPolicy([rule])

    ctx = create_context(policy(), cafile=chain.cafile)
    session = _first_session(ctx, resuming_server)
    if not seen_first:
        pin_context(ctx, policy())
        with pytest.raises(PinningUnavailableError, match="resumed"):
            _connect(ctx, resuming_server, session=session)
        return
    with _connect(ctx, resuming_server, session=session) as sock:
        assert sock.session_reused
        sock.sendall(REQUEST)
        assert _read_response(sock) == b"ok"


@pytest.mark.parametrize("mode", ["report", "enforce"])
def test_interrupted_check_is_not_sticky(chain: Chain, server: TLSServer, mode: str) -> None:
    """Ctrl-C in an observer propagates; the next write re-runs the check instead of re-raising."""
    calls: list[str] = []

    def observer(violation: tlspin.Violation) -> None:
        calls.append(violation.mode)
        if len(calls) == 1:
            raise KeyboardInterrupt

    rule = PinRule(HOST, [chain.stranger_pin, CA.root("w").pin], mode=mode)  # type: ignore[arg-type]
    ctx = create_context(PinPolicy([rule], observers=[observer]), cafile=chain.cafile)
    with _connect(ctx, server, do_handshake_on_connect=False) as sock:
        with pytest.raises(KeyboardInterrupt):
            sock.do_handshake()
        try:
            if mode == "report":
                sock.sendall(REQUEST)
                assert _read_response(sock) == b"ok"
            else:
                with pytest.raises(PinMismatchError):
                    sock.sendall(REQUEST)
        except KeyboardInterrupt:
            pytest.fail("the first KeyboardInterrupt was kept and raised again")
    assert calls == [mode, mode]
    if mode == "enforce":
        server.wait_idle()
        assert server.received == b""


def test_served_chain_is_what_the_server_sent(chain: Chain, tmp_path: Path) -> None:
    """A forged leaf with the pinned certificates appended: the event shows both chains."""
    attacker = CA.root("tlspin context attacker")
    forged = attacker.issue(HOST)
    appended = Leaf(forged.cert, forged.key, [chain.intermediate.cert, chain.root.cert])
    cafile = tmp_path / "both.pem"
    cafile.write_bytes(chain.root.cert_pem + attacker.cert_pem)
    seen: list[tlspin.Violation] = []
    policy = PinPolicy.from_mapping(
        {HOST: [chain.intermediate.pin, chain.root.pin]}, observers=[seen.append]
    )
    with TLSServer(appended, host=HOST) as server:
        with pytest.raises(PinMismatchError):
            _connect(create_context(policy, cafile=str(cafile)), server)
        server.wait_idle()
        assert server.received == b""
    (violation,) = seen
    assert violation.served_chain == (
        forged.cert_der,
        chain.intermediate.cert_der,
        chain.root.cert_der,
    )
    assert violation.verified_chain == (forged.cert_der, attacker.cert_der)
    assert violation.hostname == HOST


def test_concurrent_handshakes_on_one_context(chain: Chain, server: TLSServer) -> None:
    """8 threads share one pinned context: pinned names pass, mis-pinned spellings all fail."""
    policy = PinPolicy(
        [
            PinRule(HOST, [chain.leaf.pin, chain.stranger_pin]),
            PinRule("localhost", [chain.stranger_pin, CA.root("v").pin]),
        ]
    )
    ctx = create_context(policy, cafile=chain.cafile)
    names = [HOST, "localhost", "LocalHost", HOST]
    outcomes: list[tuple[str, str]] = []
    lock = threading.Lock()

    def worker() -> None:
        for name in names:
            try:
                with _connect_as(ctx, server, name) as sock:
                    sock.sendall(REQUEST)
                    result = "ok" if _read_response(sock) == b"ok" else "bad body"
            except PinMismatchError as exc:
                result = f"refused {exc.hostname}"
            except BaseException as exc:
                result = repr(exc)
            with lock:
                outcomes.append((name, result))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == sorted(
        (name, "ok" if name == HOST else "refused localhost") for name in names * 8
    )
    server.wait_idle()
    assert server.requests == ["GET / HTTP/1.1"] * 16


@pytest.mark.parametrize("good", [True, False], ids=["right-pin", "wrong-pin"])
def test_non_blocking_handshake_inside_send(chain: Chain, server: TLSServer, good: bool) -> None:
    """A non-blocking socket's send() runs the handshake step by step, then the check."""
    ctx = create_context(_good(chain) if good else _bad(chain), cafile=chain.cafile)
    refused: PinMismatchError | None = None
    with _connect(ctx, server, do_handshake_on_connect=False) as sock:
        sock.setblocking(False)
        while True:
            try:
                sent = sock.send(REQUEST)
                break
            except ssl.SSLWantReadError:  # mid-handshake (unless the server was quick)
                select.select([sock], [], [], 5)
            except ssl.SSLWantWriteError:
                select.select([], [sock], [], 5)
            except PinMismatchError as exc:
                refused = exc
                with pytest.raises(PinMismatchError):
                    sock.send(REQUEST)
                break
        if good:
            assert refused is None
            assert sent == len(REQUEST)
            sock.setblocking(True)
            sock.settimeout(5)
            assert _read_response(sock) == b"ok"
    if not good:
        assert refused is not None
        server.wait_idle()
        assert server.received == b""


def test_policy_source_returning_no_policy_fails_closed(chain: Chain, server: TLSServer) -> None:
    """A policy source that returns something other than a PinPolicy refuses, 0 bytes sent."""

    class Broken:
        def current_policy(self) -> PinPolicy:
            return None  # type: ignore[return-value]

    ctx = create_context(Broken(), cafile=chain.cafile)
    with pytest.raises(PinningUnavailableError, match="returned NoneType, expected a PinPolicy"):
        _connect(ctx, server)
    server.wait_idle()
    assert server.received == b""


def test_stdlib_unicode_server_name_gets_the_idna2003_hosts_pins(chain: Chain) -> None:
    """ssl encodes 'faß.de' as 'fass.de' (IDNA 2003): that A-label's pins apply, 0 bytes sent."""
    leaf = chain.intermediate.issue("fass.de")
    policy = _policy(chain.stranger_pin, CA.root("u").pin, host="fass.de")
    with TLSServer(leaf, host=HOST) as server:
        with pytest.raises(PinMismatchError) as excinfo:
            _connect_as(create_context(policy, cafile=chain.cafile), server, "faß.de")
        assert excinfo.value.hostname == "fass.de"
        assert server.server_names == ["fass.de"]
        server.wait_idle()
        assert server.received == b""
