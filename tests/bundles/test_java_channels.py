"""The Java client's channels on loopback: WebSockets and pooled connections are pin-checked, the
bundle fetch carries none of the app's credentials, and the store follows no planted link.

Each test performs the attack (a forged server the JVM trusts, an update server that asks for
credentials, a link planted in the store) and has a twin that shows the legitimate path works.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tlspin.bundles import BundleStore, parse_document

from .conftest import BundleServer, make
from .javadriver import (
    AuthProxy,
    EchoServer,
    Java,
    World,
    init_updater,
    java,
    java_classpath,
    rules,
    world,
)

__all__ = ["java", "java_classpath", "world"]  # fixtures, imported for pytest


@pytest.fixture(scope="module")
def echo(world: World) -> Iterator[dict[str, EchoServer]]:
    """api.test over TLS: the legitimate server (pinned key) and a forged one (rogue CA, which
    the JVM trusts); and a clear-text server."""
    forged = world.rogue.issue("api.test")
    servers = {
        "legit": EchoServer(world.pki.api_old),
        "forged": EchoServer(forged),
        "plain": EchoServer(None),
    }
    yield servers
    for s in servers.values():
        s.close()


def test_java_websocket_is_pin_checked_before_the_upgrade(
    java: Java,
    world: World,
    server: BundleServer,
    key_a: Ed25519PrivateKey,
    echo: dict[str, EchoServer],
    tmp_path: Path,
) -> None:
    """OkHttp runs no network interceptor for a WebSocket call: a forged server for a pinned
    host got the upgrade request, its Authorization header and the app's messages. The pin check
    now runs at the handshake: the forged server receives not one byte, whether the client was
    configured for the call or built once; ws:// to the pinned host is refused before connecting.
    Twins: the legitimate server gets the upgrade and the message; without pins the JVM would
    have talked to the forged one; ws:// to an unpinned host works."""
    legit, forged, plain = echo["legit"], echo["forged"], echo["plain"]
    init_updater(java, world, server.url, tmp_path / "store", key_a)  # pins api.test to api_old
    for pinning in ("both", "shared"):
        refused = java("ws", url=f"wss://api.test:{forged.port}/ws", pinning=pinning)
        assert not refused["ok"], pinning
        assert "certificate pinning failure for api.test" in refused["failure"]
    assert forged.received_nothing()
    events = java("status")["events"]
    assert [e["kind"] for e in events].count("pin-failure") == 2
    opened = java("ws", url=f"wss://api.test:{legit.port}/ws", pinning="both")
    assert opened == {"ok": True, "received": "echo: app message"}
    assert "Authorization: Bearer WEBSOCKET-TOKEN" in legit.heads[-1]
    assert java("ws", url=f"wss://api.test:{forged.port}/ws", pinning="none")["ok"]
    before = plain.connections
    clear = java("ws", url=f"ws://api.test:{plain.port}/ws", pinning="shared")
    assert not clear["ok"]
    assert "cleartext" in clear["failure"]
    assert plain.connections == before
    unpinned = java("ws", url=f"ws://unpinned.test:{plain.port}/ws", pinning="shared")
    assert unpinned == {"ok": True, "received": "echo: app message"}


def test_java_rechecks_a_pooled_connection_when_the_policy_changes(
    java: Java,
    world: World,
    server: BundleServer,
    key_a: Ed25519PrivateKey,
    echo: dict[str, EchoServer],
    tmp_path: Path,
) -> None:
    """A kept-alive connection was checked at its handshake; a bundle then denies that server's
    key. The next request on the pooled connection is refused before it is written (the network
    interceptor re-checks under the new policy). The twin: before the update, the pooled
    connection serves a second request with no new handshake."""
    legit = echo["legit"]
    fallback = rules(world, [world.pki.ca.pin, world.pki.backup])
    init_updater(java, world, server.url, tmp_path / "store", key_a, fallback=fallback)
    url = f"https://api.test:{legit.port}/"
    connections, heads = legit.connections, len(legit.heads)
    assert java("get", url=url, pinning="shared")["ok"]
    assert java("get", url=url, pinning="shared")["ok"]
    assert (legit.connections, len(legit.heads)) == (connections + 1, heads + 2)
    revoking = rules(world, [world.pki.ca.pin, world.pki.backup], deny=[world.pki.api_old.pin])
    server.serve(make(revoking, [key_a], 1))
    assert java("refresh")["outcome"] == "updated"
    denied = java("get", url=url, pinning="shared")
    assert not denied["ok"]
    assert "denied key" in denied["failure"]
    assert len(legit.heads) == heads + 2  # the refused request never reached the server


def test_java_updater_sends_none_of_the_apps_credentials(
    java: Java, world: World, server: BundleServer, key_a: Ed25519PrivateKey, tmp_path: Path
) -> None:
    """The app's client carries the user's bearer token (an interceptor), answers 401 with a
    password and a refresh token (an Authenticator) and sends a session cookie (a CookieJar). The
    update server, which holds no signing key, asks for credentials: it gets one request with
    none of them, and its cookie is not stored. The twin: the fetch through the same app client
    (its TLS setup) works and updates the pins."""
    init_updater(java, world, server.url, tmp_path / "store", key_a, app_client=True)
    with server.lock:
        server.challenge = 401
    failed = java("refresh")
    assert (failed["outcome"], failed["version"]) == ("failed", None)
    assert "401" in failed["message"]
    with server.lock:
        server.challenge = 0
        server.set_cookie = True
    server.serve(make(rules(world, [world.pki.ca.pin, world.pki.backup]), [key_a], 1))
    assert java("refresh")["outcome"] == "updated"
    assert len(server.requests) == 2  # one per refresh: the 401 was not answered
    for headers in server.requests:
        assert not {"authorization", "cookie", "x-refresh-token"} & set(headers), headers
    assert java("status")["cookies_saved"] == []


def test_java_updater_gives_proxy_credentials_to_the_proxy_only(
    java: Java, world: World, server: BundleServer, key_a: Ed25519PrivateKey, tmp_path: Path
) -> None:
    """The app reaches the network through a proxy that wants credentials, which its client's
    proxy Authenticator supplies: the fetch uses that proxy and gives it the credentials (the
    twin: the bundle arrives through it). An update server that answers 407 from inside the
    tunnel gets no Proxy-Authorization: the proxy Authenticator answers CONNECT only."""
    proxy = AuthProxy("proxy-user:proxy-password")
    try:
        init_updater(
            java,
            world,
            server.url,
            tmp_path / "store",
            key_a,
            app_client=True,
            proxy_port=proxy.port,
        )
        with server.lock:
            server.challenge = 407
        failed = java("refresh")
        assert failed["outcome"] == "failed"
        assert "407" in failed["message"]
        assert proxy.expected in proxy.connects
        assert len(server.requests) == 1
        assert not {"proxy-authorization", "authorization"} & set(server.requests[0])
        with server.lock:
            server.challenge = 0
        server.serve(make(rules(world, [world.pki.ca.pin, world.pki.backup]), [key_a], 1))
        assert java("refresh")["outcome"] == "updated"
        assert not {"proxy-authorization", "authorization"} & set(server.requests[-1])
    finally:
        proxy.close()


def test_java_store_follows_no_planted_link(
    java: Java, world: World, server: BundleServer, key_a: Ed25519PrivateKey, tmp_path: Path
) -> None:
    """A local user links bundle.json and state.json to a store elsewhere: the Java client
    refuses the links (as tlspin's Python store does) and starts on the embedded policy, with
    an event per file; a FIFO planted in their place does not block start-up. The twin: the same
    files, copied rather than linked, are loaded."""
    document = make(rules(world, [world.pki.ca.pin, world.pki.backup]), [key_a], 5)
    elsewhere = tmp_path / "elsewhere"
    BundleStore(elsewhere).save(parse_document(document.dumps()))
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    for name in ("bundle.json", "state.json"):
        (store / name).symlink_to(elsewhere / name)
    init_updater(java, world, server.url, store, key_a)
    status = java("status")
    assert status["accepted"] is None
    problems = [e["message"] for e in status["events"] if e["kind"] == "store-fallback"]
    assert len(problems) == 2
    assert all("symbolic link" in p for p in problems), problems
    for name in ("bundle.json", "state.json"):
        (store / name).unlink()
        os.mkfifo(store / name)
    init_updater(java, world, server.url, store, key_a)
    assert java("status")["accepted"] is None
    for name in ("bundle.json", "state.json"):
        (store / name).unlink()
        (store / name).write_bytes((elsewhere / name).read_bytes())
    init_updater(java, world, server.url, store, key_a)
    assert java("status")["accepted"] == 5
