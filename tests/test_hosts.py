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


@pytest.mark.parametrize(
    ("pattern", "include_subdomains", "suggested"),
    [
        ("*.com", False, "*.example.com"),
        ("**.co.uk", False, "**.example.co.uk"),
        ("*.github.io", False, "*.example.github.io"),
        ("com", True, "example.com"),
    ],
)
def test_public_suffix_refusal_suggests_a_pattern_like_the_one_given(
    pattern: str, include_subdomains: bool, suggested: str
) -> None:
    """The refusal suggests the same kind of pattern one label down, not a fixed example."""
    with pytest.raises(PolicyError) as excinfo:
        HostPattern.parse(pattern, include_subdomains=include_subdomains)
    assert f"such as {suggested!r}" in str(excinfo.value)
    assert HostPattern.parse(suggested).text == suggested  # twin: the suggestion itself loads


def test_public_suffix_guard_is_on_unless_the_bundle_verifier_turns_it_off() -> None:
    """The guard is on by default (policy files, PinRule); the bundle verifier, whose verdict
    must not depend on a Public Suffix List version, turns it off and keeps the syntax rule: a
    wildcard still needs a base with a dot."""
    for text in ("*.co.uk", "**.github.io"):
        with pytest.raises(PolicyError, match="public suffix"):
            HostPattern.parse(text)
        with pytest.raises(PolicyError, match="public suffix"):
            PinRule(text, PINS)
        assert HostPattern.parse(text, public_suffix_guard=False).text == text
        assert PinRule(text, PINS, public_suffix_guard=False).hosts[0].text == text
    for text in ("*.com", "**.uk"):
        with pytest.raises(PolicyError):
            HostPattern.parse(text, public_suffix_guard=False)


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


# A last label never looks like a number (those names are refused, see test_numeric_hosts).
TLD = st.from_regex(r"[a-z]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)


@given(LABELS, BASES, st.lists(LABEL, max_size=2), TLD)
def test_suffix_appended_never_matches(
    labels: list[str], base: str, middle: list[str], tld: str
) -> None:
    """A host that merely contains the base followed by more labels never matches."""
    host = ".".join([*labels, base, *middle, tld])
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


# -- hostile and unusual spellings ---------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.01",  # OpenSSL verifies this as the IP address 127.0.0.1
        "127.000.000.001",
        "127.1",  # the resolver connects these to 127.0.0.1
        "0x7f000001",
        "0x7f.0.0.1",
        "2130706433",
        "example.com.1",
        "a.0x",
    ],
)
def test_numeric_names_that_are_not_canonical_ips_are_refused(host: str) -> None:
    """A name ending in a number is an IP address in disguise: refused, never 'unpinned'."""
    with pytest.raises(PolicyError, match="ends in a number"):
        canonical_host(host)
    with pytest.raises(PolicyError):
        HostPattern.parse(host)
    # The handshake treats a name it cannot canonicalise as pinned (fail closed).
    with pytest.raises(PolicyError):
        PinPolicy([PinRule(["127.0.0.1"], PINS)]).rules_for(host)


@pytest.mark.parametrize("host", ["1e100.net", "a.0xg", "0x.example", "123.example.com"])
def test_names_with_digits_before_the_last_label_stay_names(host: str) -> None:
    """Digits and hex-like labels anywhere but last are ordinary DNS labels."""
    assert canonical_host(host) == host


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1"),  # IPv4-mapped IPv6 reaches the IPv4 host
        ("[::ffff:7f00:1]", "127.0.0.1"),
        ("[::1]", "::1"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("１２７.0.0.1", "127.0.0.1"),  # full-width digits, as IDNA maps them
        ("127。0。0。1", "127.0.0.1"),  # ideographic full stops
        ("api。example。com", "api.example.com"),
        ("bücher。example", "xn--bcher-kva.example"),
        ("localhost.", "localhost"),
        ("LocalHost.", "localhost"),
        ("_srv.example.com", "_srv.example.com"),
        ("a" * 63 + ".example.com", "a" * 63 + ".example.com"),
    ],
)
def test_spellings_of_one_host_share_its_pins(spelling: str, canonical: str) -> None:
    """Every spelling of an address or name canonicalises to the one its pins are keyed by."""
    assert canonical_host(spelling) == canonical
    policy = PinPolicy([PinRule([canonical], PINS)])
    assert policy.rules_for(spelling) == policy.rules
    assert HostPattern.parse(spelling).text == canonical


@pytest.mark.parametrize(
    "host",
    [
        "api\n.example.com",  # "$" once matched before a trailing newline inside a label
        "api.example\n.com",
        "a\x00.example.com",
        "a\t.example.com",
        "api..example.com",
        ".example.com",
        "example.com..",
        "a" * 64 + ".example.com",
        ("a" * 60 + ".") * 5 + "com",  # longer than 253 characters
        "api.example.com/",
        "user@api.example.com",
        "api.example.com:443",
        "[api.example.com]",
        "\ud800.example.com",  # a lone surrogate
    ],
)
def test_malformed_host_names_are_refused(host: str) -> None:
    """Control characters, empty labels, over-long names and URL pieces raise PolicyError."""
    with pytest.raises(PolicyError):
        canonical_host(host)


@pytest.mark.parametrize("pattern", ["**.", "*.", "**", "**.github.io", "*.github.io"])
def test_bare_wildcards_and_private_suffixes_are_refused(pattern: str) -> None:
    """A wildcard with no domain, or over a private public suffix like github.io, is refused."""
    with pytest.raises(PolicyError):
        HostPattern.parse(pattern)
    # Twin: a registrable domain under that suffix is fine.
    assert HostPattern.parse("*.me.github.io").base == "me.github.io"


HOSTY = st.text(alphabet="ab0129xX.-_*[]:%。．\n\x00 Üß", max_size=24)


@given(st.one_of(st.text(max_size=40), HOSTY))
def test_arbitrary_text_never_crashes_host_parsing(text: str) -> None:
    """Any text is a host name and pattern, or raises PolicyError, never anything else."""
    for parse in (canonical_host, HostPattern.parse):
        try:
            parse(text)
        except PolicyError:
            pass


@given(HOSTY)
def test_canonical_host_is_idempotent(text: str) -> None:
    """A canonical name canonicalises to itself, so every spelling meets in one cache key."""
    try:
        host = canonical_host(text)
    except PolicyError:
        return
    assert canonical_host(host) == host


@pytest.mark.parametrize(
    ("pattern", "idna2008", "idna2003"),
    [
        ("faß.de", "xn--fa-hia.de", "fass.de"),
        ("*.faß.de", "xn--fa-hia.de", "fass.de"),
        ("βόλος.gr", "xn--nxasmm1c.gr", "xn--nxasmq6b.gr"),
    ],
)
def test_patterns_the_two_idna_standards_spell_apart_are_refused(
    pattern: str, idna2008: str, idna2003: str
) -> None:
    """A Unicode pattern that IDNA 2003 (the ssl module) and 2008 spell apart is ambiguous."""
    with pytest.raises(PolicyError, match="names two different hosts") as excinfo:
        HostPattern.parse(pattern)
    assert idna2008 in str(excinfo.value)
    assert idna2003 in str(excinfo.value)
    # Twin: the A-labels themselves are fine, one host each.
    assert HostPattern.parse(idna2008).base == idna2008
    assert HostPattern.parse(idna2003).base == idna2003


@pytest.mark.parametrize("pattern", ["bücher.example", "*.BÜCHER.example", "σkhttp.com"])
def test_patterns_both_idna_standards_agree_on_are_accepted(pattern: str) -> None:
    """Unicode patterns with one spelling under both standards keep working."""
    assert HostPattern.parse(pattern).base.startswith("xn--")


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("::1%1", "::1"),
        ("[::1%1]", "::1"),
        ("::1%lo", "::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("FE80::1%eth1", "fe80::1"),  # another link, the same address and the same pins
        ("fe80::1%25eth0", "fe80::1"),  # RFC 6874's URL spelling, passed on undecoded
        ("::ffff:127.0.0.1%1", "127.0.0.1"),
        ("fe80::1%en0.", "fe80::1"),
    ],
)
def test_zone_ids_are_dropped_from_host_names(spelling: str, canonical: str) -> None:
    """A zone ID names a link, not a host: the address's rules apply whatever the zone."""
    assert canonical_host(spelling) == canonical
    policy = PinPolicy([PinRule([canonical], PINS)])
    assert policy.rules_for(spelling) == policy.rules
    # Twin: another address with the same zone is still another host.
    assert PinPolicy([PinRule(["fe80::2"], PINS)]).rules_for(spelling) == ()


@pytest.mark.parametrize(
    "host",
    [
        "::1%",
        "::1%a%b",
        "::1%<!channel>",
        "::1%a\nb",
        "::1%\x00",
        "::1%\ud800",
        "::1%eth0:1",
        "::1%" + "a" * 65,
        "127.0.0.1%1",  # zones are an IPv6 thing
    ],
)
def test_malformed_zone_ids_are_refused(host: str) -> None:
    """A zone ID that is no interface name or index raises PolicyError, never passes through."""
    with pytest.raises(PolicyError, match="zone ID"):
        canonical_host(host)


@pytest.mark.parametrize("pattern", ["fe80::1%eth0", "[::1%1]", "::1%25lo"])
def test_patterns_with_zone_ids_are_refused(pattern: str) -> None:
    """A zone in a pattern would promise per-link pins that the lookup cannot give."""
    with pytest.raises(PolicyError, match="zone ID") as excinfo:
        HostPattern.parse(pattern)
    address = pattern.strip("[]").partition("%")[0]
    assert repr(address) in str(excinfo.value)
    assert HostPattern.parse(address).text == address  # twin: the bare address is a pattern
