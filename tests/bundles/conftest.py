"""Fixtures for the bundle tests: fixed signing keys, a loopback PKI and an HTTPS bundle server."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import socket
import ssl
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from _httpd import HTTPThread, QuietHandler
from tlspin import PinPolicy, PinRule
from tlspin.bundles import Document, KeySet, PublicKey, sign_bundle
from tlspin.testing.pki import CA, Leaf, server_context

BUNDLE_HOST = "127.0.0.1"
API_HOST = "api.test"


def seed_key(n: int) -> Ed25519PrivateKey:
    """A deterministic Ed25519 key (seed = 32 bytes of value *n*): stable test vectors."""
    return Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32)


def public(key: Ed25519PrivateKey) -> PublicKey:
    """The public half of *key*."""
    return PublicKey.from_key(key)


class Pki:
    """A root CA, the bundle server's leaf, two API leaves with different keys, a backup pin."""

    def __init__(self, tmp: Path) -> None:
        self.ca = CA.root("tlspin bundle tests")
        self.bundle_leaf = self.ca.issue(BUNDLE_HOST)
        self.api_old = self.ca.issue(API_HOST)
        self.api_new = self.ca.issue(API_HOST)
        other = CA.root("unrelated")
        self.backup = other.issue("backup.invalid").pin
        self.cafile = str(self.ca.write(tmp, name="ca"))

    def policy(
        self, api_pins: Sequence[str] | None = None, *, pin_update_host: bool = True
    ) -> PinPolicy:
        """Rules for the update host (CA pin + backup) and for the API host."""
        rules = []
        if pin_update_host:
            rules.append(PinRule(BUNDLE_HOST, [self.ca.pin, self.backup]))
        pins = list(api_pins) if api_pins is not None else [self.api_old.pin]
        rules.append(PinRule(API_HOST, [*pins, self.backup]))
        return PinPolicy(rules)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The session's PKI."""
    return Pki(tmp_path_factory.mktemp("bundle-pki"))


@pytest.fixture(scope="session")
def key_a() -> Ed25519PrivateKey:
    """The application's first signing key."""
    return seed_key(1)


@pytest.fixture(scope="session")
def key_b() -> Ed25519PrivateKey:
    """A second signing key (rotation target, or second signer)."""
    return seed_key(2)


@pytest.fixture(scope="session")
def key_evil() -> Ed25519PrivateKey:
    """A key nobody trusts."""
    return seed_key(66)


def make(
    policy: PinPolicy | dict[str, Any],
    keys: Sequence[Ed25519PrivateKey],
    version: int,
    *,
    issued_at: dt.datetime | None = None,
    lifetime: dt.timedelta = dt.timedelta(days=30),
    signing_keys: KeySet | None = None,
    chain: Sequence[Any] = (),
) -> Document:
    """Sign a bundle for the tests (issued a minute ago unless told otherwise)."""
    issued = issued_at or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    return sign_bundle(
        policy,
        keys=keys,
        version=version,
        issued_at=issued,
        expires_at=issued + lifetime,
        signing_keys=signing_keys,
        chain=chain,
    )


class BundleServer(HTTPThread):
    """HTTPS on 127.0.0.1 serving one mutable body, with ETags, or an endless stream."""

    def __init__(self, leaf: Leaf) -> None:
        self.body = b""
        self.etags = True
        self.stream_total = 0  # > 0: send that many bytes with no Content-Length
        self.streamed = 0
        self.challenge = 0  # 401 (or 407): ask for credentials, as a server wanting logins
        self.set_cookie = False  # send a cookie with every answer
        self.requests: list[dict[str, str]] = []
        self.lock = threading.Lock()
        context = server_context(leaf)
        owner = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                with owner.lock:
                    owner.requests.append({k.lower(): v for k, v in self.headers.items()})
                    body, stream = owner.body, owner.stream_total
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                if owner.challenge:
                    self.send_response(owner.challenge)
                    for name in ("WWW-Authenticate", "Proxy-Authenticate"):
                        self.send_header(name, 'Basic realm="update server"')
                    self.send_header("Set-Cookie", "tracker=1; Path=/")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if stream:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    chunk = b" " * 65536
                    try:
                        while owner.streamed < stream:
                            self.wfile.write(chunk)
                            owner.streamed += len(chunk)
                    except OSError:
                        return
                    return
                if owner.etags and self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if owner.etags:
                    self.send_header("ETag", etag)
                if owner.set_cookie:
                    self.send_header("Set-Cookie", "tracker=1; Path=/")
                self.end_headers()
                self.wfile.write(body)

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request: Any, client_address: Any) -> None:
                # The TLS handshake runs in the worker thread, so a client that refuses our
                # certificate never blocks the accept loop.
                try:
                    tls = context.wrap_socket(request, server_side=True)
                except (OSError, ssl.SSLError):
                    return
                try:
                    super().finish_request(tls, client_address)
                finally:
                    tls.close()

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        super().__init__(Handler, host=BUNDLE_HOST, server_class=Server)
        self.url = f"https://{BUNDLE_HOST}:{self.port}/pins/bundle.json"

    def serve(self, body: bytes | Document, *, etags: bool = True) -> None:
        """Serve *body* (a document is serialised) from now on."""
        with self.lock:
            self.body = body.dumps() if isinstance(body, Document) else body
            self.etags = etags
            self.stream_total = 0


@pytest.fixture(scope="module")
def bundle_server(pki: Pki) -> Iterator[BundleServer]:
    """A running bundle server whose certificate chains to the session CA."""
    server = BundleServer(pki.bundle_leaf)
    yield server
    server.close()


@pytest.fixture
def server(bundle_server: BundleServer) -> BundleServer:
    """The module's bundle server, reset for one test."""
    with bundle_server.lock:
        bundle_server.requests.clear()
        bundle_server.body = b""
        bundle_server.etags = True
        bundle_server.stream_total = 0
        bundle_server.streamed = 0
        bundle_server.challenge = 0
        bundle_server.set_cookie = False
    return bundle_server


def handshake(context: ssl.SSLContext, address: tuple[str, int], hostname: str = API_HOST) -> None:
    """Open a TLS connection with *context* to *address* as *hostname*, then close it."""
    with socket.create_connection(address, timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=hostname):
            pass


def raw_sign(signed: dict[str, Any], keys: Sequence[Ed25519PrivateKey]) -> dict[str, Any]:
    """Sign arbitrary ``signed`` data, bypassing every check of ``sign_bundle``."""
    import base64

    from tlspin.bundles import canonical_json

    message = canonical_json(signed)
    return {
        "signed": signed,
        "signatures": [
            {"keyid": public(k).keyid, "sig": base64.b64encode(k.sign(message)).decode()}
            for k in keys
        ],
    }
