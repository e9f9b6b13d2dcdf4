"""Deny pins that outlive their bundle: revocations learnt from a verified bundle never expire.

A bundle can remove a compromised key and deny it. When that bundle expires (or an attacker
blocks updates until it does), the embedded fallback policy takes over, and it may well still
pin the compromised key. So the deny pins of the newest accepted bundle are carried over onto
the fallback policy: for every host that both a fallback rule and a denying bundle rule cover,
the key stays refused. Pins are never added: on those hosts the fallback rule's own pins are
the only ones that pass, as before.
"""

from __future__ import annotations

import warnings

from tlspin.exceptions import SinglePinWarning
from tlspin.hosts import HostPattern, Kind
from tlspin.policy import PinPolicy, PinRule

__all__ = ["denying_rules", "intersect", "with_denies"]


def denying_rules(policy: PinPolicy) -> tuple[PinRule, ...]:
    """The enforced rules of *policy* that deny keys (report-only denies are not revocations)."""
    return tuple(r for r in policy.rules if r.mode == "enforce" and r.deny)


def _kind(pattern: HostPattern, include_subdomains: bool) -> Kind:
    if include_subdomains and pattern.kind is Kind.EXACT:
        return Kind.ANY_DEPTH
    return pattern.kind


def _pattern(kind: Kind, base: str) -> HostPattern:
    prefix = {Kind.EXACT: "", Kind.ONE_LABEL: "*.", Kind.ANY_DEPTH: "**."}[kind]
    # Always valid: the base is that of one of two valid patterns, with a wildcard no wider.
    # No public-suffix guard: a bundle's patterns were checked for syntax only (§9).
    return HostPattern.parse(prefix + base, public_suffix_guard=False)


def intersect(
    a: HostPattern, b: HostPattern, *, a_subdomains: bool = False, b_subdomains: bool = False
) -> HostPattern | None:
    """The pattern covering exactly the hosts both *a* and *b* cover, or None if there are none.

    The intersection of two host patterns is always one pattern (or empty): an exact name, the
    deeper of two wildcards, or the one name a one-label wildcard shares with a deeper base.
    """
    ka, kb = _kind(a, a_subdomains), _kind(b, b_subdomains)
    if ka is Kind.EXACT:
        return a if b.matches(a.base, include_subdomains=b_subdomains) else None
    if kb is Kind.EXACT:
        return b if a.matches(b.base, include_subdomains=a_subdomains) else None
    if a.base == b.base:
        return _pattern(Kind.ANY_DEPTH if ka is kb is Kind.ANY_DEPTH else Kind.ONE_LABEL, a.base)
    if b.base.endswith("." + a.base):
        (ka, a), (kb, b) = (kb, b), (ka, a)
    if not a.base.endswith("." + b.base):
        return None
    # a is deeper than b.
    if kb is Kind.ANY_DEPTH:
        return _pattern(ka, a.base)
    # b covers exactly one label under its base: only a's own name can be in both, and only when
    # a is any-depth (it covers its base) and its base is one label below b's.
    head = a.base[: -len(b.base) - 1]
    if ka is Kind.ANY_DEPTH and "." not in head:
        return _pattern(Kind.EXACT, a.base)
    return None


def with_denies(fallback: PinPolicy, source: PinPolicy | None) -> PinPolicy:
    """Return *fallback* with the deny pins of *source*'s enforced rules where both apply.

    For each fallback rule and each denying rule of *source* whose hosts overlap, a rule is
    added that covers only the overlap, with the fallback rule's own pins, expiry and mode and
    with the extra deny pins: the hosts' accepted pins are unchanged, the denied keys refused.
    Observers and options of *fallback* are kept.
    """
    denying = denying_rules(source) if source is not None else ()
    if not denying:
        return fallback
    added: list[PinRule] = []
    for rule in fallback.rules:
        for deny_rule in denying:
            hosts = {
                found.text: found
                for mine in rule.hosts
                for theirs in deny_rule.hosts
                if (
                    found := intersect(
                        mine,
                        theirs,
                        a_subdomains=rule.include_subdomains,
                        b_subdomains=deny_rule.include_subdomains,
                    )
                )
                is not None
            }
            if not hosts:
                continue
            with warnings.catch_warnings():
                # The fallback rule warned about a single pin already, when it was made.
                warnings.simplefilter("ignore", SinglePinWarning)
                added.append(
                    PinRule(
                        hosts.values(),
                        rule.pins,
                        expires=rule.expires,
                        mode=rule.mode,
                        deny=(*rule.deny, *deny_rule.deny),
                        report_uri=rule.report_uri,
                        pin_info=rule.pin_info,
                        public_suffix_guard=False,
                    )
                )
    return fallback.with_rules((*fallback.rules, *added)) if added else fallback
