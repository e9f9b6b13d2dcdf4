"""Tests for tlspin.testing.servers.TLSServer with real stdlib and httpx clients."""

from __future__ import annotations

import datetime
import http.client
import socket
import ssl
import threading

import httpx
import pytest

from tlspin.testing.pki import CA, KEY_KINDS, KeyKind, Leaf, client_trust_context
from tlspin.testing.servers import TLSServer


def _get(server: TLSServer, ctx: ssl.SSLContext, path: str = "/", host: str = "localhost") -> bytes:
    conn = http.client.HTTPSConnection(host, server.port, context=ctx, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200
        return response.read()
    finally:
        conn.close()


def _handshake(
    server: TLSServer, ctx: ssl.SSLContext, hostname: str = "localhost"
) -> ssl.SSLSocket:
    raw = socket.create_connection(server.address, timeout=5)
    return ctx.wrap_socket(raw, server_hostname=hostname)


def test_trusting_client_gets_200_and_request_is_recorded(root: CA, server: TLSServer) -> None:
    """A client trusting the root gets the body, and the server records the request line."""
    assert _get(server, client_trust_context(root), "/hello?x=1") == b"hello from origin"
    assert server.requests == ["GET /hello?x=1 HTTP/1.1"]
    assert server.received.startswith(b"GET /hello?x=1 HTTP/1.1\r\n")
    assert server.handshakes == 1
    assert server.connections == 1
    assert server.alpn_protocols == [None]
    assert server.server_names == ["localhost"]


def test_untrusting_client_fails_and_server_receives_nothing(
    stranger: CA, server: TLSServer
) -> None:
    """A client trusting another CA fails verification and not one byte reaches the server."""
    with pytest.raises(ssl.SSLCertVerificationError):
        _get(server, client_trust_context(stranger))
    assert server.wait_for(lambda s: len(s.handshake_errors) == 1)
    assert server.wait_idle()
    assert server.received == b""
    assert server.requests == []
    assert server.handshakes == 0


def test_bytes_are_counted_when_client_aborts(root: CA, server: TLSServer) -> None:
    """A client that closes right after the handshake leaves zero bytes; a partial send is kept."""
    ctx = client_trust_context(root)
    _handshake(server, ctx).close()
    assert server.wait_for(lambda s: s.handshakes == 1)
    assert server.wait_idle()
    assert server.received == b""
    with _handshake(server, ctx) as tls:
        tls.sendall(b"GET /part")
    assert server.wait_for(lambda s: s.received == b"GET /part")
    assert server.requests == []


def test_keep_alive_and_request_bodies(root: CA, server: TLSServer) -> None:
    """Several requests, with Content-Length and chunked bodies, share one connection."""
    conn = http.client.HTTPSConnection(
        "localhost", server.port, context=client_trust_context(root), timeout=5
    )
    try:
        conn.request("POST", "/a", body=b"12345")
        assert conn.getresponse().read() == b"hello from origin"
        conn.request("POST", "/b", body=iter([b"ab", b"cd"]), encode_chunked=True)
        assert conn.getresponse().read() == b"hello from origin"
        conn.request("HEAD", "/c")
        head = conn.getresponse()
        assert head.read() == b""
        assert head.getheader("Content-Length") == str(len(b"hello from origin"))
    finally:
        conn.close()
    assert server.requests == ["POST /a HTTP/1.1", "POST /b HTTP/1.1", "HEAD /c HTTP/1.1"]
    assert server.connections == 1
    assert b"\r\n\r\n12345POST /b" in server.received
    assert b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n" in server.received


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_every_key_kind_serves_tls(root: CA, intermediate: CA, kind: KeyKind) -> None:
    """Leaves of every key kind, RSA-PSS SPKI included, complete a verified handshake."""
    leaf = intermediate.issue("localhost", key_kind=kind)
    with TLSServer(leaf) as server:
        with _handshake(server, client_trust_context(root)) as tls:
            assert tls.getpeercert(binary_form=True) == leaf.cert_der
        with pytest.raises(ssl.SSLCertVerificationError):
            _handshake(server, client_trust_context(intermediate.issue("localhost").cert))


def test_cross_signed_chain_is_served(root: CA) -> None:
    """A chain carrying a cross certificate verifies under the old root; without it, it fails."""
    new_root = CA.root("tlspin successor root")
    leaf = new_root.issue("localhost")
    bridged = leaf.with_intermediates([root.cross_sign(new_root)])
    with TLSServer(bridged) as server:
        assert _get(server, client_trust_context(root)) == b"ok"
    with TLSServer(leaf) as server, pytest.raises(ssl.SSLCertVerificationError):
        _get(server, client_trust_context(root))


def test_set_leaf_rotates_certificate_for_new_connections(
    root: CA, intermediate: CA, server: TLSServer, origin_leaf: Leaf
) -> None:
    """After set_leaf, new handshakes present the new certificate; before it, the old one."""
    ctx = client_trust_context(root)
    with _handshake(server, ctx) as before:
        assert before.getpeercert(binary_form=True) == origin_leaf.cert_der
    rotated = intermediate.reissue(origin_leaf, same_key=False)
    server.set_leaf(rotated)
    with _handshake(server, ctx) as after:
        assert after.getpeercert(binary_form=True) == rotated.cert_der
        assert after.getpeercert(binary_form=True) != origin_leaf.cert_der


def test_sni_selects_the_leaf(root: CA, intermediate: CA, origin_leaf: Leaf) -> None:
    """Each SNI name gets its own leaf; unknown names get the default leaf."""
    special = intermediate.issue("special.example.test")
    ctx = client_trust_context(root)
    with TLSServer(origin_leaf, sni={"Special.Example.Test": special}) as server:
        with _handshake(server, ctx, "special.example.test") as tls:
            assert tls.getpeercert(binary_form=True) == special.cert_der
        with _handshake(server, ctx, "api.example.test") as tls:
            assert tls.getpeercert(binary_form=True) == origin_leaf.cert_der
        with pytest.raises(ssl.SSLCertVerificationError):
            _handshake(server, ctx, "elsewhere.example.test")
        assert server.server_names[:2] == ["special.example.test", "api.example.test"]


def test_ipv6_server(root: CA, intermediate: CA, origin_leaf: Leaf) -> None:
    """A server on ::1 answers a client that verifies the ::1 address; a leaf without it fails."""
    ctx = client_trust_context(root)
    with TLSServer(origin_leaf, host="::1") as server:
        assert server.url == f"https://[::1]:{server.port}/"
        assert _get(server, ctx, host="::1") == b"ok"
        assert server.requests == ["GET / HTTP/1.1"]
    with (
        TLSServer(intermediate.issue("localhost"), host="::1") as server,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        _get(server, ctx, host="::1")


@pytest.mark.parametrize("host", ["0.0.0.0", "localhost", "::", "192.0.2.1"])  # not bound: refused
def test_non_loopback_bind_is_refused(origin_leaf: Leaf, host: str) -> None:
    """Only 127.0.0.1 and ::1 are accepted as bind addresses."""
    with pytest.raises(ValueError, match="loopback"):
        TLSServer(origin_leaf, host=host)


@pytest.mark.parametrize(
    ("validity", "code"),
    [
        ({"not_after": datetime.timedelta(days=-1)}, 10),  # X509_V_ERR_CERT_HAS_EXPIRED
        ({"not_before": datetime.timedelta(days=1)}, 9),  # X509_V_ERR_CERT_NOT_YET_VALID
    ],
)
def test_out_of_date_leaf_is_rejected(
    root: CA, intermediate: CA, validity: dict[str, datetime.timedelta], code: int
) -> None:
    """A stdlib client rejects an expired or not-yet-valid leaf with the matching verify code."""
    leaf = intermediate.issue("localhost", **validity)  # type: ignore[arg-type]
    with TLSServer(leaf) as server:
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            _get(server, client_trust_context(root))
        assert info.value.verify_code == code
        assert server.wait_idle()
        assert server.received == b""


def test_http2_via_alpn(root: CA, origin_leaf: Leaf) -> None:
    """httpx negotiates h2 and the server records an HTTP/2 request line."""
    with (
        TLSServer(origin_leaf, alpn=("h2", "http/1.1")) as server,
        httpx.Client(http2=True, verify=client_trust_context(root)) as client,
    ):
        first = client.get(server.url_for("localhost", "/two?q=1"))
        second = client.head(server.url_for("localhost", "/three"))
        assert first.http_version == "HTTP/2"
        assert first.content == b"ok"
        assert second.status_code == 200
        assert server.requests == ["GET /two?q=1 HTTP/2", "HEAD /three HTTP/2"]
        assert server.alpn_protocols == ["h2"]
        assert server.received.startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/2"])
def test_large_body_arrives_whole(root: CA, origin_leaf: Leaf, version: str) -> None:
    """A body several flow-control windows long arrives intact over HTTP/1.1 and HTTP/2."""
    body = bytes(range(256)) * 1200  # 300 KiB, more than four initial h2 windows
    alpn = ("h2", "http/1.1") if version == "HTTP/2" else ("http/1.1",)
    with (
        TLSServer(origin_leaf, alpn=alpn, response_body=body) as server,
        httpx.Client(http2=True, verify=client_trust_context(root)) as client,
    ):
        responses = [client.get(server.url_for("localhost", f"/{n}")) for n in range(2)]
    assert [r.http_version for r in responses] == [version, version]
    assert all(r.content == body for r in responses)


def test_http1_only_server_keeps_h2_clients_on_http1(root: CA, server: TLSServer) -> None:
    """Without h2 in the server's ALPN list, an h2-capable client falls back to HTTP/1.1."""
    with httpx.Client(http2=True, verify=client_trust_context(root)) as client:
        response = client.get(server.url_for("localhost", "/one"))
    assert response.http_version == "HTTP/1.1"
    assert server.requests == ["GET /one HTTP/1.1"]
    assert server.alpn_protocols == ["http/1.1"]


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_session_resumption(root: CA, origin_leaf: Leaf, version: ssl.TLSVersion) -> None:
    """A client offering its saved session resumes it; a fresh handshake does not."""
    ctx = client_trust_context(root)
    with TLSServer(origin_leaf, tls_max_version=version) as server:
        with _handshake(server, ctx) as first:
            assert first.version() == (
                "TLSv1.2" if version == ssl.TLSVersion.TLSv1_2 else "TLSv1.3"
            )
            first.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            first.recv(1024)  # TLS 1.3 tickets arrive after the handshake
            session = first.session
        raw = socket.create_connection(server.address, timeout=5)
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as second:
            assert second.session_reused
        with _handshake(server, ctx) as third:
            assert not third.session_reused
        assert server.wait_for(lambda s: s.handshakes == 3)
        assert server.resumed == 1


def test_stalled_client_hits_handshake_timeout(origin_leaf: Leaf) -> None:
    """A client that connects and never sends a ClientHello is cut off by the server."""
    with (
        TLSServer(origin_leaf, handshake_timeout=0.3) as server,
        socket.create_connection(server.address, timeout=5) as raw,
    ):
        assert raw.recv(1) == b""
        assert server.wait_for(lambda s: len(s.handshake_errors) == 1)
        assert "timed out" in server.handshake_errors[0]


def test_handshake_delay_holds_back_the_server_hello(root: CA, origin_leaf: Leaf) -> None:
    """With a handshake delay, a client with a shorter timeout gives up; without, it succeeds."""
    ctx = client_trust_context(root)
    with TLSServer(origin_leaf, handshake_delay=30) as server:
        raw = socket.create_connection(server.address, timeout=0.3)
        with pytest.raises(TimeoutError):
            ctx.wrap_socket(raw, server_hostname="localhost")
        raw.close()
        server.handshake_delay = 0
        with _handshake(server, ctx) as tls:
            assert tls.version() is not None


def test_stop_cuts_idle_connections_and_joins_threads(root: CA, origin_leaf: Leaf) -> None:
    """stop() closes a kept-alive connection and leaves no server thread running."""

    # Servers of other (module- or session-scoped) fixtures may be running: count only ours.
    others = {t for t in threading.enumerate() if t.name == "tlspin-server"}

    def server_threads() -> list[threading.Thread]:
        return [
            t
            for t in threading.enumerate()
            if t.name == "tlspin-server" and t.is_alive() and t not in others
        ]

    server = TLSServer(origin_leaf).start()
    tls = _handshake(server, client_trust_context(root))
    tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert tls.recv(1024).startswith(b"HTTP/1.1 200 OK")
    assert len(server_threads()) == 2  # accept loop + the kept-alive connection
    server.stop()
    assert tls.recv(1024) == b""
    tls.close()
    assert server_threads() == []


def test_reset_clears_records(root: CA, server: TLSServer) -> None:
    """reset() empties every record while the server keeps serving."""
    ctx = client_trust_context(root)
    _get(server, ctx)
    server.reset()
    assert (server.received, server.requests, server.handshakes) == (b"", [], 0)
    _get(server, ctx, "/again")
    assert server.requests == ["GET /again HTTP/1.1"]
