"""Policy files: TOML and JSON dumping, and the load(dump(p)) == p round trip."""

from __future__ import annotations

import datetime as dt
import os
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tlspin import policyfile
from tlspin._shared import policyio
from tlspin.exceptions import PolicyError, SinglePinWarning
from tlspin.pins import CertificatePin, Pin
from tlspin.policy import PinInfo, PinPolicy, PinRule

_LABELS = st.sampled_from(["api", "www", "cdn", "a", "b-1", "xn--bcher-kva"])
_BASES = st.sampled_from(["example.com", "example.org", "tlspin.test", "example.co.uk"])
_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30
)  # no lone surrogates: neither TOML nor UTF-8 can hold them
# What a report_uri may hold after the host: no ASCII space or control character.
_URL_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters=" "),
    max_size=30,
)
_DATES = st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2100, 12, 31))


@st.composite
def host_patterns(draw: st.DrawFn) -> str:
    base = draw(_BASES)
    kind = draw(st.sampled_from(["exact", "sub", "one", "any"]))
    if kind == "sub":
        return f"{draw(_LABELS)}.{base}"
    if kind == "one":
        return f"*.{base}"
    if kind == "any":
        return f"**.{base}"
    return base


@st.composite
def pins(draw: st.DrawFn) -> Pin | CertificatePin:
    digest = draw(st.binary(min_size=32, max_size=32))
    return CertificatePin(digest) if draw(st.integers(0, 9)) == 0 else Pin(digest)


@st.composite
def infos(draw: st.DrawFn) -> PinInfo:
    return PinInfo(
        role=draw(st.sampled_from([None, "leaf", "intermediate", "root", "backup"])),
        note=draw(st.none() | _TEXT),
        not_after=draw(st.none() | _DATES),
    )


@st.composite
def rules(draw: st.DrawFn) -> PinRule:
    allowed = draw(st.lists(pins(), min_size=1, max_size=4, unique=True))
    denied = draw(st.lists(pins(), max_size=2, unique=True))
    described = draw(st.lists(st.sampled_from(allowed + denied), unique=True))
    # Metadata in any order: a rule must not depend on the order it was given in.
    meta = {p: draw(infos()) for p in draw(st.permutations(described))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinglePinWarning)
        return PinRule(
            draw(st.lists(host_patterns(), min_size=1, max_size=3)),
            allowed,
            include_subdomains=draw(st.booleans()),
            expires=draw(st.none() | _DATES),
            mode=draw(st.sampled_from(["enforce", "report"])),
            deny=denied,
            report_uri=draw(st.none() | _URL_TEXT.map(lambda t: "https://r.example.com/" + t)),
            pin_info=meta,
            ports=draw(st.lists(st.integers(1, 65535), max_size=3)),
        )


@st.composite
def policies(draw: st.DrawFn) -> PinPolicy:
    return PinPolicy(
        draw(st.lists(rules(), max_size=4)),
        on_expiry=draw(st.sampled_from(["fail-open", "enforce"])),
    )


def _load(text: str, fmt: str) -> PinPolicy:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinglePinWarning)
        return policyfile.loads(text, format=fmt)  # type: ignore[arg-type]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=policies(), fmt=st.sampled_from(["toml", "json"]))
def test_round_trip(policy: PinPolicy, fmt: str) -> None:
    """Loading a dumped policy gives an equal policy, in TOML and in JSON."""
    text = policyio.dumps(policy, format=fmt)  # type: ignore[arg-type]
    again = _load(text, fmt)
    assert again == policy
    assert policyio.dumps(again, format=fmt) == text  # type: ignore[arg-type]


def test_pin_info_order_is_irrelevant() -> None:
    """Two rules that differ only in the order their pin metadata was given are equal."""
    pin_a, pin_b = Pin(os.urandom(32)), Pin(os.urandom(32))
    first = PinRule(
        "x.example.com", [pin_a, pin_b], pin_info={pin_a: PinInfo("leaf"), pin_b: PinInfo("root")}
    )
    second = PinRule(
        "x.example.com", [pin_a, pin_b], pin_info={pin_b: PinInfo("root"), pin_a: PinInfo("leaf")}
    )
    assert first == second


def test_round_trip_detects_a_change() -> None:
    """A changed dump loads into a different policy (the equality the round trip uses can fail)."""
    pin_a, pin_b = Pin(os.urandom(32)), Pin(os.urandom(32))
    policy = PinPolicy([PinRule("api.example.com", [pin_a, pin_b], expires="2030-01-01")])
    text = policyio.dumps(policy).replace("2030-01-01", "2030-01-02")
    assert _load(text, "toml") != policy


def test_notes_with_control_characters_survive(tmp_path: Path) -> None:
    """Quotes, backslashes, newlines and control characters in notes round-trip through a file."""
    pin_a, pin_b = Pin(os.urandom(32)), Pin(os.urandom(32))
    note = 'a "quoted" \\ back\nslash\t\x01\x7f é 𝄞'
    policy = PinPolicy(
        [
            PinRule(
                ["**.example.com"],
                [pin_a, pin_b],
                pin_info={pin_a: PinInfo("leaf", note, dt.date(2027, 1, 1))},
            )
        ]
    )
    path = policyio.dump(policy, tmp_path / "p.toml", header="made by a test")
    assert path.read_text(encoding="utf-8").startswith("# made by a test\n")
    assert policyfile.load(path) == policy


def test_lone_surrogate_is_refused() -> None:
    """A note holding a lone surrogate is a clear PolicyError, not a broken file."""
    pin_a, pin_b = Pin(os.urandom(32)), Pin(os.urandom(32))
    policy = PinPolicy(
        [PinRule("a.example.com", [pin_a, pin_b], pin_info={pin_a: PinInfo(note="\ud800")})]
    )
    with pytest.raises(PolicyError, match="surrogate"):
        policyio.dumps(policy)


def test_json_suffix_selects_json(tmp_path: Path) -> None:
    """dump() writes JSON for a .json path, and load() reads it back equal."""
    policy = PinPolicy([PinRule("a.example.com", [Pin(os.urandom(32)), Pin(os.urandom(32))])])
    path = policyio.dump(policy, tmp_path / "p.json")
    assert path.read_text().lstrip().startswith("{")
    assert policyfile.load(path) == policy


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    """A write whose final rename fails leaves the old target intact and no temporary file."""
    target = tmp_path / "policy.toml"
    target.mkdir()  # os.replace() of a file onto a non-empty directory fails
    (target / "keep").write_text("old")
    with pytest.raises(OSError):
        policyio.atomic_write(target, "new")
    assert (target / "keep").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.toml"]


def test_atomic_write_sets_mode(tmp_path: Path) -> None:
    """atomic_write gives the file the requested mode (0600 for keys)."""
    path = policyio.atomic_write(tmp_path / "k", b"secret", mode=0o600)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes() == b"secret"
