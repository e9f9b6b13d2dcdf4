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
