"""BundleUpdater end to end over loopback HTTPS: updates, refusals, store fallbacks, threads."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import tlspin
from _httpd import DripServer
from tlspin import PinMismatchError, PinPolicy, PinRule, PolicyError
from tlspin.bundles import (
    BundleEvent,
    BundleStore,
    BundleUpdater,
    BundleWarning,
    KeySet,
    TrustState,
)
from tlspin.bundles import updater as updater_module
from tlspin.bundles.store import CURRENT, STATE
from tlspin.testing.pki import server_context
from tlspin.testing.servers import TLSServer

from .conftest import BUNDLE_HOST, BundleServer, Pki, handshake, make, public, raw_sign

Factory = Callable[..., BundleUpdater]


@pytest.fixture
def make_updater(
    tmp_path: Path, pki: Pki, server: BundleServer, key_a: Ed25519PrivateKey
) -> Iterator[Factory]:
    """Build updaters for the test's store and server; stops them afterwards."""
    made: list[BundleUpdater] = []

    def factory(**options: Any) -> BundleUpdater:
        options.setdefault("trusted_keys", [public(key_a)])
        options.setdefault("store", tmp_path / "store")
        options.setdefault("fallback_policy", pki.policy())
        options.setdefault("cafile", pki.cafile)
        options.setdefault("timeout", 5.0)
        updater = BundleUpdater(options.pop("url", server.url), **options)
        made.append(updater)
        return updater

    yield factory
    for updater in made:
        assert updater.stop(timeout=10)


@pytest.fixture(scope="module")
def api_servers(pki: Pki) -> Iterator[tuple[TLSServer, TLSServer]]:
    """Two API servers for api.test: one with the old key, one with the new key."""
    with TLSServer(pki.api_old) as old, TLSServer(pki.api_new) as new:
        yield old, new


def test_end_to_end_v1_v2_tampered_v3_rollback(
    pki: Pki,
    server: BundleServer,
    make_updater: Factory,
    key_a: Ed25519PrivateKey,
    api_servers: tuple[TLSServer, TLSServer],
) -> None:
    """v1 then v2 apply to new connections; a tampered v3 and a replayed v1 leave v2 in force."""
    old_api, new_api = api_servers
    events: list[BundleEvent] = []
    updater = make_updater(observers=[events.append])
    context = tlspin.create_context(updater, cafile=pki.cafile)
    handshake(context, old_api.address)
    with pytest.raises(PinMismatchError):
        handshake(context, new_api.address)

    v1 = make(pki.policy([pki.api_old.pin]), [key_a], 1)
    server.serve(v1)
    assert updater.refresh().outcome == "updated"
    assert updater.version == 1

    v2 = make(pki.policy([pki.api_new.pin]), [key_a], 2)  # the old key's pin is removed
    server.serve(v2)
    assert updater.refresh().outcome == "updated"
    assert updater.version == 2
    handshake(context, new_api.address)  # a connection opened after the update: new pins
    with pytest.raises(PinMismatchError):
        handshake(context, old_api.address)  # removal works: the dropped pin no longer passes

    v3 = make(pki.policy([pki.api_old.pin, pki.api_new.pin]), [key_a], 3)
    server.serve(v3.dumps().replace(b"api.test", b"api.tesu", 1))
    result = updater.refresh()
    assert (result.outcome, result.reason, result.version) == ("rejected", "threshold", 2)

    server.serve(v1)
    result = updater.refresh()
    assert (result.outcome, result.reason, result.version) == ("rejected", "rollback", 2)
    handshake(context, new_api.address)
    with pytest.raises(PinMismatchError):
        handshake(context, old_api.address)
    assert [e.kind for e in events] == ["updated", "updated", "rejected", "rejected"]
    assert [e.in_force for e in events] == [1, 2, 2, 2]
    assert make_updater().version == 2  # what is in force survives a restart


def _case(
    name: str, pki: Pki, a: Ed25519PrivateKey, b: Ed25519PrivateKey, evil: Ed25519PrivateKey
) -> bytes:
    now = dt.datetime.now(dt.UTC)
    good = pki.policy([pki.api_new.pin])
    v6 = make(good, [a], 6)
    if name == "flipped-byte":
        return v6.dumps().replace(b"api.test", b"api.tesu", 1)
    if name == "swapped-signature":
        data = v6.to_data()
        data["signatures"] = make(pki.policy(), [a], 5).to_data()["signatures"]
        return raw_json(data)
    if name == "one-key-twice":
        data = make(good, [a], 6).to_data()
        data["signatures"] = data["signatures"] * 2  # the same key id and signature, twice
        return raw_json(data)
    if name in ("untrusted-key", "below-threshold"):
        return make(good, [evil] if name == "untrusted-key" else [a], 6).dumps()
    if name == "rollback":
        return make(good, [a], 4).dumps()
    if name == "same-version-other-content":
        return make(good, [a], 5).dumps()
    if name == "expired":
        return make(
            good, [a], 6, issued_at=now - dt.timedelta(days=3), lifetime=dt.timedelta(days=1)
        ).dumps()
    if name == "future":
        return make(good, [a], 6, issued_at=now + dt.timedelta(hours=2)).dumps()
    if name == "truncated":
        body = v6.dumps()
        return body[: len(body) // 2]
    if name == "invalid-json":
        return b"<html>502 Bad Gateway</html>"
    if name == "duplicate-keys":
        return v6.dumps().replace(b'"version": 6', b'"version": 6, "version": 7', 1)
    if name == "invalid-policy":
        signed = dict(v6.bundle.signed)
        signed["policy"] = {"rule": [{"hosts": ["api.test"], "pins": ["sha256/not-a-pin"]}]}
        return raw_json(raw_sign(signed, [a]))
    if name == "new-keys-not-signed-by-current":
        return make(good, [evil], 6, signing_keys=KeySet([public(evil)])).dumps()
    if name == "unpinned-update-host":
        return make(pki.policy(pin_update_host=False), [a], 6).dumps()
    raise AssertionError(name)


def raw_json(data: object) -> bytes:
    """Serialise test data as JSON."""
    import json

    return json.dumps(data).encode()


SECURITY_CASES = {
    "flipped-byte": "threshold",
    "swapped-signature": "threshold",
    "untrusted-key": "threshold",
    "below-threshold": "threshold",
    "one-key-twice": "threshold",
    "rollback": "rollback",
    "same-version-other-content": "equivocation",
    "expired": "expired",
    "future": "future",
    "truncated": "json",
    "invalid-json": "json",
    "duplicate-keys": "duplicate-key",
    "invalid-policy": "policy",
    "new-keys-not-signed-by-current": "threshold",
    "unpinned-update-host": "unpinned-update-host",
}


@pytest.mark.parametrize(("case", "reason"), SECURITY_CASES.items(), ids=list(SECURITY_CASES))
def test_attack_is_refused_and_old_policy_stays(
    case: str,
    reason: str,
    tmp_path: Path,
    pki: Pki,
    server: BundleServer,
    make_updater: Factory,
    key_a: Ed25519PrivateKey,
    key_b: Ed25519PrivateKey,
    key_evil: Ed25519PrivateKey,
) -> None:
    """Each attack from the issue is refused with its reason; v5 stays in force and stored."""
    store = BundleStore(tmp_path / "store")
    store.save(make(pki.policy(), [key_a, key_b], 5))
    both = case in ("below-threshold", "one-key-twice")
    trusted = [public(key_a), public(key_b)] if both else [public(key_a)]
    threshold = 2 if both else 1
    updater = make_updater(trusted_keys=trusted, threshold=threshold)
    before = updater.current_policy()
    assert updater.version == 5
    server.serve(_case(case, pki, key_a, key_b, key_evil))
    result = updater.refresh()
    assert (result.outcome, result.reason) == ("rejected", reason)
    assert updater.version == 5
    assert updater.current_policy() is before
    trust = TrustState(KeySet(trusted, threshold))
    loaded = store.load(trust).loaded
    assert loaded is not None
    assert loaded.verified.bundle.version == 5


def test_valid_successor_is_accepted_by_the_same_setup(
    tmp_path: Path,
    pki: Pki,
    server: BundleServer,
    make_updater: Factory,
    key_a: Ed25519PrivateKey,
    key_b: Ed25519PrivateKey,
) -> None:
    """The failure twin of the attack matrix: a proper v6 (even by two of two keys) applies."""
    BundleStore(tmp_path / "store").save(make(pki.policy(), [key_a, key_b], 5))
    updater = make_updater(trusted_keys=[public(key_a), public(key_b)], threshold=2)
    server.serve(make(pki.policy([pki.api_new.pin]), [key_a, key_b], 6))
    assert updater.refresh().outcome == "updated"
    assert updater.version == 6


def test_huge_body_is_not_read_into_memory(
    pki: Pki, server: BundleServer, make_updater: Factory
) -> None:
    """A 100 MB body is cut off at the cap: the download stops and memory stays small."""
    updater = make_updater(max_bytes=1 << 20)
    server.stream_total = 100 * 1024 * 1024
    tracemalloc.start()
    try:
        result = updater.refresh()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (result.outcome, result.reason) == ("rejected", "size")
    assert updater.version is None
    assert peak < 12 * 1024 * 1024
    assert server.streamed < server.stream_total


def test_refuses_to_construct_without_pinned_update_host(
    pki: Pki, tmp_path: Path, key_a: Ed25519PrivateKey
) -> None:
    """The fallback policy must pin the update host with an enforced rule; https only."""
    keys = [public(key_a)]
    unpinned = pki.policy(pin_update_host=False)
    report_only = PinPolicy(
        [*unpinned.rules, PinRule(BUNDLE_HOST, [pki.ca.pin, pki.backup], mode="report")]
    )
    for policy in (unpinned, report_only):
        with pytest.raises(PolicyError, match="must pin the update host"):
            BundleUpdater(
                "https://127.0.0.1:1/b.json",
                trusted_keys=keys,
                store=tmp_path,
                fallback_policy=policy,
            )
    with pytest.raises(PolicyError, match="invalid"):
        BundleUpdater(
            "https://127.0.0.1:99999/b.json",
            trusted_keys=keys,
            store=tmp_path,
            fallback_policy=pki.policy(),
        )
    with pytest.raises(PolicyError, match="https"):
        BundleUpdater(
            "http://127.0.0.1:1/b.json",
            trusted_keys=keys,
            store=tmp_path,
            fallback_policy=pki.policy(),
        )
    updater = BundleUpdater(
        "https://127.0.0.1:1/b.json",
        trusted_keys=keys,
        store=tmp_path,
        fallback_policy=pki.policy(),
    )
    assert updater.current_policy() is updater.fallback_policy


def test_first_fetch_is_pinned(
    pki: Pki, server: BundleServer, make_updater: Factory, key_a: Ed25519PrivateKey
) -> None:
    """With fallback pins that do not match the update server, no request is ever sent."""
    wrong = PinPolicy([PinRule(BUNDLE_HOST, [pki.api_old.pin, pki.backup])])
    server.serve(make(pki.policy(), [key_a], 1))
    result = make_updater(fallback_policy=wrong).refresh()
    assert result.outcome == "failed"
    assert "pinning failure" in result.message.lower() or "pin" in result.message.lower()
    assert server.requests == []
    assert make_updater().refresh().outcome == "updated"
    assert len(server.requests) == 1


@pytest.mark.parametrize("etags", [True, False])
def test_etag_and_if_none_match(
    pki: Pki, server: BundleServer, make_updater: Factory, key_a: Ed25519PrivateKey, etags: bool
) -> None:
    """With ETags the next fetch sends If-None-Match and gets 304; without, it is 'unchanged'."""
    server.serve(make(pki.policy(), [key_a], 1), etags=etags)
    updater = make_updater()
    assert updater.refresh().outcome == "updated"
    second = updater.refresh()
    assert second.outcome == ("not-modified" if etags else "unchanged")
    assert second.version == 1
    assert ("if-none-match" in server.requests[-1]) is etags
    assert "if-none-match" not in server.requests[0]
    # The ETag is stored with the bundle: a restarted client sends it at once.
    assert make_updater().refresh().outcome == ("not-modified" if etags else "unchanged")


def test_tampered_store_falls_back_with_warning(
    tmp_path: Path,
    pki: Pki,
    make_updater: Factory,
    key_a: Ed25519PrivateKey,
    api_servers: tuple[TLSServer, TLSServer],
) -> None:
    """Tampered store files fall back, with a warning each time: to the newest bundle's second
    copy, then to the last good bundle, then to the embedded policy, never to no pins."""
    old_api, new_api = api_servers
    store = BundleStore(tmp_path / "store")
    v1 = make(pki.policy([pki.api_old.pin]), [key_a], 1)
    v2 = make(pki.policy([pki.api_new.pin]), [key_a], 2)
    store.save(v1)
    store.save(v2, previous=v1)
    for name in (CURRENT, STATE):
        path = tmp_path / "store" / name
        path.write_bytes(path.read_bytes().replace(b"api.test", b"api.tesu", 1))
        events: list[BundleEvent] = []
        with pytest.warns(BundleWarning, match="refused"):
            updater = make_updater(observers=[events.append])
        expected = 2 if name == CURRENT else 1
        assert updater.version == expected
        assert [(e.kind, e.in_force) for e in events] == [("store-fallback", expected)] * len(
            events)
    prev = tmp_path / "store" / "bundle.previous.json"
    prev.write_bytes(b"{}")
    with pytest.warns(BundleWarning, match="embedded fallback policy"):
        updater = make_updater()
    assert updater.version is None
    assert updater.current_policy() is updater.fallback_policy
    context = tlspin.create_context(updater, cafile=pki.cafile)
    handshake(context, old_api.address)
    with pytest.raises(PinMismatchError):  # never no pins: the embedded policy still refuses
        handshake(context, new_api.address)


def test_expired_bundle_falls_back_to_embedded_policy(
    tmp_path: Path,
    pki: Pki,
    server: BundleServer,
    make_updater: Factory,
    key_a: Ed25519PrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An expired bundle gives way to the embedded policy; its version still blocks rollback."""
    server.serve(make(pki.policy([pki.api_new.pin]), [key_a], 3, lifetime=dt.timedelta(hours=1)))
    events: list[BundleEvent] = []
    updater = make_updater(observers=[events.append])
    assert updater.refresh().outcome == "updated"
    assert updater.version == 3
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    monkeypatch.setattr(updater_module, "_now", lambda: later)
    with pytest.warns(BundleWarning, match="expired"):
        assert updater.current_policy() is updater.fallback_policy
    assert updater.version is None
    assert updater.accepted_version == 3
    assert events[-1].kind == "expired"
    # A restart reads the expired bundle, keeps its version as the floor and uses the fallback.
    with pytest.warns(BundleWarning, match="expired"):
        restarted = make_updater()
    assert (restarted.version, restarted.accepted_version) == (None, 3)
    server.serve(make(pki.policy(), [key_a], 2, issued_at=later - dt.timedelta(minutes=1)))
    assert restarted.refresh().reason == "rollback"
    server.serve(make(pki.policy(), [key_a], 4, issued_at=later - dt.timedelta(minutes=1)))
    assert restarted.refresh().outcome == "updated"
    assert restarted.version == 4


@pytest.mark.parametrize("damage", ["truncate", "delete", "garbage"])
def test_damaged_bundle_file_keeps_the_anti_rollback_floor(
    tmp_path: Path,
    pki: Pki,
    server: BundleServer,
    make_updater: Factory,
    key_a: Ed25519PrivateKey,
    damage: str,
) -> None:
    """With bundle.json damaged, another validly signed bundle of the accepted version is still
    refused (equivocation), and so is an older one (rollback)."""
    v1 = make(pki.policy([pki.api_old.pin]), [key_a], 1)
    v2 = make(pki.policy([pki.api_new.pin]), [key_a], 2)
    updater = make_updater()
    for document in (v1, v2):
        server.serve(document)
        assert updater.refresh().outcome == "updated"
    path = tmp_path / "store" / CURRENT
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "delete":
        path.unlink()
    else:
        path.write_bytes(b"\x00" * 300)
    with pytest.warns(BundleWarning):
        restarted = make_updater()
    other_v2 = make(pki.policy([pki.api_old.pin, pki.api_new.pin]), [key_a], 2)
    server.serve(other_v2)
    assert restarted.refresh().reason == "equivocation"
    assert (restarted.version, restarted.accepted_version) == (2, 2)
    server.serve(v1)
    assert restarted.refresh().reason == "rollback"
    assert restarted.version == 2


def test_damaged_state_file_keeps_the_floor_and_updates_still_apply(
    tmp_path: Path,
    pki: Pki,
    server: BundleServer,
    make_updater: Factory,
    key_a: Ed25519PrivateKey,
) -> None:
    """Twin: with state.json damaged instead, bundle.json keeps the floor; the same bundle is
    'unchanged' and a newer one applies (and rewrites both files)."""
    v2 = make(pki.policy([pki.api_new.pin]), [key_a], 2)
    server.serve(v2)
    assert make_updater().refresh().outcome == "updated"
    (tmp_path / "store" / STATE).write_bytes(b"{")
    with pytest.warns(BundleWarning):
        restarted = make_updater()
    assert restarted.version == 2
    server.serve(make(pki.policy(), [key_a], 2))
    assert restarted.refresh().reason == "equivocation"
    server.serve(v2)
    assert restarted.refresh().outcome in ("unchanged", "not-modified")
    server.serve(make(pki.policy(), [key_a], 3))
    assert restarted.refresh().outcome == "updated"
    assert make_updater().version == 3  # no warning: both copies were written again


def test_denied_key_stays_denied_after_the_bundle_expires(
    pki: Pki,
    server: BundleServer,
    make_updater: Factory,
    key_a: Ed25519PrivateKey,
    api_servers: tuple[TLSServer, TLSServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bundle that denies a key: when it expires (or updates are blocked until it does), the
    embedded policy takes over but the key stays refused, across restarts; other keys the
    embedded policy pins keep working."""
    old_api, new_api = api_servers
    # The embedded policy pins the CA: both API keys pass under it alone.
    fallback = PinPolicy([
        PinRule(BUNDLE_HOST, [pki.ca.pin, pki.backup]),
        PinRule(["api.test", "other.test"], [pki.ca.pin, pki.backup]),
    ])
    revoking = PinPolicy([
        PinRule(BUNDLE_HOST, [pki.ca.pin, pki.backup]),
        PinRule("api.test", [pki.ca.pin, pki.backup], deny=[pki.api_old.pin]),
    ])
    server.serve(make(revoking, [key_a], 1, lifetime=dt.timedelta(hours=1)))
    updater = make_updater(fallback_policy=fallback)
    assert updater.refresh().outcome == "updated"
    context = tlspin.create_context(updater, cafile=pki.cafile)
    handshake(context, new_api.address)
    with pytest.raises(PinMismatchError):
        handshake(context, old_api.address)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    monkeypatch.setattr(updater_module, "_now", lambda: later)
    with pytest.warns(BundleWarning, match="expired"):
        assert updater.version is None
    with pytest.warns(BundleWarning, match="expired"):
        restarted = make_updater(fallback_policy=fallback)
    for source in (updater, restarted):
        context = tlspin.create_context(source, cafile=pki.cafile)
        with pytest.raises(PinMismatchError) as refused:
            handshake(context, old_api.address)
        assert refused.value.reason == "denied"
        handshake(context, new_api.address)
        # A host the bundle never denied anything for keeps the embedded policy as it is.
        assert source.current_policy().rules_for("other.test") == fallback.rules_for("other.test")


def test_rotation_through_the_updater_survives_restart(
    pki: Pki,
    server: BundleServer,
    make_updater: Factory,
    key_a: Ed25519PrivateKey,
    key_b: Ed25519PrivateKey,
) -> None:
    """After a rotation to key B, a restarted app still shipping key A takes only B's bundles."""
    from tlspin.bundles import next_chain

    rotation = make(pki.policy(), [key_a, key_b], 2, signing_keys=KeySet([public(key_b)]))
    server.serve(rotation)
    assert make_updater().refresh().outcome == "updated"
    restarted = make_updater()
    assert restarted.signing_keys.keyids == {public(key_b).keyid}
    server.serve(make(pki.policy(), [key_a], 3, chain=next_chain(rotation)))
    assert restarted.refresh().reason == "threshold"
    server.serve(make(pki.policy(), [key_b], 3, chain=next_chain(rotation)))
    assert restarted.refresh().outcome == "updated"


def test_background_mode_refreshes_and_stops(
    pki: Pki, server: BundleServer, make_updater: Factory, key_a: Ed25519PrivateKey
) -> None:
    """start() refreshes in a thread every interval; stop() ends the thread."""
    server.serve(make(pki.policy(), [key_a], 1))
    updater = make_updater(interval=0.05)
    updater.start()
    updater.start()  # idempotent
    assert _wait(lambda: updater.version == 1)
    server.serve(make(pki.policy([pki.api_new.pin]), [key_a], 2))
    assert _wait(lambda: updater.version == 2)
    assert updater.running
    assert updater.stop()
    assert not updater.running
    with make_updater(interval=3600) as again:
        assert again.running
    assert not again.running


def test_fetch_is_bounded_by_timeout(pki: Pki, make_updater: Factory) -> None:
    """A server that accepts and never answers makes refresh fail, not hang."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    thread.start()
    try:
        url = f"https://127.0.0.1:{listener.getsockname()[1]}/b.json"
        result = make_updater(url=url, timeout=0.5).refresh()
        assert result.outcome == "failed"
        assert "timed out" in result.message
    finally:
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()


@pytest.mark.parametrize(
    ("prefix", "drip"),
    [
        (b"HTTP/1.1 200 OK\r\n", b"X-Slow: " + b"a" * 64),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", b" "),
    ],
    ids=["dripped-headers", "dripped-body"],
)
def test_timeout_bounds_the_whole_fetch(
    pki: Pki, make_updater: Factory, key_a: Ed25519PrivateKey, prefix: bytes, drip: bytes
) -> None:
    """A server dripping its headers or its body cannot hold a refresh (and its lock) past timeout.

    Every read returns a byte within a few milliseconds, so only an overall deadline ends it.
    The bound below is functional (timeout plus a generous 5 s), not a benchmark.
    """
    timeout = 1.0
    dripper = DripServer(prefix, drip, context=server_context(pki.bundle_leaf))
    try:
        updater = make_updater(url=f"https://127.0.0.1:{dripper.port}/b.json", timeout=timeout)
        results: list[Any] = []
        worker = threading.Thread(target=lambda: results.append(updater.refresh()), daemon=True)
        worker.start()
        worker.join(timeout + 5)
        assert not worker.is_alive(), "refresh() is still running past its timeout"
        assert results[0].outcome == "failed"
        assert "timed out" in results[0].message
        assert dripper.dripped > 0, "the server really was dripping when the deadline hit"
        # The refresh lock is free again: the next refresh runs, and takes a bundle at once.
        dripper.full = _http_response(make(pki.policy(), [key_a], 1).dumps())
        assert updater.refresh().outcome == "updated"
    finally:
        dripper.close()


def _http_response(body: bytes) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode() + body


def test_redirects_are_not_followed(pki: Pki, make_updater: Factory) -> None:
    """A 302 from the (pinned) update host is a failed fetch: its Location is never visited."""
    target = DripServer(b"", b" ", context=server_context(pki.bundle_leaf))
    redirector = DripServer(b"", b" ", context=server_context(pki.bundle_leaf))
    try:
        redirector.full = (
            f"HTTP/1.1 302 Found\r\nLocation: https://127.0.0.1:{target.port}/evil.json\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        result = make_updater(url=f"https://127.0.0.1:{redirector.port}/b.json").refresh()
        assert (result.outcome, result.version) == ("failed", None)
        assert "HTTP 302" in result.message
        assert target.dripped == 0
    finally:
        target.close()
        redirector.close()


@pytest.mark.parametrize("length", [b"\xb2", b"1_0", b"+0", b"\x00"])
def test_a_content_length_of_other_than_ascii_digits_is_a_failed_fetch(
    pki: Pki, make_updater: Factory, key_a: Ed25519PrivateKey, length: bytes
) -> None:
    """The pinned update server answers a valid bundle with ``Content-Length: ²`` (latin-1
    0xB2: ``str.isdigit()`` is true, ``int()`` refuses it) or another length int() would read
    ("1_0", "+0"): refresh() returns a failed fetch, never raises, and applies nothing."""
    body = make(pki.policy(), [key_a], 1).dumps()
    server = DripServer(b"", b" ", context=server_context(pki.bundle_leaf))
    try:
        server.full = (
            b"HTTP/1.1 200 OK\r\nContent-Length: " + length + b"\r\nConnection: close\r\n\r\n"
            + body
        )
        updater = make_updater(url=f"https://127.0.0.1:{server.port}/b.json")
        result = updater.refresh()
        assert (result.outcome, result.version) == ("failed", None)
        assert "Content-Length" in result.message
        # Twin: the same bundle with its true length is applied.
        server.full = _http_response(body)
        assert updater.refresh().outcome == "updated"
    finally:
        server.close()


def test_raising_observer_does_not_break_updates(
    pki: Pki, server: BundleServer, make_updater: Factory, key_a: Ed25519PrivateKey
) -> None:
    """An observer that raises is ignored; the update still applies."""

    def boom(event: BundleEvent) -> None:
        raise RuntimeError("observer bug")

    server.serve(make(pki.policy(), [key_a], 1))
    updater = make_updater(observers=[boom])
    assert updater.refresh().outcome == "updated"


def test_fallback_observers_see_violations_under_bundle_policy(
    pki: Pki,
    server: BundleServer,
    make_updater: Factory,
    key_a: Ed25519PrivateKey,
    api_servers: tuple[TLSServer, TLSServer],
) -> None:
    """Violation observers of the embedded policy keep working after a bundle replaces its rules."""
    seen: list[tlspin.Violation] = []
    updater = make_updater(fallback_policy=pki.policy().with_observers(seen.append))
    server.serve(make(pki.policy([pki.api_new.pin]), [key_a], 1))
    assert updater.refresh().outcome == "updated"
    with pytest.raises(PinMismatchError):
        handshake(tlspin.create_context(updater, cafile=pki.cafile), api_servers[0].address)
    assert [v.hostname for v in seen] == ["api.test"]


@pytest.mark.parametrize("collector_key", ["denied", "new"])
def test_reporter_on_the_fallback_pins_reports_with_the_bundle_in_force(
    pki: Pki,
    server: BundleServer,
    make_updater: Factory,
    key_a: Ed25519PrivateKey,
    api_servers: tuple[TLSServer, TLSServer],
    collector_key: str,
) -> None:
    """``fallback_policy=reporter.attach(policy)`` (how every bundle's violations get
    reported): a bundle removes and denies the collector's compromised key. A server holding
    that key (same CA) gets not one byte of the report, although the fallback pinned it; the
    collector with the bundle's new key (twin) receives it."""
    denied, new = pki.ca.issue("localhost"), pki.ca.issue("localhost")
    fallback = PinPolicy([*pki.policy().rules, PinRule("localhost", [denied.pin, pki.backup])])
    bundle = PinPolicy([
        *pki.policy([pki.api_new.pin]).rules,
        PinRule("localhost", [new.pin, pki.backup], deny=[denied.pin]),
    ])
    with TLSServer(denied if collector_key == "denied" else new) as collector:
        reporter = tlspin.Reporter(f"https://localhost:{collector.port}/reports",
                                   cafile=pki.cafile, max_attempts=1)
        updater = make_updater(fallback_policy=reporter.attach(fallback))
        server.serve(make(bundle, [key_a], 1))
        assert updater.refresh().outcome == "updated"
        with pytest.raises(PinMismatchError):  # the bundle's violation, reported
            handshake(tlspin.create_context(updater, cafile=pki.cafile), api_servers[0].address)
        assert reporter.flush(10)
        reporter.close()
        if collector_key == "denied":
            assert (reporter.stats.sent, reporter.stats.failed) == (0, 1)
            assert collector.received == b"", "the denied key's holder read the report"
        else:
            assert reporter.stats.sent == 1
            assert b'"hostname":"api.test"' in collector.received


def _wait(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
