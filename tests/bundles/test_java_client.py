"""The Java client (clients/java) end to end: real TLS on loopback through the JVM's own TLS
stack and Debian's OkHttp 3, bundles signed by the Python signer and by the `tlspin` CLI, and
the same verdict as the Python verifier on every conformance vector.

The JVM trusts two CAs (the test CA and a rogue one) through a KeyStore built from their PEMs,
so a forged leaf is valid to it: only the pins can refuse it. A long-lived Java process
(io.tlspin.bundles.Driver) takes one JSON command per line; every host name resolves to
127.0.0.1 there.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tlspin import policyfile
from tlspin.bundles import parse_document, sign_bundle

from .conftest import BUNDLE_HOST, BundleServer, make, public
from .javadriver import Java, World, java, java_classpath, world
from .javadriver import get as _get
from .javadriver import init_updater as _init
from .javadriver import rules as _rules
from .javadriver import tool as _tool
from .vectors import canonical_result, evaluate, load_manifest

__all__ = ["java", "java_classpath", "world"]  # fixtures, imported for pytest

VECTORS = Path(__file__).parents[1] / "vectors" / "bundles"


def test_java_fetches_bundle_then_refuses_forged_leaf(
    java: Java, world: World, server: BundleServer, key_a: Ed25519PrivateKey, tmp_path: Path
) -> None:
    """Java fetches a bundle over pinned HTTPS; OkHttp then accepts the server the bundle pins
    and refuses a forged leaf from a second CA that the JVM trusts (a control without pins
    accepts it)."""
    _init(java, world, server.url, tmp_path / "store", key_a)
    assert not _get(java, world.api(world.other_api))["ok"]  # the embedded policy pins api_old
    server.serve(make(_rules(world, [world.pki.ca.pin, world.pki.backup]), [key_a], 1))
    assert java("refresh")["outcome"] == "updated"
    assert _get(java, world.api(world.other_api)) == {"ok": True, "status": 200}
    assert _get(java, world.api(world.legit_api))["ok"]
    refused = _get(java, world.api(world.forged_api))
    assert not refused["ok"]
    assert "SSLPeerUnverifiedException" in refused["failure"]
    assert _get(java, world.api(world.forged_api), "none")["ok"]
    assert java("status")["version"] == 1


def test_java_keeps_pins_when_bundle_tampered_rolled_back_or_expired(
    java: Java, world: World, server: BundleServer, key_a: Ed25519PrivateKey, tmp_path: Path
) -> None:
    """Each bad bundle, all pinning the rogue CA, is refused by its rule; the pins stay."""
    _init(java, world, server.url, tmp_path / "store", key_a)
    good = _rules(world, [world.pki.ca.pin, world.pki.backup])
    server.serve(make(good, [key_a], 2))
    assert java("refresh")["outcome"] == "updated"
    evil = _rules(world, [world.rogue.pin, world.pki.backup])
    tampered = make(good, [key_a], 3).to_data()
    tampered["signed"]["policy"] = evil
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    expired = sign_bundle(
        evil,
        keys=[key_a],
        version=3,
        issued_at=now - dt.timedelta(days=10),
        expires_at=now - dt.timedelta(days=1),
    )
    cases = [
        (json.dumps(tampered).encode(), "threshold"),
        (make(evil, [key_a], 1).dumps(), "rollback"),
        (make(evil, [key_a], 2).dumps(), "equivocation"),
        (expired.dumps(), "expired"),
    ]
    for body, reason in cases:
        server.serve(body)
        result = java("refresh")
        assert (result["outcome"], result["reason"], result["version"]) == (
            "rejected",
            reason,
            2,
        ), result
        assert not _get(java, world.api(world.forged_api))["ok"], reason
        assert _get(java, world.api(world.other_api))["ok"], reason
    rejected = [e["reason"] for e in java("status")["events"] if e["kind"] == "rejected"]
    assert rejected == [reason for _, reason in cases]


def test_java_refuses_mitm_on_bundle_url(
    java: Java, world: World, server: BundleServer, key_a: Ed25519PrivateKey, tmp_path: Path
) -> None:
    """A validly signed bundle served by a forged leaf (rogue CA, trusted by the JVM) for the
    update host is never fetched: even the first fetch is pinned by the embedded policy. The twin:
    the same bundle from the legitimate server is accepted."""
    evil = _rules(world, [world.rogue.pin, world.pki.backup])
    world.forged_bundle.serve(make(evil, [key_a], 1))
    url = world.forged_bundle.url
    _init(java, world, url, tmp_path / "mitm", key_a)
    result = java("refresh")
    assert (result["outcome"], result["version"]) == ("failed", None)
    assert "SSLPeerUnverifiedException" in result["message"]
    assert not _get(java, world.api(world.forged_api))["ok"]
    assert world.forged_bundle.requests == []  # refused at the handshake: no request was sent
    server.serve(world.forged_bundle.body)
    _init(java, world, server.url, tmp_path / "legit", key_a)
    assert java("refresh")["outcome"] == "updated"


def test_java_stops_reading_past_the_size_cap(
    java: Java, world: World, server: BundleServer, key_a: Ed25519PrivateKey, tmp_path: Path
) -> None:
    """An endless body (no Content-Length) is cut off past the cap, and refused as `size`; one
    that announces its length is refused before reading. The twin: a bundle under the cap."""
    document = make(_rules(world, [world.pki.ca.pin, world.pki.backup]), [key_a], 1).dumps()
    _init(java, world, server.url, tmp_path / "store", key_a, max_bytes=len(document))
    with server.lock:
        server.stream_total = 64 * 1024 * 1024
    result = java("refresh")
    assert (result["outcome"], result["reason"]) == ("rejected", "size")
    # Socket buffers hold a few MiB; a client that kept reading would take all 64.
    assert server.streamed < 16 * 1024 * 1024
    server.serve(document + b" ")
    assert java("refresh")["reason"] == "size"
    server.serve(document)
    assert java("refresh")["outcome"] == "updated"


def test_java_verifies_bundle_signed_by_cli(
    java: Java, world: World, server: BundleServer, tmp_path: Path
) -> None:
    """`tlspin keygen` and `tlspin bundle sign` (the real CLI) make a bundle Java verifies and
    fetches, with the same policy as Python reads; altered after signing, Java refuses it. The
    embedded policy is what `tlspin export --format json` writes, `ports` included (a policy-file
    key the bundle leaves out, which Java's fallback loader checks and ignores)."""
    cli = [sys.executable, "-m", "tlspin"]
    key = tmp_path / "signing.key"
    subprocess.run([*cli, "keygen", "--out", str(key)], check=True, capture_output=True)
    pub = (tmp_path / "signing.pub").read_text().strip()
    policy = tmp_path / "pins.toml"
    policy.write_text(
        f'[[rule]]\nhosts = ["{BUNDLE_HOST}"]\nports = [443, 8443]\n'
        f'pins = ["{world.pki.ca.pin}", "{world.pki.backup}"]\n'
        f'[[rule]]\nhosts = ["api.test", "**.deep.test"]\n'
        f'pins = ["{world.pki.ca.pin}", {{ pin = "{world.pki.backup}", role = "backup", '
        f'note = "safe № 3 ✓" }}]\nexpires = 2099-12-31\n',
        encoding="utf-8",
    )
    bundle = tmp_path / "bundle.json"
    subprocess.run(
        [
            *cli,
            "bundle",
            "sign",
            str(policy),
            "--key",
            str(key),
            "--version",
            "7",
            "--out",
            str(bundle),
        ],
        check=True,
        capture_output=True,
    )
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    args = {"keys": [pub], "threshold": 1, "now": now, "update_host": BUNDLE_HOST}
    verdict = java("verify", document=str(bundle), **args)
    python = parse_document(bundle.read_bytes()).bundle.load_policy()
    assert verdict == {
        "verdict": "accepted",
        "version": 7,
        "policy": policyfile.to_data(python, dates_as_strings=True),
    }
    tampered = tmp_path / "tampered.json"
    tampered.write_bytes(bundle.read_bytes().replace(b"2099-12-31", b"2099-12-30"))
    assert java("verify", document=str(tampered), **args) == {
        "verdict": "refused",
        "reason": "threshold",
    }
    server.serve(bundle.read_bytes())
    # The embedded policy as `tlspin export --format json` writes it (the same pins.toml here).
    exported = subprocess.run(
        [*cli, "export", "--format", "json", str(policy)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert json.loads(exported)["rule"][0]["ports"] == [443, 8443]
    java(
        "init",
        url=server.url,
        store=str(tmp_path / "store"),
        cas=world.cas,
        fallback=exported,
        keys=[pub],
        threshold=1,
    )
    assert java("refresh")["version"] == 7
    assert _get(java, world.api(world.deep, "a.b.deep.test"))["ok"]


def test_java_and_python_give_the_same_answer_on_every_vector(java_classpath: str) -> None:
    """The Java verifier's verdict, reason, policy, trust state and OkHttp pins equal Python's on
    every conformance vector (computed now by both, not only read from the manifest)."""
    result = subprocess.run(
        [
            _tool("java", "TLSPIN_JAVA"),
            "-cp",
            java_classpath,
            "io.tlspin.bundles.VectorRunner",
            str(VECTORS),
        ],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        check=True,
    )
    manifest = load_manifest()
    # split("\n"), not splitlines(): the canonical JSON holds a raw U+2028, a line break to Python.
    answers = [json.loads(line) for line in result.stdout.split("\n") if line]
    assert len(answers) == len(manifest["vectors"]) + len(manifest["canonical"])
    items = {("vectors", v["name"]): v for v in manifest["vectors"]}
    items.update({("canonical", c["name"]): c for c in manifest["canonical"]})
    disagree = []
    for answer in answers:
        item = items[answer["section"], answer["name"]]
        if answer["section"] == "vectors":
            python = evaluate(item)
        else:
            python = canonical_result((VECTORS / item["input"]).read_bytes())
        if answer["result"] != python:
            disagree.append(f"{answer['name']}: Java {answer['result']} != Python {python}")
    assert disagree == []


def test_java_checks_pins_on_the_verified_chain(
    java: Java, world: World, server: BundleServer, key_a: Ed25519PrivateKey, tmp_path: Path
) -> None:
    """A forged leaf served with the test CA's certificate appended: the served chain holds the
    pinned key, the verified chain does not. The interceptor alone and the pinner alone refuse it;
    without pins the JVM accepts it (it is a valid chain to the rogue CA)."""
    ca_pinned = _rules(world, [world.pki.ca.pin, world.pki.backup])
    _init(java, world, server.url, tmp_path / "store", key_a, fallback=ca_pinned)
    padded = world.api(world.padded_api)
    assert _get(java, padded, "none")["ok"]
    for pinning in ("interceptor", "pinner", "both"):
        assert not _get(java, padded, pinning)["ok"], pinning
    assert _get(java, world.api(world.other_api), "interceptor")["ok"]


def test_java_enforces_deny_pins_and_keeps_them_after_expiry(
    java: Java, world: World, server: BundleServer, key_a: Ed25519PrivateKey, tmp_path: Path
) -> None:
    """OkHttp's pinner cannot deny a key; the interceptor does, and the bundle's deny pin stays in
    force after the bundle expires and the embedded policy (which would accept the key) is back."""
    fallback = _rules(world, [world.pki.ca.pin, world.pki.backup])
    _init(java, world, server.url, tmp_path / "store", key_a, fallback=fallback)
    revoking = _rules(world, [world.pki.ca.pin, world.pki.backup], deny=[world.pki.api_old.pin])
    server.serve(make(revoking, [key_a], 1, lifetime=dt.timedelta(days=1)))
    assert java("refresh")["outcome"] == "updated"
    revoked, fine = world.api(world.legit_api), world.api(world.other_api)
    denied = _get(java, revoked)
    assert not denied["ok"]
    assert "denied key" in denied["failure"]
    assert _get(java, revoked, "pinner")["ok"]  # why the interceptor exists
    assert _get(java, fine)["ok"]
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    java("clock", now=later)
    status = java("status")
    assert status["version"] is None
    assert "expired" in [e["kind"] for e in status["events"]]
    assert not _get(java, revoked)["ok"]
    assert _get(java, fine)["ok"]


def test_java_interceptor_pins_deep_names_okhttp3_cannot(
    java: Java, world: World, server: BundleServer, key_a: Ed25519PrivateKey, tmp_path: Path
) -> None:
    """OkHttp 3 has no '**.' pattern: its pinner covers deep.test and *.deep.test only, so a
    forged a.b.deep.test passes the pinner alone. The interceptor refuses it; the legitimate one
    passes."""
    rules = _rules(world, [world.pki.api_old.pin, world.pki.backup])
    rules["rule"].append({"hosts": ["**.deep.test"], "pins": [world.pki.ca.pin, world.pki.backup]})
    _init(java, world, server.url, tmp_path / "store", key_a)
    server.serve(make(rules, [key_a], 1))
    assert java("refresh")["outcome"] == "updated"
    forged = world.api(world.forged_deep, "a.b.deep.test")
    assert _get(java, forged, "pinner")["ok"]
    assert not _get(java, forged, "interceptor")["ok"]
    assert not _get(java, forged)["ok"]
    assert _get(java, world.api(world.deep, "a.b.deep.test"))["ok"]


def test_java_refuses_cleartext_to_a_pinned_host(
    java: Java, world: World, server: BundleServer, key_a: Ed25519PrivateKey, tmp_path: Path
) -> None:
    """http:// to a host the policy pins would skip every check: refused. Unpinned hosts pass."""
    from _httpd import HTTPThread, QuietHandler

    class Plain(QuietHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    plain = HTTPThread(Plain)
    try:
        _init(java, world, server.url, tmp_path / "store", key_a)
        refused = _get(java, f"http://api.test:{plain.port}/")
        assert not refused["ok"]
        assert "cleartext" in refused["failure"]
        assert _get(java, f"http://unpinned.test:{plain.port}/")["ok"]
    finally:
        plain.close()


def test_kotlin_readme_example_runs_against_loopback(
    java_classpath: str,
    world: World,
    server: BundleServer,
    key_a: Ed25519PrivateKey,
    tmp_path: Path,
) -> None:
    """The Kotlin example of clients/java/README.md, compiled by kotlinc: it fetches the bundle,
    reaches the pinned server, and is refused by the forged one."""
    server.serve(make(_rules(world, [world.pki.ca.pin, world.pki.backup]), [key_a], 3))
    args = [
        str(tmp_path),
        server.url,
        public(key_a).b64,
        json.dumps(_rules(world, [world.pki.api_old.pin, world.pki.backup])),
        world.api(world.other_api),
        world.api(world.forged_api),
        *world.cas,
    ]
    result = subprocess.run(
        [_tool("java", "TLSPIN_JAVA"), "-cp", java_classpath, "ExampleMainKt", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "refresh": "updated",
        "version": 3,
        "good": 200,
        "forged": "refused",
    }
