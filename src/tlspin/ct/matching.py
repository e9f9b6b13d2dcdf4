"""Which pin rules a certificate's names fall under, and whether its keys satisfy them.

A certificate name can itself be a wildcard: ``*.example.com`` is valid for every host one label
under ``example.com``, so it falls under a rule for ``api.example.com`` as well as under
``*.example.com`` and ``**.example.com``. Matching is therefore an intersection of two sets of
host names, computed per pattern kind.

A certificate satisfies a rule when its own key, or the key of an issuer whose signature on it
holds (or, for a precertificate, its ``issuer_key_hash``), is one of the rule's pins. Clients
building that chain would accept it; anything else breaks them, or is a mis-issuance.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from tlspin.ct.entries import CertRecord
from tlspin.exceptions import PolicyError
from tlspin.hosts import HostPattern, Kind, canonical_host
from tlspin.pins import Pin
from tlspin.policy import PinPolicy, PinRule

__all__ = ["Finding", "check_record", "name_covered", "rules_for_name"]

Verdict = Literal["unpinned-key", "denied-key", "unchecked"]


def _one_below(host: str, base: str) -> bool:
    return host.endswith("." + base) and "." not in host[: -len(base) - 1]


def _at_or_below(host: str, base: str) -> bool:
    return host == base or host.endswith("." + base)


def _wildcard_meets(base: str, pattern: HostPattern, include_subdomains: bool) -> bool:
    """Does ``*.base`` (one label under *base*) share a host with *pattern*?"""
    kind = pattern.kind
    if include_subdomains and kind is Kind.EXACT:
        kind = Kind.ANY_DEPTH
    if kind is Kind.EXACT:
        return _one_below(pattern.base, base)
    if kind is Kind.ONE_LABEL:
        return pattern.base == base
    # **.C covers C and everything below; *.B meets it if B is at or below C, or if C itself
    # is one label under B.
    return _at_or_below(base, pattern.base) or _one_below(pattern.base, base)


def name_covered(name: str, rule: PinRule) -> bool:
    """Return True if certificate name *name* (possibly ``*.``) shares a host with *rule*."""
    wildcard = name.startswith("*.")
    try:
        host = canonical_host(name[2:] if wildcard else name)
    except PolicyError:
        return False  # not a host name (garbage in a log entry); it cannot match a rule
    if not wildcard:
        return rule.matches(host)
    return any(_wildcard_meets(host, p, rule.include_subdomains) for p in rule.hosts)


def rules_for_name(policy: PinPolicy, name: str) -> list[PinRule]:
    """Every rule of *policy* that certificate name *name* falls under."""
    return [rule for rule in policy.rules if name_covered(name, rule)]


@dataclass(frozen=True, slots=True)
class Finding:
    """A certificate under a pinned rule that the rule's pins do not accept (or cannot check).

    Attributes:
        record: the certificate.
        rules: the rules its names fall under and whose pins it fails.
        names: the certificate names that fall under those rules.
        verdict: ``"unpinned-key"`` (no pinned key: mis-issuance or an unplanned rotation),
            ``"denied-key"`` (a key on a rule's deny list) or ``"unchecked"`` (the export
            had no key to check).
        source: the log URL or export file it came from.
    """

    record: CertRecord
    rules: tuple[PinRule, ...]
    names: tuple[str, ...]
    verdict: Verdict
    source: str = ""

    @property
    def flagged(self) -> bool:
        """True for findings that need attention (not merely unchecked)."""
        return self.verdict != "unchecked"

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        rec = self.record
        return {
            "source": self.source,
            "index": rec.index,
            "entry_type": rec.entry_type,
            "verdict": self.verdict,
            "names": list(self.names),
            "all_names": list(rec.names),
            "rules": [[p.text for p in r.hosts] for r in self.rules],
            "pin": str(Pin(rec.spki_sha256)) if rec.spki_sha256 else None,
            "issuer_pins": [str(Pin(k)) for k in rec.chain_keys],
            "subject": rec.subject,
            "issuer": rec.issuer,
            "serial": rec.serial,
            "not_before": rec.not_before.isoformat() if rec.not_before else None,
            "not_after": rec.not_after.isoformat() if rec.not_after else None,
            "logged_at": rec.timestamp.isoformat() if rec.timestamp else None,
        }


def _digests(pins: Iterable[object]) -> frozenset[bytes]:
    return frozenset(p.digest for p in pins if isinstance(p, Pin))


def check_record(policy: PinPolicy, record: CertRecord, *, source: str = "") -> Finding | None:
    """Check one certificate against *policy*; None when no rule covers it or its keys pass."""
    covered: dict[int, tuple[PinRule, list[str]]] = {}
    for name in record.names:
        for rule in rules_for_name(policy, name):
            covered.setdefault(id(rule), (rule, []))[1].append(name)
    if not covered:
        return None
    keys = frozenset(k for k in (record.spki_sha256, *record.chain_keys) if k is not None)
    denied: list[tuple[PinRule, list[str]]] = []
    failing: list[tuple[PinRule, list[str]]] = []
    for rule, names in covered.values():
        if keys & _digests(rule.deny):
            denied.append((rule, names))
        elif keys.isdisjoint(_digests(rule.pins)):
            failing.append((rule, names))
    chosen: Sequence[tuple[PinRule, list[str]]]
    if denied:
        verdict: Verdict = "denied-key"
        chosen = denied
    elif not failing:
        return None
    elif record.spki_sha256 is None and not record.chain_keys:
        verdict, chosen = "unchecked", failing
    else:
        verdict, chosen = "unpinned-key", failing
    covered_names = tuple(dict.fromkeys(n for _, ns in chosen for n in ns))
    return Finding(record, tuple(r for r, _ in chosen), covered_names, verdict, source)
