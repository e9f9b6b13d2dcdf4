"""Tests for tlspin.testing.proxies: CONNECT tunnels and the intercepting MITM proxy."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import socket
import ssl
from collections.abc import Iterator

import httpx
import pytest
from cryptography import x509

from _httpd import HTTPThread, QuietHandler
from tlspin.testing.pki import CA, Leaf, client_trust_context
from tlspin.testing.proxies import ConnectProxy, MitmProxy, resolve_loopback
from tlspin.testing.servers import TLSServer

RESOLVE = {"api.example.test": "127.0.0.1", "other.example.test": "127.0.0.1"}


def _tunnel_get(
    proxy_port: int, target: str, port: int, ctx: ssl.SSLContext, path: str = "/"
) -> tuple[int, bytes, bytes]:
    """GET through a CONNECT tunnel; return status, body and the DER the origin presented."""
    conn = http.client.HTTPSConnection("127.0.0.1", proxy_port, context=ctx, timeout=5)
    conn.set_tunnel(target, port)
    try:
        conn.request("GET", path)
        assert conn.sock is not None
        peer = conn.sock.getpeercert(binary_form=True)
        assert peer is not None
        response = conn.getresponse()
        return response.status, response.read(), peer
    finally:
        conn.close()


def _raw_request(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    """A plain CONNECT proxy that maps the test names to 127.0.0.1."""
    with ConnectProxy(resolve=RESOLVE) as running:
        yield running


def test_connect_tunnel_reaches_origin(root: CA, server: TLSServer, proxy: ConnectProxy) -> None:
    """A CONNECT tunnel carries TLS end to end to the origin, which sees the request."""
    ctx = client_trust_context(root)
    status, body, _ = _tunnel_get(proxy.port, "api.example.test", server.port, ctx, "/t")
    assert (status, body) == (200, b"hello from origin")
    assert proxy.connects == [f"api.example.test:{server.port}"]
    assert proxy.refused == []
    assert server.requests == ["GET /t HTTP/1.1"]
    assert server.server_names == ["api.example.test"]


@pytest.mark.parametrize("target", ["example.com", "192.0.2.7", "mapped-away.test"])
def test_connect_to_non_loopback_is_refused(root: CA, server: TLSServer, target: str) -> None:
    """Targets that are not loopback get 403, are recorded, and nothing reaches the origin."""
    with ConnectProxy(resolve={"mapped-away.test": "10.1.2.3"}) as proxy:
        with pytest.raises(OSError, match="403"):
            _tunnel_get(proxy.port, target, 443, client_trust_context(root))
        assert proxy.refused == [f"{target}:443"]
        assert proxy.connects == [f"{target}:443"]
    assert server.connections == 0


@pytest.mark.parametrize("port", ["99999", "+{port}", "{port}_", "\u00b2"])
def test_connect_port_that_is_not_ascii_digits_gets_400(
    server: TLSServer, proxy: ConnectProxy, port: str
) -> None:
    """A CONNECT port int() would misread ("+443", "443_") or refuse late (99999: connect()
    raises OverflowError; "²" passes str.isdigit()) gets 400, and nothing reaches the origin.
    Twin: test_connect_tunnel_reaches_origin."""
    target = f"api.example.test:{port.format(port=server.port)}"
    reply = _raw_request(proxy.port, f"CONNECT {target} HTTP/1.1\r\n\r\n".encode("latin-1"))
    assert reply.startswith(b"HTTP/1.1 400 "), reply
    assert proxy.connects == [target]
    assert server.connections == 0


def test_https_proxy_tls_in_tls(root: CA, intermediate: CA, server: TLSServer) -> None:
    """Clients speak TLS to an HTTPS proxy and TLS again inside the tunnel."""
    proxy_leaf = intermediate.issue("127.0.0.1", "localhost")
    ctx = client_trust_context(root)
    with ConnectProxy(tls_leaf=proxy_leaf, resolve=RESOLVE) as proxy:
        assert proxy.url == f"https://127.0.0.1:{proxy.port}"
        with httpx.Client(proxy=httpx.Proxy(proxy.url, ssl_context=ctx), verify=ctx) as client:
            response = client.get(server.url_for("api.example.test", "/tls-in-tls"))
        assert response.content == b"hello from origin"
        assert proxy.connects == [f"api.example.test:{server.port}"]
    assert server.requests == ["GET /tls-in-tls HTTP/1.1"]


def test_https_proxy_untrusted_by_client(
    root: CA, stranger: CA, intermediate: CA, server: TLSServer
) -> None:
    """A client that does not trust the HTTPS proxy's certificate never sends CONNECT."""
    proxy_leaf = intermediate.issue("127.0.0.1")
    with ConnectProxy(tls_leaf=proxy_leaf, resolve=RESOLVE) as proxy:
        proxy_ctx = client_trust_context(stranger)
        with (
            httpx.Client(
                proxy=httpx.Proxy(proxy.url, ssl_context=proxy_ctx),
                verify=client_trust_context(root),
            ) as client,
            pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
        ):
            client.get(server.url_for("api.example.test"))
        assert proxy.connects == []
    assert server.connections == 0


def test_absolute_https_uri_is_recorded_and_refused(server: TLSServer, proxy: ConnectProxy) -> None:
    """A request to forward an https:// URI gets 502, is recorded, and reaches nothing."""
    line = f"GET https://api.example.test:{server.port}/secret HTTP/1.1"
    reply = _raw_request(proxy.port, f"{line}\r\nHost: api.example.test\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 502 ")
    assert proxy.forwarded == [line]
    assert server.connections == 0


def test_absolute_http_uri_is_forwarded_to_loopback(proxy: ConnectProxy) -> None:
    """Plain absolute-form requests are forwarded to loopback origins and refused elsewhere."""

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            body = f"plain {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with contextlib.closing(HTTPThread(Handler)) as origin:
        reply = _raw_request(
            proxy.port,
            f"GET http://localhost:{origin.port}/p?q HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        )
        assert reply.startswith(b"HTTP/1.0 200 ")
        assert reply.endswith(b"plain /p?q")
        far = _raw_request(proxy.port, b"GET http://example.com/ HTTP/1.1\r\nHost: x\r\n\r\n")
        assert far.startswith(b"HTTP/1.1 403 ")
        assert proxy.refused == ["example.com"]


def test_ipv6_connect_proxy(root: CA, origin_leaf: Leaf) -> None:
    """A proxy on ::1 tunnels to an origin on ::1."""
    with TLSServer(origin_leaf, host="::1") as server, ConnectProxy(host="::1") as proxy:
        assert proxy.url == f"http://[::1]:{proxy.port}"
        conn = http.client.HTTPSConnection("::1", proxy.port, context=client_trust_context(root))
        conn.set_tunnel("::1", server.port)
        try:
            conn.request("GET", "/v6")
            assert conn.getresponse().read() == b"ok"
        finally:
            conn.close()
        # Python 3.11's http.client sends the IPv6 literal without brackets; 3.12+ brackets it.
        assert proxy.connects in ([f"[::1]:{server.port}"], [f"::1:{server.port}"])
        assert server.requests == ["GET /v6 HTTP/1.1"]


def test_resolve_loopback_never_leaves_loopback() -> None:
    """Only localhost, loopback literals and loopback-mapped names resolve."""
    assert resolve_loopback("localhost") == "127.0.0.1"
    assert resolve_loopback("LOCALHOST.") == "127.0.0.1"
    assert resolve_loopback("[::1]") == "::1"
    assert resolve_loopback("127.9.9.9") == "127.9.9.9"
    assert resolve_loopback("API.example.test", RESOLVE) == "127.0.0.1"
    assert resolve_loopback("api.example.test") is None
    assert resolve_loopback("evil.test", {"evil.test": "203.0.113.5"}) is None
    assert resolve_loopback("10.0.0.1") is None


@pytest.fixture
def mitm(root: CA) -> Iterator[MitmProxy]:
    """A MITM proxy that trusts the real root upstream."""
    with MitmProxy(upstream_ca=root, resolve=RESOLVE) as running:
        yield running


@pytest.mark.parametrize("host", ["api.example.test", "other.example.test", "localhost"])
def test_mitm_forges_leaf_and_relays(
    origin_leaf: Leaf, server: TLSServer, mitm: MitmProxy, host: str
) -> None:
    """A client trusting mitm.ca gets a forged leaf for any host, and the request is relayed."""
    status, body, peer = _tunnel_get(
        mitm.port, host, server.port, client_trust_context(mitm.ca), "/intercept-me"
    )
    assert (status, body) == (200, b"hello from origin")
    forged = x509.load_der_x509_certificate(peer)
    assert forged.issuer == mitm.ca.cert.subject
    assert peer == mitm.leaf_for(host).cert_der
    assert mitm.intercepted == [(host, "GET /intercept-me HTTP/1.1")]
    assert mitm.refused == []
    assert server.requests == ["GET /intercept-me HTTP/1.1"]
    assert peer != origin_leaf.cert_der


def test_mitm_forges_for_sni_rather_than_connect_host(server: TLSServer, mitm: MitmProxy) -> None:
    """When SNI differs from the CONNECT host, the forged leaf and the records follow the SNI."""
    with socket.create_connection(mitm.address, timeout=5) as raw:
        raw.sendall(f"CONNECT 127.0.0.1:{server.port} HTTP/1.1\r\n\r\n".encode())
        assert raw.recv(1024).startswith(b"HTTP/1.1 200")
        ctx = client_trust_context(mitm.ca)
        with ctx.wrap_socket(raw, server_hostname="other.example.test") as tls:
            assert tls.getpeercert(binary_form=True) == mitm.leaf_for("other.example.test").cert_der
            tls.sendall(b"GET /sni HTTP/1.1\r\nHost: other.example.test\r\n\r\n")
            reply = b""
            while not reply.endswith(b"hello from origin") and (chunk := tls.recv(4096)):
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 200 OK")
    assert mitm.intercepted == [("other.example.test", "GET /sni HTTP/1.1")]
    assert server.server_names == ["other.example.test"]
    assert mitm.leaf_for("127.0.0.1").cert_der != mitm.leaf_for("other.example.test").cert_der


def test_client_not_trusting_mitm_refuses(root: CA, server: TLSServer, mitm: MitmProxy) -> None:
    """A client trusting only the real root rejects the forged leaf; nothing is intercepted."""
    with pytest.raises(ssl.SSLCertVerificationError):
        _tunnel_get(mitm.port, "api.example.test", server.port, client_trust_context(root))
    assert mitm.wait_for(lambda m: m.refused == ["api.example.test"])
    assert mitm.intercepted == []
    assert mitm.silent == []
    assert server.connections == 0


def test_client_silent_after_handshake_is_recorded(mitm: MitmProxy, server: TLSServer) -> None:
    """A client that completes the handshake and closes without a request counts as refused."""
    with socket.create_connection(mitm.address, timeout=5) as raw:
        raw.sendall(f"CONNECT api.example.test:{server.port} HTTP/1.1\r\n\r\n".encode())
        assert raw.recv(1024).startswith(b"HTTP/1.1 200")
        ctx = client_trust_context(mitm.ca)
        # In TLS 1.2 the server finishes the handshake before the client does, so the proxy
        # has surely seen a complete handshake when this client closes.
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.wrap_socket(raw, server_hostname="api.example.test").close()
    assert mitm.wait_for(lambda m: m.silent == ["api.example.test"])
    assert mitm.refused == ["api.example.test"]
    assert mitm.intercepted == []


def test_bytes_before_the_tls_handshake_are_not_a_refusal(
    mitm: MitmProxy, server: TLSServer
) -> None:
    """A client sending a request in clear right after CONNECT is not recorded as refusing.

    Kept across start_tls, those bytes starved the handshake, and the client was counted as
    one that refused the forged certificate (a pinned client). Its twin is the test above: a
    client that speaks TLS after the 200 is recorded as it behaves.
    """
    with socket.create_connection(mitm.address, timeout=5) as raw:
        raw.sendall(
            f"CONNECT api.example.test:{server.port} HTTP/1.1\r\n\r\n".encode()
            + b"GET /in-clear HTTP/1.1\r\nHost: api.example.test\r\n\r\n"
        )
        assert raw.recv(1024).startswith(b"HTTP/1.1 200")
        raw.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            while raw.recv(4096):
                pass
    assert mitm.wait_idle()
    assert mitm.refused == []
    assert mitm.silent == []
    assert mitm.intercepted == []
    assert any("before the TLS handshake" in e for e in mitm.errors), mitm.errors
    assert server.connections == 0


def test_mitm_keep_alive_records_every_request(server: TLSServer, mitm: MitmProxy) -> None:
    """Every request on an intercepted keep-alive connection is recorded and relayed."""
    conn = http.client.HTTPSConnection(
        "127.0.0.1", mitm.port, context=client_trust_context(mitm.ca), timeout=5
    )
    conn.set_tunnel("api.example.test", server.port)
    try:
        for path in ("/one", "/two"):
            conn.request("POST", path, body=b"data")
            assert conn.getresponse().read() == b"hello from origin"
    finally:
        conn.close()
    assert mitm.intercepted == [
        ("api.example.test", "POST /one HTTP/1.1"),
        ("api.example.test", "POST /two HTTP/1.1"),
    ]
    assert server.requests == ["POST /one HTTP/1.1", "POST /two HTTP/1.1"]
    assert server.connections == 1


def test_mitm_verifies_upstream(stranger: CA, server: TLSServer) -> None:
    """With the wrong upstream CA the MITM answers 502 and the origin receives no bytes."""
    with MitmProxy(upstream_ca=stranger, resolve=RESOLVE) as mitm:
        status, _, _ = _tunnel_get(
            mitm.port, "api.example.test", server.port, client_trust_context(mitm.ca)
        )
        assert status == 502
        assert mitm.intercepted == [("api.example.test", "GET / HTTP/1.1")]
        assert any("CERTIFICATE_VERIFY_FAILED" in e for e in mitm.errors)
    assert server.wait_idle()
    assert server.received == b""


def test_mitm_blocks_non_loopback_targets(mitm: MitmProxy) -> None:
    """CONNECT to a non-loopback target gets 403 from the MITM proxy."""
    reply = _raw_request(mitm.port, b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 403 ")
    assert mitm.blocked == ["example.com:443"]


def test_mitm_reverse_mode(root: CA, server: TLSServer) -> None:
    """Reverse mode impersonates one host directly and forwards to the upstream."""
    with MitmProxy(
        upstream_ca=root, reverse_to=server.address, reverse_host="api.example.test"
    ) as mitm:
        assert mitm.url == f"https://api.example.test:{mitm.port}/"
        with httpx.Client(verify=client_trust_context(mitm.ca)) as client:
            client_url = f"https://localhost:{mitm.port}/rev"
            # The forged leaf names api.example.test, so connect by address and send that SNI.
            response = client.get(client_url, extensions={"sni_hostname": "api.example.test"})
        assert response.content == b"hello from origin"
        assert mitm.intercepted == [("api.example.test", "GET /rev HTTP/1.1")]
        with (
            httpx.Client(verify=client_trust_context(root)) as honest,
            pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
        ):
            honest.get(client_url, extensions={"sni_hostname": "api.example.test"})
        assert mitm.wait_for(lambda m: m.refused == ["api.example.test"])
    assert server.requests == ["GET /rev HTTP/1.1"]


def test_mitm_reverse_target_must_be_loopback() -> None:
    """Reverse mode refuses an upstream that is not on loopback."""
    with pytest.raises(ValueError, match="loopback"):
        MitmProxy(reverse_to=("192.0.2.1", 443))


def test_mitm_without_upstream_trust_records_then_502(server: TLSServer) -> None:
    """Without upstream trust the request line is still recorded, then answered 502."""
    with MitmProxy(resolve=RESOLVE) as mitm:
        status, _, _ = _tunnel_get(
            mitm.port, "api.example.test", server.port, client_trust_context(mitm.ca), "/x"
        )
        assert status == 502
        assert mitm.intercepted == [("api.example.test", "GET /x HTTP/1.1")]
    assert server.connections == 0
