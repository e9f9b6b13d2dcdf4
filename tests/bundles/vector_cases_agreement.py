"""Vectors for the places where verifiers on different platforms used to disagree.

Each class here once gave the Python verifier and the Java client different verdicts: the
Public Suffix List (each platform ships its own version, so verification checks pattern syntax
only), ``ports`` in a bundle rule, ``report_uri`` with spaces or control characters, the update
host in another spelling, and Ed25519 keys that are not safe to trust (small order,
non-canonical, off the curve).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from bundles.vector_cases import (
    BASE_POLICY,
    UPDATE_HOST,
    Cases,
    compact,
    envelope,
    pin,
    pub,
    sig,
    signed,
)

_P = 2**255 - 19
_Y8 = 2707385501144840649318225287225658788936804267575313519463743609750303402022


def _key(y: int, sign: int = 0) -> str:
    return base64.b64encode((y | sign << 255).to_bytes(32, "little")).decode()


#: Ed25519 public keys no verifier may trust (docs/bundle-format.md §5.1).
WEAK_KEYS = {
    "identity": _key(1),
    "zero-order-4": _key(0),
    "order-2": _key(_P - 1),
    "order-8": _key(_Y8),
    "order-8-other": _key(_P - _Y8, 1),
    "identity-sign-bit": _key(1, 1),
    "noncanonical-identity": _key(_P + 1),
    "noncanonical-zero": _key(_P),
    "noncanonical-max": _key(2**255 - 1, 1),
    "off-curve": _key(2),
}
#: R = the identity point, S = 0: a signature that verifies under the identity "key" (and,
#: for some messages, under the other small-order points) for any message.
_FORGED = base64.b64encode(b"\x01" + bytes(63)).decode()


def _forged_sig(key: str) -> dict[str, str]:
    raw = base64.b64decode(key)
    return {"keyid": hashlib.sha256(raw).hexdigest(), "sig": _FORGED}


def add_agreement(c: Cases) -> None:
    """Add the cross-platform agreement vectors."""
    _public_suffixes(c)
    _ports(c)
    _report_uri(c)
    _update_host(c)
    _weak_keys(c)


def _with_rule(rule: Any) -> bytes:
    policy = {"rule": [BASE_POLICY["rule"][0], rule]}
    return compact(envelope(signed(42, policy=policy), "A"))


_TWO = [pin(3), pin(4)]


def _public_suffixes(c: Cases) -> None:
    syntax_only = "verifiers check pattern syntax only; the public-suffix guard runs at signing"
    for name, rule in {
        "public-suffix-wildcard": {"hosts": ["*.co.uk"], "pins": _TWO},
        "private-suffix-any-depth": {"hosts": ["**.github.io"], "pins": _TWO},
        "private-suffix-new": {"hosts": ["*.vercel.app"], "pins": _TWO},
        "include-subdomains-suffix": {
            "hosts": ["pages.dev"],
            "pins": _TWO,
            "include_subdomains": True,
        },
    }.items():
        about = f"{rule['hosts'][0]}: {syntax_only}"
        c.add(f"accept-host-{name}", about, _with_rule(rule), "accepted")
    for name, rule in {
        "wildcard-tld": {"hosts": ["*.com"], "pins": _TWO},
        "any-depth-tld": {"hosts": ["**.uk"], "pins": _TWO},
        "include-subdomains-tld": {"hosts": ["dev"], "pins": _TWO, "include_subdomains": True},
    }.items():
        c.add(
            f"policy-host-{name}",
            "a wildcard needs a base with a dot (syntax, no list needed)",
            _with_rule(rule),
            "policy",
        )


def _ports(c: Cases) -> None:
    for name, ports in {"list": [8443], "int": 443, "empty": []}.items():
        c.add(
            f"policy-rule-ports-{name}",
            f"ports {ports!r}: a policy-file member, not part of a bundle rule",
            _with_rule({"hosts": ["a.example.com"], "pins": _TWO, "ports": ports}),
            "policy",
        )


def _report_uri(c: Cases) -> None:
    bad = {
        "space": "https://r.example.com/a b",
        "crlf": "https://r.example.com/\r\nX-Evil: 1",
        "tab": "https://r.example.com/\ta",
        "nul": "https://r.example.com/\x00",
        "del": "https://r.example.com/\x7f",
        "nel": "https://r.example.com/\x85",
        "csi": "https://r.example.com/\x9b31m",
    }
    for name, uri in bad.items():
        c.add(
            f"policy-report-uri-{name}",
            "report_uri with a space or control character (U+0000-U+0020, U+007F-U+009F)",
            _with_rule({"hosts": ["a.example.com"], "pins": _TWO, "report_uri": uri}),
            "policy",
        )
    good = {
        "percent-encoded": "https://r.example.com/a%20b%0D%0A",
        "nbsp": "https://r.example.com/\u00a0",
        "non-ascii": "https://r.example.com/bücher",
    }
    for name, uri in good.items():
        c.add(
            f"accept-report-uri-{name}",
            "the twin: percent-encoded, and non-ASCII text that is no control character",
            _with_rule({"hosts": ["a.example.com"], "pins": _TWO, "report_uri": uri}),
            "accepted",
        )


def _update_host(c: Cases) -> None:
    def only(host: str) -> bytes:
        policy = {"rule": [{"hosts": [host], "pins": _TWO}]}
        return compact(envelope(signed(42, policy=policy), "A"))

    spellings = {
        "upper-case-trailing-dot": ("pins.example.com", "PINS.example.com."),
        "ipv6-brackets": ("::1", "[::1]"),
        "ipv6-uncompressed": ("::1", "0:0:0:0:0:0:0:1"),
        "ipv4-mapped": ("127.0.0.1", "::ffff:127.0.0.1"),
        "ipv4-mapped-hex": ("127.0.0.1", "::ffff:7f00:1"),
        "idn": ("xn--bcher-kva.example", "bücher.example"),
    }
    for name, (rule_host, update_host) in spellings.items():
        c.add(
            f"accept-update-host-{name}",
            f"update host {update_host!r} is {rule_host!r} in canonical form (§8 step 9)",
            only(rule_host),
            "accepted",
            update_host=update_host,
        )
    c.add(
        "unpinned-update-host-other-mapped-address",
        "the twin: ::ffff:127.0.0.2 is not 127.0.0.1",
        only("127.0.0.1"),
        "unpinned-update-host",
        update_host="::ffff:127.0.0.2",
    )


def _weak_keys(c: Cases) -> None:
    for name, weak in WEAK_KEYS.items():
        content = signed(50)
        content["signing_keys"] = {"keys": [weak], "threshold": 1}
        rotation = {"signed": content, "signatures": [sig("A", content), _forged_sig(weak)]}
        c.add(
            f"schema-signing-keys-{name}",
            f"a rotation (signed by A) to the unsafe key {weak}: refused, whatever signs it",
            compact(rotation),
            "schema",
        )
        forged = signed(51)
        c.add(
            f"key-trusted-{name}",
            f"the client is told to trust {weak}: its trust state is refused (reason key)",
            compact({"signed": forged, "signatures": [_forged_sig(weak)]}),
            "key",
            trusted_keys=[weak],
        )
    # What `tlspin bundle sign --next-key <identity>` made possible: a rotation to {A, identity},
    # then a bundle that nobody signed, "signed" by the identity point, carrying it in its chain.
    identity = WEAK_KEYS["identity"]
    first = signed(2)
    first["signing_keys"] = {"keys": [pub("A"), identity], "threshold": 1}
    chain_entry = {"signed": first, "signatures": [sig("A", first)]}
    takeover = signed(3, policy={"rule": [{"hosts": [UPDATE_HOST], "pins": [pin(8), pin(9)]}]})
    forged = {"signed": takeover, "signatures": [_forged_sig(identity)], "chain": [chain_entry]}
    c.add(
        "schema-chain-rotates-to-identity",
        "a forged bundle (R = identity, S = 0) whose chain rotated to {A, identity}",
        compact(forged),
        "schema",
    )
