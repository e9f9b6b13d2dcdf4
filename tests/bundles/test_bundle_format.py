"""Canonical JSON (RFC 8785), strict JSON reading and the bundle schema."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tlspin.bundles import BundleError, canonical_json, parse_document
from tlspin.bundles.format import canonical_json_reference, parse_json, parse_time

from .conftest import make, seed_key


def test_jcs_sorts_keys_by_utf16_code_units() -> None:
    """Property names sort by UTF-16 code units, as in RFC 8785 §3.2.3 (emoji before U+FB33)."""
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    order = [v for _, v in json.loads(canonical_json(value), object_pairs_hook=list)]
    assert order == [
        "Carriage Return",
        "One",
        "Control",
        "Latin Small Letter O With Diaeresis",
        "Euro Sign",
        "Emoji: Grinning Face",
        "Hebrew Letter Dalet With Dagesh",
    ]
    # Code-point order would put U+FB33 before U+1F600; UTF-16 order must not.
    assert sorted(value) != sorted(value, key=lambda k: k.encode("utf-16-be"))


def test_jcs_string_escaping_matches_rfc_example() -> None:
    """Escapes follow ECMAScript: short forms, lower-case \\u00xx for controls, UTF-8 otherwise."""
    text = '\u20ac$\u000f\nA\'B"\\\\"/'
    assert canonical_json(text) == '"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"'.encode()
    assert canonical_json("\u2028\u007f") == '"\u2028\u007f"'.encode()


def test_jcs_whole_object() -> None:
    """No whitespace, nested objects sorted, arrays kept in order, integers in plain decimal."""
    value = {"b": [3, {"z": None, "a": True}], "a": -9007199254740991, "c": False}
    assert canonical_json(value) == b'{"a":-9007199254740991,"b":[3,{"a":true,"z":null}],"c":false}'


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (1.5, "number"),
        (2**53, "number"),
        ("\ud800", "encoding"),
        ({1: 2}, "schema"),
        (b"x", "schema"),
    ],
)
def test_jcs_refuses_what_it_cannot_represent(value: object, reason: str) -> None:
    """Floats, unsafe integers, lone surrogates and non-JSON types are refused, not guessed."""
    with pytest.raises(BundleError) as info:
        canonical_json(value)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"a": 1, "a": 2}', "duplicate-key"),
        (b'{"a": {"b": 1, "b": 1}}', "duplicate-key"),
        (b'{"a": 1, "\\u0061": 2}', "duplicate-key"),  # the same name once unescaped
        (b'{"\\ud83d\\ude00": 1, "\xf0\x9f\x98\x80": 2}', "duplicate-key"),  # pair vs UTF-8
        (b'{"a": "\\udc00"}', "encoding"),  # a lone low surrogate
        (b'{"a": 1' + b"0" * 5000 + b"}", "number"),  # refused before int() ever sees it
        (b'{"a": -0.0}', "number"),
        (b'{"a": 1.0}', "number"),
        (b'{"a": 1e3}', "number"),
        (b'{"a": 9007199254740992}', "number"),
        (b'{"a": NaN}', "json"),
        (b'{"a": 1', "json"),
        (b"\xef\xbb\xbf{}", "encoding"),
        (b'{"a": "\xff"}', "encoding"),
        (b"[" * 100_000, "json"),
        (b"{}" + b" " * 100, "size"),
    ],
)
def test_strict_json_refuses(data: bytes, reason: str) -> None:
    """Duplicates, floats, huge numbers, NaN, truncation, BOM, bad UTF-8, deep nesting, size."""
    with pytest.raises(BundleError) as info:
        parse_json(data, max_bytes=64 if reason == "size" else 1 << 20)
    assert info.value.reason == reason


def test_strict_json_accepts_plain_json() -> None:
    """The failure twin: ordinary JSON with integers and Unicode parses."""
    assert parse_json('{"a": [1, -2, "é", true, null]}'.encode()) == {"a": [1, -2, "é", True, None]}


def test_times_are_strict_utc() -> None:
    """Only YYYY-MM-DDTHH:MM:SSZ is read; offsets, fractions and impossible dates are refused."""
    assert parse_time("2030-01-31T12:00:00Z", "t") == dt.datetime(2030, 1, 31, 12, tzinfo=dt.UTC)
    for bad in (
        "2030-01-31T12:00:00+00:00",
        "2030-01-31T12:00:00.5Z",
        "2030-02-30T00:00:00Z",
        5,
        "2030-01-31T12:00:00Z\n",  # $ would match before a final newline
        "\u0662\u0660\u0663\u0660-01-31T12:00:00Z",  # \d and int() take Arabic-Indic digits
    ):
        with pytest.raises(BundleError):
            parse_time(bad, "t")


def _document(**signed_changes: object) -> dict[str, Any]:
    data = make({"rule": []}, [seed_key(1)], 3).to_data()
    signed = dict(data["signed"])
    for key, value in signed_changes.items():
        if value is None:
            signed.pop(key)
        else:
            signed[key] = value
    data["signed"] = signed
    return data


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"format": "tlspin-bundle/2"}, "format"),
        ({"version": "3"}, "schema"),
        ({"version": 0}, "schema"),
        ({"version": True}, "schema"),
        ({"expires_at": None}, "schema"),
        ({"extra": 1}, "schema"),
        ({"expires_at": "2000-01-01T00:00:00Z"}, "schema"),
        ({"policy": []}, "policy"),
        ({"signing_keys": {"keys": [], "threshold": 1}}, "schema"),
        ({"signing_keys": {"keys": ["AAAA"], "threshold": 1}}, "schema"),
    ],
)
def test_schema_refuses(changes: dict[str, object], reason: str) -> None:
    """Wrong format tag, types, missing or unknown fields, bad key sets are refused by reason."""
    with pytest.raises(BundleError) as info:
        parse_document(_document(**changes))
    assert info.value.reason == reason


def test_schema_accepts_signed_document() -> None:
    """The failure twin: an unmodified document follows the schema."""
    document = parse_document(_document())
    assert document.bundle.version == 3


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        ({"keyid": "AB" * 32, "sig": "A" * 86 + "=="}, "schema"),
        ({"keyid": "ab" * 32, "sig": "A" * 86}, "schema"),
        ({"keyid": "ab" * 32, "sig": "A" * 86 + "==", "x": 1}, "schema"),
        ({"keyid": "ab" * 32, "sig": "-" * 86 + "=="}, "schema"),
        ({"keyid": "ab" * 32 + "\n", "sig": "A" * 86 + "=="}, "schema"),
    ],
)
def test_signature_entries_are_strict(signature: dict[str, str], reason: str) -> None:
    """Key ids are lower-case hex; signatures are canonical padded base64 of 64 bytes."""
    data = _document()
    data["signatures"] = [signature]
    with pytest.raises(BundleError) as info:
        parse_document(data)
    assert info.value.reason == reason


def test_document_round_trips_through_dumps() -> None:
    """dumps() output parses back to the same canonical signed bytes."""
    document = make({"rule": []}, [seed_key(1)], 9)
    again = parse_document(document.dumps())
    assert again.bundle.canonical == document.bundle.canonical
    assert again.bundle.signatures == document.bundle.signatures


def test_signed_policy_leaves_out_the_tools_ports() -> None:
    """A rule's ports (where tlspin's tools connect) stay out of the bundle, whose policy
    schema has no such key; the pins, hosts and expiry are all there."""
    from tlspin.policy import PinPolicy, PinRule

    pins = ["sha256/" + "A" * 43 + "=", "sha256/" + "B" * 42 + "A="]
    with_ports = PinPolicy([PinRule(["api.test"], pins, expires="2030-01-01", ports=[8443])])
    document = make(with_ports, [seed_key(1)], 3)
    assert "ports" not in document.bundle.policy_data["rule"][0]
    assert document.bundle.load_policy() == PinPolicy(
        [PinRule(["api.test"], pins, expires="2030-01-01")]
    )


_INTS = st.integers(min_value=-(2**53 - 1), max_value=2**53 - 1)
_TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=8)
_KEYS = st.one_of(_TEXT, st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=8))
_VALUES = st.recursive(
    st.none() | st.booleans() | _INTS | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=16,
)


@settings(max_examples=150, deadline=None)
@given(_VALUES)
def test_fast_canonical_path_equals_reference_emitter(value: object) -> None:
    """The json.dumps fast path and the plain RFC 8785 emitter give identical bytes."""
    assert canonical_json(value) == canonical_json_reference(value)


@settings(max_examples=150, deadline=None)
@given(_VALUES)
def test_canonical_json_matches_independent_rfc8785_implementation(value: object) -> None:
    """Differential check against the rfc8785 package (Trail of Bits) on random values."""
    rfc8785 = pytest.importorskip("rfc8785")
    assert canonical_json(value) == rfc8785.dumps(value)


def _nested(depth: int, inner: bytes = b"1") -> bytes:
    return b'{"a":' + b"[" * (depth - 1) + inner + b"]" * (depth - 1) + b"}"


def test_nesting_limit_is_fixed_and_counted_outside_strings() -> None:
    """64 levels parse, 65 are refused as json before parsing: the same on every Python and in
    every verifier (a recursion limit would differ). Brackets inside strings do not count."""
    assert parse_json(_nested(64)) is not None
    for data in (_nested(65), _nested(65, b"1.5"), _nested(2000, b"1.5"), b"]]" + b"[" * 65):
        with pytest.raises(BundleError) as info:
            parse_json(data)
        assert info.value.reason == "json"
    assert parse_json(b'["' + b"[{" * 100 + b'", "\\"[[[["]') == ["[{" * 100, '"[[[[']


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"\\udc00": 1}', "encoding"),
        (b'{"x": ["\\ud83d"]}', "encoding"),
        (b'{"x": "\\ud83d\\u0041"}', "encoding"),
        (b'{"a": "\\ud800", "a": 1}', "duplicate-key"),
        (b'{"a": "\\ud800", "b": 1.5}', "number"),
    ],
)
def test_lone_surrogates_are_refused_anywhere_after_parsing(data: bytes, reason: str) -> None:
    """An escaped lone surrogate in any string or member name is `encoding`, not `schema` (as
    before, when only `signed` was checked); syntax, number and duplicate errors come first."""
    with pytest.raises(BundleError) as info:
        parse_json(data)
    assert info.value.reason == reason


def test_escaped_surrogate_pairs_are_one_character() -> None:
    """The twin: a correctly escaped pair is the non-BMP character it encodes."""
    assert parse_json(b'{"\\ud83d\\ude00": "\\uD83D\\uDE00"}') == {"\U0001f600": "\U0001f600"}


def _policy_bundle(rule: dict[str, Any]) -> Any:
    from .conftest import raw_sign

    document = make({"rule": []}, [seed_key(1)], 3)
    signed = dict(document.bundle.signed)
    signed["policy"] = {"rule": [rule]}
    return parse_document(raw_sign(signed, [seed_key(1)])).bundle


_PIN = "sha256/" + "A" * 43 + "="
_PIN2 = "sha256/" + "B" * 42 + "A="


@pytest.mark.parametrize(
    "rule",
    [
        {"hosts": ["API.example.com"], "pins": [_PIN, _PIN2]},
        {"hosts": ["api.example.com."], "pins": [_PIN, _PIN2]},
        {"hosts": ["bücher.example"], "pins": [_PIN, _PIN2]},
        {"hosts": ["[::1]"], "pins": [_PIN, _PIN2]},
        {"hosts": ["0:0:0:0:0:0:0:1"], "pins": [_PIN, _PIN2]},
        {"hosts": ["fe80::1%eth0"], "pins": [_PIN, _PIN2]},
        {"hosts": ["::ffff:7f00:1"], "pins": [_PIN, _PIN2]},
        {"hosts": ["a.example.com"], "pins": ['pin-sha256="' + "A" * 43 + '="', _PIN2]},
        {"hosts": ["a.example.com"], "pins": ["A" * 43 + "=", _PIN2]},
        {"hosts": ["a.example.com"], "pins": ["sha256/" + "A" * 43, _PIN2]},
        {"hosts": ["a.example.com"], "pins": [_PIN, _PIN2], "deny": ["sha256//" + "A" * 42 + "E="]},
        {"hosts": ["a.example.com"], "pins": ["sha256/" + "B" * 43 + "=", _PIN]},
        {"hosts": ["a.example.com"], "pins": [_PIN, "cert-sha256/" + "AB" * 32]},
        {"hosts": ["a.example.com"], "pins": [_PIN, _PIN2], "expires": "20270101"},
        {"hosts": ["a.example.com"], "pins": [{"pin": _PIN, "not_after": "2027-W01-1"}, _PIN2]},
    ],
)
def test_bundle_policies_hold_canonical_values_only(rule: dict[str, Any]) -> None:
    """Hosts, pins and dates that a policy file accepts in other spellings are refused in a
    bundle (reason policy): other verifiers cannot be asked to know IDNA or every pin notation."""
    with pytest.raises(BundleError) as info:
        _policy_bundle(rule).load_policy()
    assert info.value.reason == "policy"
    # A zone ID is refused by the host pattern parser itself, before the canonical-form check.
    assert "canonical" in str(info.value) or "zone ID" in str(info.value)


def test_canonical_bundle_policy_is_accepted() -> None:
    """The twin: the same values in canonical form load."""
    rule = {
        "hosts": ["api.example.com", "**.cdn.example.com", "::1", "xn--bcher-kva.example"],
        "pins": [{"pin": _PIN, "not_after": "2027-01-01"}, "cert-sha256/" + "ab" * 32],
        "deny": [_PIN2],
        "expires": "2027-01-01",
    }
    policy = _policy_bundle(rule).load_policy()
    assert [h.text for h in policy.rules[0].hosts] == rule["hosts"]
