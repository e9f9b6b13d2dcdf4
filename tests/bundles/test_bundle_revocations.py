"""Deny pins carried onto the fallback policy: host-pattern intersections and the merged policy."""

from __future__ import annotations

import pytest

from tlspin import PinPolicy, PinRule
from tlspin.bundles.revocations import intersect, with_denies
from tlspin.hosts import HostPattern

from .conftest import Pki


def _p(text: str) -> HostPattern:
    return HostPattern.parse(text)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("api.example.com", "api.example.com", "api.example.com"),
        ("api.example.com", "web.example.com", None),
        ("api.example.com", "*.example.com", "api.example.com"),
        ("a.b.example.com", "*.example.com", None),
        ("**.example.com", "api.example.com", "api.example.com"),
        ("**.example.com", "example.com", "example.com"),
        ("*.example.com", "example.com", None),
        ("*.example.com", "*.example.com", "*.example.com"),
        ("*.example.com", "**.example.com", "*.example.com"),
        ("**.example.com", "**.example.com", "**.example.com"),
        ("**.api.example.com", "**.example.com", "**.api.example.com"),
        ("*.api.example.com", "**.example.com", "*.api.example.com"),
        ("**.api.example.com", "*.example.com", "api.example.com"),
        ("*.api.example.com", "*.example.com", None),
        ("**.x.api.example.com", "*.example.com", None),
        ("**.example.com", "**.example.org", None),
        ("**.ample.com", "**.example.com", None),
    ],
)
def test_intersect_covers_exactly_the_shared_hosts(a: str, b: str, expected: str | None) -> None:
    """The intersection of two patterns, both ways round, is the one pattern they share."""
    for x, y in ((a, b), (b, a)):
        found = intersect(_p(x), _p(y))
        assert (found.text if found else None) == expected, (x, y)


def test_include_subdomains_counts_as_any_depth() -> None:
    """An exact pattern of a rule with include_subdomains covers its subdomains too."""
    found = intersect(_p("example.com"), _p("*.example.com"), a_subdomains=True)
    assert found is not None
    assert found.text == "*.example.com"


def test_with_denies_adds_denies_only_where_both_rules_apply(pki: Pki) -> None:
    """Denies land on the overlap with the fallback's own pins; pins are never added."""
    fallback = PinPolicy([PinRule("**.example.com", [pki.ca.pin, pki.backup])])
    source = PinPolicy([
        PinRule("api.example.com", [pki.api_new.pin, pki.backup], deny=[pki.api_old.pin]),
        PinRule("web.example.com", [pki.api_new.pin, pki.backup], deny=[pki.ca.pin],
                mode="report"),
        PinRule("elsewhere.org", [pki.api_new.pin, pki.backup], deny=[pki.ca.pin]),
    ])
    merged = with_denies(fallback, source)
    api = merged.rules_for("api.example.com")
    assert {p for r in api for p in r.pins} == set(fallback.rules[0].pins)
    assert {str(p) for r in api for p in r.deny} == {pki.api_old.pin}
    # A report-only deny is not a revocation; hosts outside the overlap are unchanged.
    assert merged.rules_for("web.example.com") == fallback.rules
    assert merged.rules_for("other.example.com") == fallback.rules
    assert with_denies(fallback, PinPolicy([PinRule("x.org", [pki.ca.pin, pki.backup])])) is (
        fallback)


def test_denies_carry_over_when_the_overlap_is_a_public_suffix_wildcard(pki: Pki) -> None:
    """A bundle's patterns are checked for syntax only (no Public Suffix List decides a
    verdict), so a verified bundle may deny keys on *.s3.amazonaws.com (a public suffix): the
    overlap with a fallback rule for **.amazonaws.com is that pattern, and carrying the deny
    over must not fail at expiry. The twin: the same carry-over on an ordinary domain."""
    from tlspin import policyfile

    rule = {"pins": [pki.ca.pin, pki.backup], "deny": [pki.api_old.pin]}
    for suffix in ("s3.amazonaws.com", "s3.example.com"):
        # Read as Bundle.load_policy reads a verified bundle's policy.
        source = policyfile.from_data(
            {"rule": [{"hosts": [f"*.{suffix}"], **rule}]}, public_suffix_guard=False
        )
        fallback = PinPolicy([PinRule(f"**.{suffix.split('.', 1)[1]}", [pki.ca.pin, pki.backup])])
        merged = with_denies(fallback, source)
        [added] = merged.rules[1:]
        assert [h.text for h in added.hosts] == [f"*.{suffix}"]
        assert [str(p) for p in added.deny] == [pki.api_old.pin]
        assert merged.rules_for(f"bucket.{suffix}")[-1] is added
