"""The vectors themselves, by acceptance step (see vector_cases for the helpers)."""

from __future__ import annotations

import base64
import json
from typing import Any

from bundles.vector_cases import (
    BASE_POLICY,
    NOTE,
    ORDER_L,
    UPDATE_HOST,
    Cases,
    compact,
    day,
    envelope,
    escape_all,
    keyid,
    pin,
    pub,
    reordered,
    replace_once,
    sig,
    signed,
)

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def add_all(cases: Cases) -> None:
    """Fill *cases* with every vector."""
    _accepted(cases)
    _encoding_and_json(cases)
    _duplicates_and_numbers(cases)
    _schema(cases)
    _policy(cases)
    _signatures(cases)
    _rotation(cases)
    _state_and_time(cases)
    _canonical(cases)


def _doc(content: dict[str, Any], signers: str = "A", **extra: Any) -> bytes:
    return compact({**envelope(content, signers), **extra})


def _accepted(c: Cases) -> None:
    s42 = signed(42)
    env = envelope(s42, "A")
    c.add("accept-basic", "signed by A, trusted A", c.doc42, "accepted")
    c.add(
        "accept-spec-vector-1", "docs/bundle-format.md vector 1", c.spec["v42-document"], "accepted"
    )
    c.add(
        "accept-pretty-reordered",
        "indented, every object's members reversed: signatures cover the parsed value",
        json.dumps(reordered(env), ensure_ascii=False, indent=2).encode(),
        "accepted",
    )
    c.add(
        "accept-ascii-escaped",
        "non-ASCII written as \\u escapes, the emoji as an escaped surrogate pair",
        json.dumps(env, ensure_ascii=True).encode(),
        "accepted",
    )
    c.add(
        "accept-every-character-escaped",
        "every character of every string and member name as \\uXXXX, ASCII too",
        escape_all(env).encode(),
        "accepted",
    )
    c.add(
        "accept-escaped-solidus",
        "every / written \\/",
        c.doc42.replace(b"/", b"\\/"),
        "accepted",
    )
    c.add(
        "accept-all-whitespace",
        "space, tab, CR and LF between every token",
        json.dumps(env, ensure_ascii=False, indent="\t", separators=(" ,\r\n", " :\t")).encode()
        + b" \r\n\t",
        "accepted",
    )
    c.add("accept-max-version", "version 2^53-1", _doc(signed(2**53 - 1)), "accepted")
    c.add(
        "accept-threshold-2-of-3",
        "trusted A, B, C with threshold 2; signed by C, an untrusted X and A",
        _doc(s42, "CXA"),
        "accepted",
        trusted="ABC",
        threshold=2,
    )
    bad_a = sig("A", signed(41))
    c.add(
        "accept-invalid-then-valid-signature",
        "a bad signature under A's key id before the good one: invalid entries are ignored",
        compact({"signed": s42, "signatures": [bad_a, sig("A", s42)]}),
        "accepted",
    )
    c.add(
        "accept-min-version-below",
        "min_version 41, version 42",
        c.doc42,
        "accepted",
        min_version=41,
    )
    c.add(
        "accept-last-second",
        "one second before expires_at",
        c.doc42,
        "accepted",
        now=day(31, 23, 59, 59),
    )
    c.add(
        "accept-issued-at-skew-edge",
        "issued_at exactly now + clock_skew",
        _doc(signed(42, issued=day(15, 0, 5))),
        "accepted",
    )
    deep_note = "[" * 100 + "{" * 100 + '"\\'
    policy = {
        "rule": [{"hosts": [UPDATE_HOST], "pins": [{"pin": pin(1), "note": deep_note}, pin(2)]}]
    }
    c.add(
        "accept-brackets-in-strings",
        "200 open brackets inside a string do not count towards the nesting limit",
        _doc(signed(42, policy=policy)),
        "accepted",
    )
    c.add(
        "accept-update-host-by-wildcard",
        "the update host is pinned only by a one-label wildcard rule",
        _doc(signed(42, policy={"rule": [{"hosts": ["*.example.com"], "pins": [pin(1), pin(2)]}]})),
        "accepted",
    )
    edges = _edge_policy()
    c.add(
        "accept-policy-edges",
        "wildcards, include_subdomains, IP addresses, report-only, deny, certificate pins, an "
        "expired rule (pins nothing: on_expiry fail-open), null metadata, repeats merged",
        _doc(signed(42, policy=edges)),
        "accepted",
    )
    c.add(
        "accept-policy-edges-on-expiry-enforce",
        "the same with on_expiry enforce: the expired rule still pins",
        _doc(signed(42, policy={"on_expiry": "enforce", **edges})),
        "accepted",
    )


def _edge_policy() -> dict[str, Any]:
    return {
        "rule": [
            {"hosts": "**.example.com", "pins": [pin(1), pin(2), pin(1)]},
            {
                "hosts": [
                    "*.api.example.net",
                    "api.example.net",
                    "api.example.net",
                    "_svc.example.net",
                ],
                "pins": [
                    {"pin": pin(3), "role": None, "note": None, "not_after": None},
                    {"pin": pin(4), "role": "backup", "not_after": "2027-12-31"},
                    {"pin": pin(4), "role": "leaf"},
                ],
                "expires": "2026-06-01",
                "report_uri": "https://reports.example.net/pins",
            },
            {
                "hosts": ["svc.example.org", "xn--bcher-kva.example"],
                "include_subdomains": True,
                "pins": [pin(5), "cert-sha256/" + "0f" * 32],
                "deny": [{"pin": pin(6), "note": "compromised intermediate"}, pin(5)],
                "expires": None,
            },
            {"hosts": ["127.0.0.1", "::1", "2001:db8::1:0:0:1"], "pins": [pin(7), pin(8)]},
            {"hosts": ["old.example.org"], "pins": [pin(9), pin(10)], "expires": "2025-01-14"},
            {"hosts": ["report.example.org"], "pins": [pin(11), pin(12)], "mode": "report"},
            {
                "hosts": ["certonly.example.org"],
                "pins": ["cert-sha256/" + "ab" * 32, "cert-sha256/" + "cd" * 32],
            },
            {"hosts": ["today.example.org"], "pins": [pin(13), pin(14)], "expires": "2025-01-15"},
        ]
    }


def _encoding_and_json(c: Cases) -> None:
    d = c.doc42
    c.add("size-over-cap", "one byte over max_bytes", d, "size", max_bytes=len(d) - 1)
    c.add("size-at-cap", "exactly max_bytes", d, "accepted", max_bytes=len(d))
    c.add(
        "size-before-encoding",
        "over the cap and not UTF-8: size first",
        b"\xff" + d,
        "size",
        max_bytes=len(d),
    )
    c.add("encoding-bom", "a UTF-8 byte-order mark first", b"\xef\xbb\xbf" + d, "encoding")
    c.add(
        "encoding-truncated-sequence",
        "a cut UTF-8 sequence in the note",
        replace_once(d, "✓", b"\xe2\x9c"),
        "encoding",
    )
    c.add(
        "encoding-overlong-solidus",
        "one / as the overlong C0 AF: a loose decoder reads the signed text",
        replace_once(d, "/ [[{", b"\xc0\xaf [[{"),
        "encoding",
    )
    c.add(
        "encoding-cesu8-surrogates",
        "the emoji as two UTF-8-encoded surrogates (CESU-8, Java's modified UTF-8)",
        replace_once(d, "😀", b"\xed\xa0\xbd\xed\xb8\x80"),
        "encoding",
    )
    c.add(
        "encoding-lone-high-surrogate",
        "the emoji as a lone \\ud83d",
        replace_once(d, "😀", "\\ud83d"),
        "encoding",
    )
    c.add(
        "encoding-reversed-surrogates",
        "low then high surrogate escapes",
        replace_once(d, "😀", "\\ude00\\ud83d"),
        "encoding",
    )
    c.add(
        "encoding-lone-surrogate-in-name",
        "a lone surrogate in an unknown member name: encoding, not schema",
        replace_once(d, '{"signed"', '{"x\\udc00":1,"signed"'),
        "encoding",
    )
    c.add("json-trailing-comma", "a comma before the last ]", d[:-2] + b",]}", "json")
    c.add(
        "json-nan",
        "NaN in an unknown member: json before schema",
        replace_once(d, '{"signed"', '{"x":NaN,"signed"'),
        "json",
    )
    c.add(
        "json-leading-zero", "version 042", replace_once(d, '"version":42', '"version":042'), "json"
    )
    c.add("json-truncated", "the last byte missing", d[:-1], "json")
    c.add(
        "json-single-quotes",
        "a single-quoted member name",
        replace_once(d, '"format"', "'format'"),
        "json",
    )
    c.add(
        "json-comment", "a /* comment */", replace_once(d, '{"signed"', '{/* c */"signed"'), "json"
    )
    c.add(
        "json-raw-tab-in-string",
        "the note's tab written raw",
        replace_once(d, "\\t✓", "\t✓"),
        "json",
    )
    c.add(
        "json-invalid-escape", "\\x41 in a string", replace_once(d, "safe №", "safe \\x41"), "json"
    )
    c.add("json-empty", "no bytes at all", b"", "json")
    c.add("json-two-documents", "the document twice", d + d, "json")
    c.add(
        "json-top-level-array", "an array: parses, but is not a bundle", b"[" + d + b"]", "schema"
    )
    c.add(
        "json-depth-65",
        "an unknown member nesting 64 arrays (65 levels): json, not schema",
        replace_once(d, '{"signed"', '{"x":' + "[" * 64 + "]" * 64 + ',"signed"'),
        "json",
    )
    c.add(
        "json-depth-64",
        "the twin: 63 arrays (64 levels) parse, and the unknown member is schema",
        replace_once(d, '{"signed"', '{"x":' + "[" * 63 + "]" * 63 + ',"signed"'),
        "schema",
    )
    c.add(
        "json-depth-before-number",
        "65 levels after a float: the nesting scan runs before parsing",
        replace_once(d, '{"signed"', '{"y":1.5,"x":' + "[" * 64 + "]" * 64 + ',"signed"'),
        "json",
    )
    c.add(
        "json-depth-unbalanced-closers",
        "closers beyond zero do not lower the count below zero",
        replace_once(d, '{"signed"', '{"x":"]]]]",' + '"z":' + "[" * 64 + "]" * 64 + ',"signed"'),
        "json",
    )


def _duplicates_and_numbers(c: Cases) -> None:
    d = c.doc42
    c.add(
        "duplicate-version-last-wins-valid",
        "version 43 then 42: a last-wins parser sees the signed 42",
        replace_once(d, '"version":42', '"version":43,"version":42'),
        "duplicate-key",
    )
    c.add(
        "duplicate-version-first-wins-valid",
        "version 42 then 43: a first-wins parser sees the signed 42",
        replace_once(d, '"version":42', '"version":42,"version":43'),
        "duplicate-key",
    )
    c.add(
        "duplicate-after-unescaping",
        '"vers\\u0069on" is "version"',
        replace_once(d, '"version":42', '"version":42,"vers\\u0069on":42'),
        "duplicate-key",
    )
    c.add(
        "duplicate-non-bmp-name",
        "😀 raw and as an escaped pair, in unknown members: duplicate-key before schema",
        replace_once(d, '{"signed"', '{"😀":1,"\\ud83d\\ude00":1,"signed"'),
        "duplicate-key",
    )
    forged = signed(42, policy={"rule": [{"hosts": [UPDATE_HOST], "pins": [pin(20), pin(21)]}]})
    c.add(
        "duplicate-signed",
        "a forged signed object, then the genuine one",
        replace_once(d, '{"signed":', '{"signed":' + json.dumps(forged) + ',"signed":'),
        "duplicate-key",
    )
    c.add(
        "duplicate-in-pin-object",
        "a pin object with pin twice",
        replace_once(
            d, '{"pin":"' + pin(2) + '"', '{"pin":"' + pin(2) + '","pin":"' + pin(2) + '"'
        ),
        "duplicate-key",
    )
    c.add(
        "duplicate-in-signature",
        "keyid twice in a signature entry",
        replace_once(d, '{"keyid":', '{"keyid":"' + keyid("X") + '","keyid":'),
        "duplicate-key",
    )
    c.add(
        "order-duplicate-counts-at-close",
        "a duplicate then a float in the same object: the float is met first",
        replace_once(d, '{"signed"', '{"a":1,"a":2,"b":1.5,"signed"'),
        "number",
    )
    c.add(
        "order-inner-duplicate-first",
        "a duplicate in a nested object closes before the later float",
        replace_once(d, '{"signed"', '{"a":{"x":1,"x":2},"b":1.5,"signed"'),
        "duplicate-key",
    )
    c.add(
        "order-number-before-syntax",
        "a float, then a syntax error",
        replace_once(d, '{"signed"', '{"b":1.5,,"signed"'),
        "number",
    )
    c.add(
        "number-fraction",
        "version 42.0: a loose parser reads the signed 42",
        replace_once(d, '"version":42', '"version":42.0'),
        "number",
    )
    c.add(
        "number-exponent",
        "version 4.2e1",
        replace_once(d, '"version":42', '"version":4.2e1'),
        "number",
    )
    c.add(
        "number-exponent-integer",
        "version 42E0",
        replace_once(d, '"version":42', '"version":42E0'),
        "number",
    )
    c.add(
        "number-2-pow-53",
        "version 2^53",
        _doc(signed(42)).replace(b'"version":42', b'"version":9007199254740992'),
        "number",
    )
    c.add(
        "number-negative-2-pow-53",
        "-(2^53) in an unknown member: number before schema",
        replace_once(d, '{"signed"', '{"x":-9007199254740992,"signed"'),
        "number",
    )
    c.add("number-huge", "1E400", replace_once(d, '{"signed"', '{"x":1E400,"signed"'), "number")
    c.add(
        "number-twenty-digits",
        "00000000000000000042 is not JSON (leading zeros)",
        replace_once(d, '"version":42', '"version":00000000000000000042'),
        "json",
    )
    c.add(
        "number-minus-zero-version",
        "version -0 is 0: below 1",
        replace_once(d, '"version":42', '"version":-0'),
        "schema",
    )
    rot = envelope(signed(43, signing_keys=(("B",), 1)), "AB")
    c.add(
        "number-threshold-float",
        "signing_keys threshold 1.0",
        replace_once(compact(rot), '"threshold":1', '"threshold":1.0'),
        "number",
    )


def _schema(c: Cases) -> None:
    d = c.doc42
    s42 = signed(42)

    def changed(**kv: Any) -> bytes:
        content = {**s42, **kv}
        return _doc({k: v for k, v in content.items() if v is not None})

    c.add(
        "schema-unknown-top-level",
        'a top-level "comment"',
        replace_once(d, '{"signed"', '{"comment":"x","signed"'),
        "schema",
    )
    c.add(
        "schema-unknown-signed-member",
        'signed has "comment" (signed over)',
        changed(comment="x"),
        "schema",
    )
    c.add("schema-missing-signatures", "no signatures member", compact({"signed": s42}), "schema")
    c.add("schema-version-zero", "version 0", changed(version=0), "schema")
    c.add("schema-version-string", 'version "42"', changed(version="42"), "schema")
    c.add("schema-version-true", "version true", changed(version=True), "schema")
    c.add(
        "schema-version-null",
        "version null",
        replace_once(d, '"version":42', '"version":null'),
        "schema",
    )
    c.add(
        "schema-time-offset",
        "issued_at with +00:00",
        changed(issued_at="2025-01-01T00:00:00+00:00"),
        "schema",
    )
    c.add(
        "schema-time-lower-case",
        "expires_at with t and z",
        changed(expires_at="2025-02-01t00:00:00z"),
        "schema",
    )
    c.add(
        "schema-time-fraction",
        "issued_at with .0",
        changed(issued_at="2025-01-01T00:00:00.0Z"),
        "schema",
    )
    c.add(
        "schema-time-february-30",
        "expires_at on February 30",
        changed(expires_at="2025-02-30T00:00:00Z"),
        "schema",
    )
    c.add(
        "schema-time-hour-24",
        "expires_at at 24:00:00",
        changed(expires_at="2025-01-31T24:00:00Z"),
        "schema",
    )
    c.add(
        "schema-time-trailing-newline",
        "issued_at followed by a newline",
        changed(issued_at=day(1) + "\n"),
        "schema",
    )
    c.add(
        "schema-time-arabic-indic-digits",
        "the year in Arabic-Indic digits (a Unicode \\d matches them)",
        changed(issued_at="\u0662\u0660\u0662\u0665" + day(1)[4:]),
        "schema",
    )
    c.add(
        "schema-expires-equals-issued",
        "expires_at == issued_at",
        changed(expires_at=day(1)),
        "schema",
    )
    c.add(
        "schema-signatures-object",
        "signatures is an object",
        compact({"signed": s42, "signatures": sig("A", s42)}),
        "schema",
    )
    c.add(
        "schema-33-signatures",
        "33 signature entries (at most 32)",
        compact({"signed": s42, "signatures": [sig("A", s42)] * 33}),
        "schema",
    )
    good = sig("A", s42)
    c.add(
        "schema-keyid-upper-case",
        "an upper-case key id",
        compact({"signed": s42, "signatures": [{**good, "keyid": good["keyid"].upper()}]}),
        "schema",
    )
    c.add(
        "schema-keyid-short",
        "a 63-digit key id",
        compact({"signed": s42, "signatures": [{**good, "keyid": good["keyid"][:63]}]}),
        "schema",
    )
    c.add(
        "schema-keyid-trailing-newline",
        "a key id followed by a newline, next to a valid signature",
        compact({"signed": s42, "signatures": [{**good, "keyid": good["keyid"] + "\n"}, good]}),
        "schema",
    )
    raw = base64.b64decode(good["sig"])
    loose = good["sig"][:-3] + _B64[_B64.index(good["sig"][-3]) | 1] + "=="
    c.add(
        "schema-sig-padding-bits",
        "signature base64 with non-zero padding bits",
        compact({"signed": s42, "signatures": [{**good, "sig": loose}]}),
        "schema",
    )
    c.add(
        "schema-sig-unpadded",
        "signature base64 without padding",
        compact({"signed": s42, "signatures": [{**good, "sig": good["sig"].rstrip("=")}]}),
        "schema",
    )
    c.add(
        "schema-sig-url-safe",
        "signature in the URL-safe alphabet",
        compact(
            {
                "signed": s42,
                "signatures": [{**good, "sig": good["sig"].replace("+", "-").replace("/", "_")}],
            }
        ),
        "schema" if ("+" in good["sig"] or "/" in good["sig"]) else "accepted",
    )
    c.add(
        "schema-sig-63-bytes",
        "a 63-byte signature",
        compact(
            {"signed": s42, "signatures": [{**good, "sig": base64.b64encode(raw[:63]).decode()}]}
        ),
        "schema",
    )
    c.add(
        "schema-sig-line-break",
        "a line break inside the base64",
        compact(
            {
                "signed": s42,
                "signatures": [{**good, "sig": good["sig"][:40] + "\n" + good["sig"][40:]}],
            }
        ),
        "schema",
    )
    c.add(
        "schema-signature-extra-member",
        "a signature entry with a third member",
        compact({"signed": s42, "signatures": [{**good, "alg": "ed25519"}]}),
        "schema",
    )
    for name, keys, about in (
        (
            "schema-signing-keys-repeated",
            {"keys": [pub("B"), pub("B")], "threshold": 1},
            "the same key twice",
        ),
        ("schema-signing-keys-threshold-0", {"keys": [pub("B")], "threshold": 0}, "threshold 0"),
        (
            "schema-signing-keys-threshold-over",
            {"keys": [pub("B")], "threshold": 2},
            "threshold above the key count",
        ),
        ("schema-signing-keys-empty", {"keys": [], "threshold": 1}, "no keys"),
        (
            "schema-signing-keys-17",
            {"keys": [pub("B")] * 17, "threshold": 1},
            "17 keys (at most 16)",
        ),
        (
            "schema-signing-keys-short-key",
            {"keys": [base64.b64encode(bytes(31)).decode()], "threshold": 1},
            "a 31-byte key",
        ),
        (
            "schema-signing-keys-prefixed",
            {"keys": ["ed25519:" + pub("B")], "threshold": 1},
            "the CLI's ed25519: prefix",
        ),
        (
            "schema-signing-keys-extra",
            {"keys": [pub("B")], "threshold": 1, "note": "x"},
            "an extra member",
        ),
    ):
        c.add(name, "signing_keys with " + about, changed(signing_keys=keys), "schema")
    c.add(
        "format-version-2", 'format "tlspin-bundle/2"', changed(format="tlspin-bundle/2"), "format"
    )
    c.add("format-number", "format 1", changed(format=1), "format")
    c.add(
        "format-before-schema",
        "a wrong format and an unknown member: format first",
        changed(format="x", comment="x"),
        "format",
    )
    c.add("format-missing", "no format member: schema", changed(format=None), "schema")
    rot = envelope(signed(43, signing_keys=(("B",), 1)), "AB")
    plain41 = envelope(signed(41), "A")
    after = signed(44)
    c.add(
        "chain-entry-without-rotation",
        "a chain entry that hands no keys over",
        _doc(after, "B", chain=[plain41]),
        "chain",
    )
    c.add(
        "chain-not-increasing",
        "the chain's versions go down",
        _doc(after, "B", chain=[rot, envelope(signed(42, signing_keys=(("B",), 1)), "AB")]),
        "chain",
    )
    c.add(
        "chain-not-below-bundle",
        "a chain entry as new as the bundle",
        _doc(signed(43), "B", chain=[rot]),
        "chain",
    )
    c.add("chain-object", "chain is an object", _doc(after, "B", chain=rot), "chain")
    c.add(
        "chain-33-entries",
        "33 chain entries (at most 32)",
        _doc(after, "B", chain=[rot] * 33),
        "chain",
    )
    c.add(
        "chain-nested-chain",
        "a chain entry with its own chain",
        _doc(after, "B", chain=[{**rot, "chain": []}]),
        "schema",
    )
    c.add(
        "chain-entry-schema-first",
        "a bad chain entry and a bad bundle: the chain entry is read first",
        _doc(
            {**after, "version": "x"},
            "B",
            chain=[{**rot, "signed": {**rot["signed"], "format": "y"}}],
        ),
        "format",
    )


def _policy(c: Cases) -> None:
    def with_rule(rule: dict[str, Any], **top: Any) -> bytes:
        policy = {**top, "rule": [BASE_POLICY["rule"][0], rule]}
        return _doc(signed(42, policy=policy))

    two = [pin(3), pin(4)]
    c.add(
        "policy-array",
        "policy is an array: policy, in step 1",
        _doc(signed(42, policy=[])),
        "policy",
    )
    c.add(
        "policy-unknown-member",
        "the policy has a version member",
        _doc(signed(42, policy={**BASE_POLICY, "version": 1})),
        "policy",
    )
    c.add(
        "policy-on-expiry-unknown",
        'on_expiry "warn"',
        with_rule({"hosts": ["a.example.com"], "pins": two}, on_expiry="warn"),
        "policy",
    )
    hosts = {
        "upper-case": "API.example.com",
        "trailing-dot": "api.example.com.",
        "unicode": "bücher.example",
        "ipv6-brackets": "[::1]",
        "ipv6-uncompressed": "0:0:0:0:0:0:0:1",
        "ipv6-upper-case": "2001:DB8::1",
        "ipv6-leading-zero": "2001:db8::01",
        "ipv6-single-zero-compressed": "1::1:1:1:1:1:1",
        "ipv6-shorter-run-compressed": "1::1:0:0:0:1",
        "ipv6-embedded-ipv4": "::1.2.3.4",
        "ipv4-mapped": "::ffff:7f00:1",
        "ipv6-zone": "fe80::1%eth0",
        "ipv4-leading-zero": "127.0.0.01",
        "numeric-last-label": "a.example.123",
        "hex-last-label": "a.example.0x1f",
        "single-label-wildcard": "*.localhost",
        "wildcard-ip": "*.127.0.0.1",
        "inner-wildcard": "a.*.example.com",
        "triple-star": "***.example.com",
        "empty-label": "a..example.com",
        "leading-hyphen": "-a.example.com",
        "label-64": "a" * 64 + ".example.com",
        "space": " api.example.com",
        "empty": "",
        "too-long": ".".join(["a" * 63] * 4),
    }
    for name, host in hosts.items():
        c.add(
            f"policy-host-{name}",
            f"host pattern {host!r}",
            with_rule({"hosts": [host], "pins": two}),
            "policy",
        )
    c.add(
        "policy-host-253",
        "the twin: a 253-character name is fine",
        with_rule({"hosts": [".".join(["a" * 63] * 3 + ["b" * 61])], "pins": two}),
        "accepted",
    )
    c.add(
        "policy-include-subdomains-ip",
        "include_subdomains on an IP",
        with_rule({"hosts": ["127.0.0.1"], "pins": two, "include_subdomains": True}),
        "policy",
    )
    digest = pin(3)[len("sha256/") :]
    pins = {
        "hpkp-form": f'pin-sha256="{digest}"',
        "bare-base64": digest,
        "unpadded": "sha256/" + digest.rstrip("="),
        "curl-form": "sha256//" + digest,
        "padding-bits": "sha256/" + digest[:-2] + _B64[_B64.index(digest[-2]) | 1] + "=",
        "sha1": "sha1/" + base64.b64encode(bytes(20)).decode(),
        "cert-upper-hex": "cert-sha256/" + "AB" * 32,
        "cert-colons": "cert-sha256/" + ":".join(["ab"] * 32),
        "short-digest": "sha256/" + base64.b64encode(bytes(31)).decode(),
        "number": 5,
    }
    for name, value in pins.items():
        c.add(
            f"policy-pin-{name}",
            f"pin {value!r}",
            with_rule({"hosts": ["a.example.com"], "pins": [value, pin(4)]}),
            "policy",
        )
    rules = {
        "unknown-member": {"hosts": ["a.example.com"], "pins": two, "enabled": True},
        "mode-block": {"hosts": ["a.example.com"], "pins": two, "mode": "block"},
        "mode-null": {"hosts": ["a.example.com"], "pins": two, "mode": None},
        "role-owner": {
            "hosts": ["a.example.com"],
            "pins": [{"pin": pin(3), "role": "owner"}, pin(4)],
        },
        "pin-object-without-pin": {"hosts": ["a.example.com"], "pins": [{"role": "leaf"}, pin(4)]},
        "pin-object-extra": {"hosts": ["a.example.com"], "pins": [{"pin": pin(3), "x": 1}, pin(4)]},
        "note-number": {"hosts": ["a.example.com"], "pins": [{"pin": pin(3), "note": 1}, pin(4)]},
        "report-uri-ftp": {
            "hosts": ["a.example.com"],
            "pins": two,
            "report_uri": "ftp://x.example",
        },
        "report-uri-null": {"hosts": ["a.example.com"], "pins": two, "report_uri": None},
        "no-pins": {"hosts": ["a.example.com"], "pins": []},
        "pins-string": {"hosts": ["a.example.com"], "pins": pin(3)},
        "no-hosts": {"hosts": [], "pins": two},
        "hosts-number": {"hosts": [1], "pins": two},
        "missing-hosts": {"pins": two},
        "expires-february-30": {"hosts": ["a.example.com"], "pins": two, "expires": "2026-02-30"},
        "expires-basic-format": {"hosts": ["a.example.com"], "pins": two, "expires": "20260601"},
        "expires-number": {"hosts": ["a.example.com"], "pins": two, "expires": 2026},
        "not-after-week-date": {
            "hosts": ["a.example.com"],
            "pins": [{"pin": pin(3), "not_after": "2026-W01-1"}, pin(4)],
        },
        "include-subdomains-string": {
            "hosts": ["a.example.com"],
            "pins": two,
            "include_subdomains": "yes",
        },
        "deny-string": {"hosts": ["a.example.com"], "pins": two, "deny": pin(5)},
        "rule-not-object": "a.example.com",
    }
    for name, rule in rules.items():
        c.add(f"policy-rule-{name}", f"rule {name.replace('-', ' ')}", with_rule(rule), "policy")  # type: ignore[arg-type]
    c.add(
        "policy-rule-array-not-list",
        "rule is an object",
        _doc(signed(42, policy={"rule": BASE_POLICY["rule"][0]})),
        "policy",
    )
    c.add(
        "unpinned-update-host-missing",
        "no rule for the update host",
        _doc(
            signed(42, policy={"rule": [{"hosts": ["api.example.com"], "pins": [pin(3), pin(4)]}]})
        ),
        "unpinned-update-host",
    )
    c.add(
        "unpinned-update-host-report-only",
        "the update host's only rule is report-only",
        _doc(
            signed(
                42,
                policy={
                    "rule": [{"hosts": [UPDATE_HOST], "pins": [pin(1), pin(2)], "mode": "report"}]
                },
            )
        ),
        "unpinned-update-host",
    )
    c.add(
        "unpinned-update-host-deeper-wildcard",
        "*.pins.example.com does not cover pins.example.com",
        _doc(
            signed(
                42, policy={"rule": [{"hosts": ["*.pins.example.com"], "pins": [pin(1), pin(2)]}]}
            )
        ),
        "unpinned-update-host",
    )
    c.add(
        "unpinned-update-host-no-rules",
        "an empty policy",
        _doc(signed(42, policy={})),
        "unpinned-update-host",
    )
    c.add(
        "update-host-expired-rule-counts",
        "the update host's rule has expired: it still pins the update channel",
        _doc(
            signed(
                42,
                policy={
                    "rule": [
                        {"hosts": [UPDATE_HOST], "pins": [pin(1), pin(2)], "expires": "2025-01-02"}
                    ]
                },
            )
        ),
        "accepted",
    )


def _signatures(c: Cases) -> None:
    s42 = signed(42)
    good = sig("A", s42)
    c.add("threshold-untrusted-only", "signed by X only", _doc(s42, "X"), "threshold")
    c.add(
        "threshold-no-signatures",
        "an empty signatures array",
        compact({"signed": s42, "signatures": []}),
        "threshold",
    )
    c.add(
        "threshold-tampered-version",
        "signed as 42, served as 43",
        replace_once(c.doc42, '"version":42', '"version":43'),
        "threshold",
    )
    c.add(
        "threshold-tampered-note",
        "one character of the note changed",
        replace_once(c.doc42, "safe № 3", "safe № 4"),
        "threshold",
    )
    c.add(
        "threshold-tampered-member-order-irrelevant",
        "the twin of the above: reordering alone keeps it valid",
        compact(reordered(envelope(s42, "A"))),
        "accepted",
    )
    c.add(
        "threshold-same-key-twice",
        "threshold 2 of A, B, C met only by counting A's signature twice",
        compact({"signed": s42, "signatures": [good, good]}),
        "threshold",
        trusted="ABC",
        threshold=2,
    )
    c.add(
        "threshold-mislabelled-keyid",
        "A's signature also filed under B's key id",
        compact({"signed": s42, "signatures": [good, {**good, "keyid": keyid("B")}]}),
        "threshold",
        trusted="AB",
        threshold=2,
    )
    c.add(
        "threshold-trusted-keyid-untrusted-signer",
        "X's signature under A's key id",
        compact({"signed": s42, "signatures": [{**sig("X", s42), "keyid": keyid("A")}]}),
        "threshold",
    )
    raw = base64.b64decode(good["sig"])
    s = int.from_bytes(raw[32:], "little") + ORDER_L
    malleable = raw[:32] + s.to_bytes(32, "little")
    c.add(
        "threshold-non-canonical-s",
        "A's signature with S + L (the same scalar, non-canonical): RFC 8032 refuses it",
        compact(
            {"signed": s42, "signatures": [{**good, "sig": base64.b64encode(malleable).decode()}]}
        ),
        "threshold",
    )
    pretty_bytes = json.dumps(s42, indent=2).encode()
    raw_sig = base64.b64encode(_sign_bytes("A", pretty_bytes)).decode()
    c.add(
        "threshold-signed-document-bytes",
        "the signature covers the served text of signed, not its canonical form",
        b'{"signed":'
        + pretty_bytes
        + b',"signatures":[{"keyid":"'
        + keyid("A").encode()
        + b'","sig":"'
        + raw_sig.encode()
        + b'"}]}',
        "threshold",
    )
    c.add(
        "threshold-before-expired",
        "bad signature and expired: threshold first",
        _doc(s42, "X"),
        "threshold",
        now=day(40),
    )
    c.add(
        "threshold-before-policy",
        "bad signature and an invalid policy: threshold first",
        _doc(signed(42, policy={"rule": [{"hosts": ["*.com"], "pins": [pin(1)]}]}), "X"),
        "threshold",
    )


def _sign_bytes(name: str, data: bytes) -> bytes:
    from bundles.vector_cases import private

    return private(name).sign(data)


def _rotation(c: Cases) -> None:
    c.add(
        "accept-spec-vector-2-rotation",
        "docs/bundle-format.md vector 2: A hands over to B",
        c.spec["v43-document"],
        "accepted",
    )
    c.add(
        "accept-spec-vector-3-catch-up",
        "docs/bundle-format.md vector 3, through its chain",
        c.spec["v44-document"],
        "accepted",
        now=day(25),
    )
    v44 = json.loads(c.spec["v44-document"])
    c.add(
        "threshold-spec-vector-3-without-chain",
        "vector 3 without its chain",
        compact({k: v for k, v in v44.items() if k != "chain"}),
        "threshold",
        now=day(25),
    )
    c.add(
        "accept-chain-skips-known-entry",
        "a client that holds vector 2 skips it in vector 3's chain",
        c.spec["v44-document"],
        "accepted",
        stored=c.spec["v43-document"],
        now=day(25),
    )
    v43 = json.loads(c.spec["v43-document"])
    only_a = {**v43, "signatures": [s for s in v43["signatures"] if s["keyid"] == keyid("A")]}
    c.add("rotation-new-key-missing", "vector 2 without B's signature", compact(only_a), "rotation")
    r2 = envelope(signed(2, signing_keys=(("B",), 1)), "AB")
    r3 = envelope(signed(3, signing_keys=(("C", "D"), 2)), "BCD")
    c.add(
        "accept-two-rotations",
        "A -> B -> C+D (threshold 2) through a two-entry chain; signed by C and D",
        _doc(signed(4), "CD", chain=[r2, r3]),
        "accepted",
    )
    c.add(
        "threshold-two-rotations-one-signer",
        "the same, signed by C alone: the threshold is 2 now",
        _doc(signed(4), "C", chain=[r2, r3]),
        "threshold",
    )
    c.add(
        "threshold-old-key-after-chain",
        "signed by A after the chain rotated to B",
        _doc(signed(4), "A", chain=[r2]),
        "threshold",
    )
    bad_r2 = envelope(signed(2, signing_keys=(("B",), 1)), "XB")
    c.add(
        "threshold-chain-entry-untrusted",
        "the chain entry is signed by X and B, not A",
        _doc(signed(4), "B", chain=[bad_r2]),
        "threshold",
    )
    lazy_r2 = envelope(signed(2, signing_keys=(("B",), 1)), "A")
    c.add(
        "rotation-chain-entry-new-keys-silent",
        "the chain entry's new key did not sign it",
        _doc(signed(4), "B", chain=[lazy_r2]),
        "rotation",
    )
    c.add(
        "accept-rotation-threshold-2",
        "trusted A, B (threshold 2) hand over to C, signed by A, B and C",
        _doc(signed(42, signing_keys=(("C",), 1)), "ABC"),
        "accepted",
        trusted="AB",
        threshold=2,
    )
    c.add(
        "rotation-partial-new-set",
        "a rotation to B, C (threshold 2) signed by A and B only",
        _doc(signed(42, signing_keys=(("B", "C"), 2)), "AB"),
        "rotation",
    )
    c.add(
        "threshold-rotation-by-new-keys-only",
        "a rotation signed only by the keys it introduces",
        _doc(signed(42, signing_keys=(("B",), 1)), "B"),
        "threshold",
    )
    stored = _doc(signed(42, signing_keys=(("B",), 1)), "AB")
    c.add(
        "threshold-stored-rotation-old-key",
        "the client holds a rotation to B; a bundle signed by A is refused",
        _doc(signed(43), "A"),
        "threshold",
        stored=stored,
    )
    c.add(
        "accept-stored-rotation-new-key",
        "the twin: signed by B it is accepted",
        _doc(signed(43), "B"),
        "accepted",
        stored=stored,
    )


def _state_and_time(c: Cases) -> None:
    d = c.doc42
    s43 = _doc(signed(43))
    other42 = _doc(
        signed(42, policy={"rule": [{"hosts": [UPDATE_HOST], "pins": [pin(1), pin(30)]}]})
    )
    c.add("unchanged-same-bytes", "the accepted bundle served again", d, "unchanged", stored=d)
    c.add(
        "unchanged-other-layout",
        "the accepted bundle, re-formatted and with an extra signature",
        json.dumps(
            {"signatures": [sig("X", signed(42)), sig("A", signed(42))], "signed": signed(42)},
            indent=1,
        ).encode(),
        "unchanged",
        stored=d,
    )
    c.add(
        "unchanged-after-expiry",
        "the accepted bundle served again after it expired",
        d,
        "unchanged",
        stored=d,
        now=day(40),
    )
    c.add("rollback-older-version", "the client holds 43; 42 is served", d, "rollback", stored=s43)
    c.add(
        "rollback-before-signatures",
        "older and badly signed: rollback, checked first",
        _doc(signed(42), "X"),
        "rollback",
        stored=s43,
    )
    c.add("rollback-min-version", "min_version 42, version 42", d, "rollback", min_version=42)
    c.add("equivocation", "the client holds another 42", d, "equivocation", stored=other42)
    c.add(
        "equivocation-before-signatures",
        "another 42, badly signed: equivocation first",
        _doc(signed(42), "X"),
        "equivocation",
        stored=other42,
    )
    c.add(
        "accept-newer-than-stored", "the client holds 42; 43 is served", s43, "accepted", stored=d
    )
    c.add("expired-at-expires-at", "now == expires_at", d, "expired", now=day(32))
    c.add("expired-long-ago", "now a year later", d, "expired", now=day(400))
    c.add(
        "expired-before-future",
        "expired and issued in the future cannot both hold; expired first",
        _doc(signed(42, issued=day(20), expires=day(21))),
        "expired",
        now=day(22),
    )
    c.add(
        "future-issued-tomorrow",
        "issued_at a day ahead",
        _doc(signed(42, issued=day(16))),
        "future",
    )
    c.add(
        "future-beyond-skew",
        "issued_at now + 301 s",
        _doc(signed(42, issued=day(15, 0, 5, 1))),
        "future",
    )
    c.add(
        "future-smaller-skew",
        "issued_at now + 5 min with a 60 s skew",
        _doc(signed(42, issued=day(15, 0, 5))),
        "future",
        clock_skew=60,
    )
    c.add(
        "policy-after-expiry-check",
        "expired with an invalid policy: expired first",
        _doc(signed(42, policy={"rule": [{"hosts": ["*.com"], "pins": [pin(1), pin(2)]}]})),
        "expired",
        now=day(40),
    )
    assert NOTE in json.loads(d)["signed"]["policy"]["rule"][0]["pins"][1]["note"]
    assert pub("A")


def _canonical(c: Cases) -> None:
    items = {
        "utf16-member-order": (
            "RFC 8785 §3.2.3: names sort by UTF-16 code units (the emoji before U+FB33)",
            '{"\\u20ac":1,"\\r":2,"\\ufb33":3,"1":4,"\\ud83d\\ude00":5,"\\u0080":6,"\\u00f6":7,"":8}',
        ),
        "string-escapes": (
            "short escapes, lower-case \\u00xx for other controls, everything else literal",
            '["\\u20ac$\\u000F\\nA\'B\\"\\\\\\\\\\"\\/", '
            '"\\u2028\\u2029\\u007f\\u0000\\u001f\\b\\f\\r\\t", "é\\u00e9"]',
        ),
        "integers": (
            "integers in shortest form; -0 is 0",
            "[0, -0, 1, -1, 9007199254740991, -9007199254740991]",
        ),
        "literals-and-nesting": (
            "whitespace dropped, order of arrays kept",
            ' { "b" : [ true , false , null , { } , [ ] ] , "a" : { "z" : 1 , "y" : [ ] } } ',
        ),
        "non-bmp": (
            "a non-BMP character raw and escaped gives the same UTF-8",
            '["😀", "\\ud83d\\ude00", "\\uD83D\\uDE00"]',
        ),
        "refuse-float": ("1.5 is refused", "[1.5]"),
        "refuse-exponent": ("1e2 is refused", "[1e2]"),
        "refuse-2-pow-53": ("2^53 is refused", "[9007199254740992]"),
        "refuse-nan": ("NaN is not JSON", "[NaN]"),
        "refuse-duplicate": ("a duplicate after unescaping", '{"a":1,"\\u0061":1}'),
        "refuse-lone-surrogate": ("a lone surrogate", '["\\ud800"]'),
    }
    for name, (about, text) in items.items():
        c.add_canonical(name, about, text.encode("utf-8"))
