"""Host patterns: OkHttp's matching rules, canonical names, malformed patterns, properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tlspin import HostPattern, PinPolicy, PinRule, PolicyError
from tlspin.hosts import canonical_host

PINS = ["sha256/" + "A" * 43 + "=", "sha256/" + "B" * 43 + "="]


def matches(pattern: str, host: str, *, include_subdomains: bool = False) -> bool:
    """Match a raw host name the way a connection does (canonicalised first)."""
    parsed = HostPattern.parse(pattern, include_subdomains=include_subdomains)
    return parsed.matches(canonical_host(host), include_subdomains=include_subdomains)


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        # exact
        ("www.example.com", "www.example.com", True),
        ("www.example.com", "example.com", False),
        ("www.example.com", "a.www.example.com", False),
        # "*." is exactly one label
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", "aexample.com", False),
        # "**." is zero or more labels
        ("**.example.com", "example.com", True),
        ("**.example.com", "a.example.com", True),
        ("**.example.com", "a.b.c.example.com", True),
        ("**.example.com", "dexample.com", False),
        ("**.example.com", "barnexample.com", False),
        # square/okhttp#3324: substring matching once let this through
        ("*.foo.com", "bar.foo.com.notfoo.com", False),
        ("**.foo.com", "bar.foo.com.notfoo.com", False),
        # case and trailing dot
        ("EXAMPLE.com", "example.com", True),
        ("example.com", "Example.COM", True),
        ("example.com", "example.com.", True),
        ("*.Example.Com.", "API.example.com.", True),
        # IDN to punycode, on both sides
        ("σkhttp.com", "xn--khttp-fde.com", True),
        ("xn--khttp-fde.com", "σkhttp.com", True),
        ("*.bücher.example", "www.xn--bcher-kva.example", True),
        ("**.xn--bcher-kva.example", "BÜCHER.example", True),
        # IP literals are exact
        ("127.0.0.1", "127.0.0.1", True),
        ("::1", "[::1]", True),
        ("0:0:0:0:0:0:0:1", "::1", True),
        ("127.0.0.1", "127.0.0.2", False),
    ],
)
def test_okhttp_matching(pattern: str, host: str, expected: bool) -> None:
    """Patterns match host names exactly as OkHttp's CertificatePinner does."""
    assert matches(pattern, host) is expected


def test_include_subdomains_covers_every_depth() -> None:
    """include_subdomains makes an exact host cover itself and all its subdomains."""
    assert matches("example.com", "example.com", include_subdomains=True)
    assert matches("example.com", "a.b.example.com", include_subdomains=True)
    assert not matches("example.com", "notexample.com", include_subdomains=True)
    assert not matches("example.com", "a.example.com")


def test_pattern_text_is_canonical() -> None:
    """A parsed pattern keeps its wildcard and canonicalises the rest."""
    assert HostPattern.parse("**.BÜCHER.example.").text == "**.xn--bcher-kva.example"
    assert str(HostPattern.parse("*.Example.com")) == "*.example.com"


@pytest.mark.parametrize(
    "pattern",
    [
        "example.*",
        "a*.example.com",
        "*.*.example.com",
        "**.*.example.com",
        "*",
        "*.com",
        "**.com",
        "**.co.uk",
        "*.co.uk",
        "",
        "exa mple.com",
        "-bad.example.com",
        "*.127.0.0.1",
        "a" * 64 + ".example.com",
    ],
)
def test_malformed_patterns_raise_policy_error(pattern: str) -> None:
    """Malformed or public-suffix-wide patterns raise PolicyError (a ValueError)."""
    with pytest.raises(PolicyError) as excinfo:
        HostPattern.parse(pattern)
    assert isinstance(excinfo.value, ValueError)
    assert repr(pattern) in str(excinfo.value) or "empty" in str(excinfo.value)


@pytest.mark.parametrize("suffix", ["com", "co.uk", "github.io"])
def test_include_subdomains_on_public_suffix_is_refused(suffix: str) -> None:
    """include_subdomains on a public suffix would pin a whole TLD and is refused."""
    with pytest.raises(PolicyError, match="public suffix"):
        PinRule([suffix], PINS, include_subdomains=True)


def test_public_suffix_as_exact_host_is_allowed() -> None:
    """An exact public-suffix host pins only that name, which is allowed."""
    assert PinRule(["co.uk"], PINS).matches("co.uk")


def test_non_string_host_is_refused() -> None:
    """Host patterns and names must be strings."""
    with pytest.raises(PolicyError, match="must be a string"):
        HostPattern.parse(42)  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match="must be a string"):
        canonical_host(None)  # type: ignore[arg-type]


def test_policy_lookup_canonicalises_host_names() -> None:
    """PinPolicy.rules_for canonicalises case, trailing dot and IDN before matching."""
    policy = PinPolicy([PinRule(["*.bücher.example"], PINS)])
    assert policy.rules_for("WWW.XN--BCHER-KVA.EXAMPLE.")
    assert policy.rules_for("www.bücher.example")
    assert not policy.rules_for("bücher.example")


# -- properties ------------------------------------------------------------------------------

LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
LABELS = st.lists(LABEL, min_size=0, max_size=4)
BASES = st.sampled_from(["example.com", "api.example.org", "example.co.uk", "svc.internal.test"])


@given(LABELS, BASES)
def test_one_label_wildcard_matches_exactly_one_label(labels: list[str], base: str) -> None:
    """'*.base' matches a host iff exactly one label precedes the base."""
    host = ".".join([*labels, base])
    assert matches(f"*.{base}", host) is (len(labels) == 1)


@given(LABELS, BASES)
def test_any_depth_wildcard_matches_every_subdomain(labels: list[str], base: str) -> None:
    """'**.base' matches the base and any number of labels in front of it."""
    assert matches(f"**.{base}", ".".join([*labels, base]))


@given(LABELS, BASES, st.lists(LABEL, min_size=1, max_size=3))
def test_suffix_appended_never_matches(labels: list[str], base: str, tail: list[str]) -> None:
    """A host that merely contains the base followed by more labels never matches."""
    host = ".".join([*labels, base, *tail])
    for pattern in (base, f"*.{base}", f"**.{base}"):
        assert not matches(pattern, host)


@given(LABELS, BASES)
def test_exact_pattern_matches_only_itself(labels: list[str], base: str) -> None:
    """An exact pattern matches its own host and nothing else."""
    host = ".".join([*labels, base])
    assert matches(host, host)
    assert matches(host, host.upper() + ".")
    assert matches(base, host) is (not labels)


@given(LABEL, BASES)
def test_label_prefix_is_not_a_subdomain(label: str, base: str) -> None:
    """'**.base' does not match a host that only ends with the base's text."""
    assert not matches(f"**.{base}", f"{label}{base}")
