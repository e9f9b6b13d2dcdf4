"""TrustKit for iOS/macOS: the Info.plist ``TSKConfiguration`` dictionary, export and import.

Keys are TrustKit's own (``kTSKPinnedDomains`` is the string ``TSKPinnedDomains``, and so on):
``TSKSwizzleNetworkDelegates``, ``TSKPinnedDomains`` and per domain ``TSKPublicKeyHashes``,
``TSKEnforcePinning``, ``TSKIncludeSubdomains``, ``TSKExpirationDate`` (``yyyy-MM-dd``),
``TSKReportUris`` and ``TSKDisableDefaultReportUri``. TrustKit refuses to start with fewer than two
pins for an enforced domain, uses an exact entry before any includeSubdomains parent (no union),
and reports to a Data Theorem server unless ``TSKDisableDefaultReportUri`` is set (the export
sets it).
"""

from __future__ import annotations

import plistlib
from typing import Any
from xml.parsers.expat import ExpatError

from tlspin.exceptions import PolicyError
from tlspin.formats import ExportOptions, Problems
from tlspin.formats._common import (
    check_overlaps,
    domains,
    exportable_pins,
    group_entries,
    inert_xml,
    is_ip,
    make_rule,
    platform_expiry,
    tlspin_expiry,
    xml_tree,
)
from tlspin.pins import Pin
from tlspin.policy import PinPolicy

SWIZZLE = "TSKSwizzleNetworkDelegates"
PINNED_DOMAINS = "TSKPinnedDomains"
PUBLIC_KEY_HASHES = "TSKPublicKeyHashes"
ENFORCE_PINNING = "TSKEnforcePinning"
INCLUDE_SUBDOMAINS = "TSKIncludeSubdomains"
EXPIRATION_DATE = "TSKExpirationDate"
REPORT_URIS = "TSKReportUris"
DISABLE_DEFAULT_REPORT_URI = "TSKDisableDefaultReportUri"
_DOMAIN_KEYS = {
    PUBLIC_KEY_HASHES,
    ENFORCE_PINNING,
    INCLUDE_SUBDOMAINS,
    EXPIRATION_DATE,
    REPORT_URIS,
    DISABLE_DEFAULT_REPORT_URI,
}
_IGNORED_DOMAIN_KEYS = {
    "TSKPublicKeyAlgorithms"
}  # TrustKit < 1.6 only; SPKI hashes carry no algorithm


def export(policy: PinPolicy, fmt: str, options: ExportOptions, problems: Problems) -> str:
    """Write an XML plist whose top-level dict holds ``TSKConfiguration``."""
    target = "TrustKit"
    check_overlaps(policy, problems, target)
    pinned: dict[str, dict[str, Any]] = {}
    for index, rule in enumerate(policy.rules):
        pins = exportable_pins(
            rule, index, problems, target, report_mode=True, report_uri=True, today=options.date
        )
        if rule.mode == "enforce" and len(pins) < 2:
            problems.error(
                f"{target} refuses an enforced domain with fewer than two pins "
                f"(found {len(pins)}); add a backup pin",
                rule=index,
                forceable=False,
            )
        for entry in domains(rule, index, problems, target):
            if is_ip(entry.name):
                problems.error(
                    f"{target} accepts only domain names, found {entry.name}",
                    rule=index,
                    forceable=False,
                )
            if entry.name in pinned:
                problems.error(
                    f"{entry.name} appears in two rules; {target} holds one entry per domain",
                    rule=index,
                    forceable=False,
                )
            config: dict[str, Any] = {
                PUBLIC_KEY_HASHES: [p.b64 for p in pins],
                ENFORCE_PINNING: rule.mode == "enforce",
                INCLUDE_SUBDOMAINS: entry.include_subdomains,
            }
            expiration = platform_expiry(rule)
            if expiration is not None:
                config[EXPIRATION_DATE] = expiration
            if rule.report_uri is not None:
                config[REPORT_URIS] = [rule.report_uri]
            config[DISABLE_DEFAULT_REPORT_URI] = True
            pinned[entry.name] = config
    document = {"TSKConfiguration": {SWIZZLE: False, PINNED_DOMAINS: pinned}}
    try:
        text = plistlib.dumps(document, fmt=plistlib.FMT_XML, sort_keys=False).decode("utf-8")
    except ValueError as exc:  # plistlib refuses C0 controls; UTF-8, lone surrogates
        msg = f"{fmt}: cannot write the property list: {exc}"
        raise PolicyError(msg) from None
    return inert_xml(text, fmt)


def _typed(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, kind):
        name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        msg = f"trustkit-ios: {what} must be a {name}, found {type(value).__name__}"
        raise PolicyError(msg)
    return value


def parse(data: bytes, fmt: str, options: ExportOptions, problems: Problems) -> PinPolicy:
    """Read an Info.plist (XML or binary) holding ``TSKConfiguration``, or the dict itself."""
    if not data.startswith(b"bplist"):
        # The DTD and depth checks plistlib lacks, in the parser (any encoding).
        xml_tree(data, fmt, doctype="plist", invalid="not a property list")
    try:
        document = plistlib.loads(data)
    except (plistlib.InvalidFileException, ExpatError, ValueError, TypeError, OverflowError) as exc:
        msg = f"trustkit-ios: not a property list: {exc}"
        raise PolicyError(msg) from None
    except RecursionError:
        # plistlib reads a binary plist's nested containers recursively.
        msg = "trustkit-ios: not a property list: its containers are nested too deeply"
        raise PolicyError(msg) from None
    _typed(document, dict, "the property list's top level")
    config = document.get("TSKConfiguration", document)
    _typed(config, dict, "TSKConfiguration")
    if PINNED_DOMAINS not in config:
        msg = (
            f"trustkit-ios: no {PINNED_DOMAINS} found (looked in TSKConfiguration and "
            "at the top level)"
        )
        raise PolicyError(msg)
    domains_ = _typed(config[PINNED_DOMAINS], dict, PINNED_DOMAINS)
    entries = []
    for name, raw in domains_.items():
        _typed(name, str, "a domain name")
        _typed(raw, dict, f"the entry for {name}")
        unknown = set(raw) - _DOMAIN_KEYS - _IGNORED_DOMAIN_KEYS
        if unknown:
            msg = f"trustkit-ios: {name} has key(s) tlspin cannot express: {sorted(unknown)}"
            raise PolicyError(msg)
        hashes = _typed(raw.get(PUBLIC_KEY_HASHES), list, f"{name} {PUBLIC_KEY_HASHES}")
        pins = tuple(str(Pin.parse(_typed(h, str, f"a {PUBLIC_KEY_HASHES} item"))) for h in hashes)
        enforce = _typed(raw.get(ENFORCE_PINNING, True), bool, f"{name} {ENFORCE_PINNING}")
        sub = _typed(raw.get(INCLUDE_SUBDOMAINS, False), bool, f"{name} {INCLUDE_SUBDOMAINS}")
        expiration = raw.get(EXPIRATION_DATE)
        expires = None
        if expiration is not None:
            expires = tlspin_expiry(
                _typed(expiration, str, EXPIRATION_DATE), f"trustkit-ios: {name}"
            )
        uris = _typed(raw.get(REPORT_URIS, []), list, f"{name} {REPORT_URIS}")
        if len(uris) > 1:
            msg = f"trustkit-ios: {name} has {len(uris)} report URIs; tlspin keeps one per rule"
            raise PolicyError(msg)
        if not raw.get(DISABLE_DEFAULT_REPORT_URI, False):
            problems.warning(
                f"{name}: TrustKit also reports to its default Data Theorem URI; tlspin "
                "does not carry that over"
            )
        entries.append(
            (
                f"**.{name}" if sub else name,
                {
                    "pins": pins,
                    "mode": "enforce" if enforce else "report",
                    "expires": expires,
                    "report_uri": _typed(uris[0], str, "a report URI") if uris else None,
                },
            )
        )
    if not entries:
        msg = f"trustkit-ios: {PINNED_DOMAINS} is empty; nothing is pinned"
        raise PolicyError(msg)
    rules = [
        make_rule(
            hosts, list(s["pins"]), mode=s["mode"], expires=s["expires"], report_uri=s["report_uri"]
        )
        for hosts, s in group_entries(entries)
    ]
    return PinPolicy(rules)
