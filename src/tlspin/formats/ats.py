"""Apple App Transport Security identity pinning (``NSPinnedDomains``), export only.

Schema (Info.plist)::

    NSAppTransportSecurity: { NSPinnedDomains: { <domain>: {
        NSIncludesSubdomains: bool,
        NSPinnedCAIdentities:   [ { SPKI-SHA256-BASE64: "…" } ],
        NSPinnedLeafIdentities: [ { SPKI-SHA256-BASE64: "…" } ] } } }

Pins are sorted by role: ``root`` and ``intermediate`` keys are CA identities, ``leaf`` and
``backup`` keys leaf identities; a pin without a role cannot be placed. When both lists are present
ATS requires a match in *each* (tlspin accepts any one pin), and NSIncludesSubdomains covers one
more label only; both differences are errors unless forced. ATS has no expiry or report-only mode:
a rule with ``expires`` is an error that says what to do instead (ship updated pins before the
date, or use TrustKit, which has an expiry), and ``--force`` writes the pins without it.
"""

from __future__ import annotations

import plistlib
from typing import Any

from tlspin.formats import ExportOptions, Problems
from tlspin.formats._common import check_overlaps, check_rule, domains, spki_pins
from tlspin.policy import PinPolicy

ATS = "NSAppTransportSecurity"
PINNED_DOMAINS = "NSPinnedDomains"
INCLUDES_SUBDOMAINS = "NSIncludesSubdomains"
CA_IDENTITIES = "NSPinnedCAIdentities"
LEAF_IDENTITIES = "NSPinnedLeafIdentities"
SPKI_KEY = "SPKI-SHA256-BASE64"
_CA_ROLES = ("root", "intermediate")
_LEAF_ROLES = ("leaf", "backup")


def export(policy: PinPolicy, fmt: str, options: ExportOptions, problems: Problems) -> str:
    """Write an XML plist whose top-level dict holds ``NSAppTransportSecurity``."""
    target = "ATS"
    check_overlaps(policy, problems, target)
    pinned: dict[str, dict[str, Any]] = {}
    for index, rule in enumerate(policy.rules):
        # ATS's own words about expiry (below), not the generic ones.
        check_rule(rule, index, problems, target, expiry=True, report_mode=False, report_uri=False)
        if rule.expires is not None:
            problems.error(
                f"ATS has no pin expiry: iOS keeps enforcing these pins after {rule.expires}, "
                "until an app update replaces the Info.plist, so an app nobody updates refuses "
                "the server once its keys rotate past the pins. Ship an update with new pins "
                f"before {rule.expires}, or pin with TrustKit (export trustkit-ios), whose "
                "TSKExpirationDate stops enforcing at the date",
                rule=index,
            )
        ca: list[str] = []
        leaf: list[str] = []
        for pin in spki_pins(rule, index, problems, target):
            info = rule.info(pin)
            role = info.role if info is not None else None
            if role in _CA_ROLES:
                ca.append(pin.b64)
            elif role in _LEAF_ROLES:
                leaf.append(pin.b64)
            else:
                problems.error(
                    f"ATS needs each pin's role to place it under {CA_IDENTITIES} or "
                    f"{LEAF_IDENTITIES}; {pin} has none "
                    f'(write it as {{ pin = "…", role = "leaf" }})',
                    rule=index,
                    forceable=False,
                )
        if ca and leaf:
            problems.error(
                f"ATS requires a match in both {CA_IDENTITIES} and {LEAF_IDENTITIES} when a "
                "domain has both, while tlspin accepts any one pin: a chain matching only one "
                "list is refused, so a move to the backup leaf key fails unless the CA stays, "
                "and a CA change fails unless the leaf key stays. For ATS, give this rule CA "
                "keys only (roles intermediate, root) or leaf keys only (roles leaf, backup)",
                rule=index,
            )
        for entry in domains(rule, index, problems, target, one_level=True):
            if entry.name in pinned:
                problems.error(
                    f"{entry.name} appears in two rules; ATS holds one entry per domain",
                    rule=index,
                    forceable=False,
                )
            config: dict[str, Any] = {INCLUDES_SUBDOMAINS: entry.include_subdomains}
            if ca:
                config[CA_IDENTITIES] = [{SPKI_KEY: b64} for b64 in ca]
            if leaf:
                config[LEAF_IDENTITIES] = [{SPKI_KEY: b64} for b64 in leaf]
            pinned[entry.name] = config
    document = {ATS: {PINNED_DOMAINS: pinned}}
    return plistlib.dumps(document, fmt=plistlib.FMT_XML, sort_keys=False).decode("utf-8")
