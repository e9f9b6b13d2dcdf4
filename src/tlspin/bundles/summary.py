"""Readable summaries of bundle documents, and the differences between two of them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from tlspin.bundles.format import Bundle, Document
from tlspin.bundles.keys import KeySet

__all__ = ["describe", "diff", "relative"]


def relative(when: dt.datetime, *, now: dt.datetime | None = None) -> str:
    """``in 3 day(s)`` or ``expired 5 hour(s) ago``."""
    seconds = (when - (now or dt.datetime.now(dt.UTC))).total_seconds()
    size = abs(seconds)
    if size >= 86400:
        amount = f"{int(size // 86400)} day(s)"
    elif size >= 3600:
        amount = f"{int(size // 3600)} hour(s)"
    else:
        amount = f"{int(size // 60)} minute(s)"
    return f"in {amount}" if seconds > 0 else f"expired {amount} ago"


def _pin_text(entry: Any) -> str:
    if isinstance(entry, Mapping):
        extras = [f"{k}={entry[k]}" for k in ("role", "note", "not_after") if k in entry]
        return f"{entry.get('pin')}" + (f" ({', '.join(extras)})" if extras else "")
    return str(entry)


def _pin_value(entry: Any) -> str:
    return str(entry.get("pin")) if isinstance(entry, Mapping) else str(entry)


def _rules(bundle: Bundle) -> list[Mapping[str, Any]]:
    rules = bundle.policy_data.get("rule", [])
    return [r for r in rules if isinstance(r, Mapping)] if isinstance(rules, list) else []


def _hosts(rule: Mapping[str, Any]) -> str:
    hosts = rule.get("hosts", [])
    return ", ".join(str(h) for h in (hosts if isinstance(hosts, list) else [hosts]))


def _keys_line(keys: KeySet) -> str:
    ids = ", ".join(k.keyid[:16] for k in keys.keys)
    return f"{len(keys.keys)} key(s), threshold {keys.threshold}: {ids}"


def describe(document: Document, *, now: dt.datetime | None = None) -> Iterator[str]:
    """Lines describing *document* (nothing here is verified)."""
    b = document.bundle
    yield f"bundle version {b.version} ({b.signed['format']})"
    yield f"  issued   {b.signed['issued_at']}"
    yield f"  expires  {b.signed['expires_at']} ({relative(b.expires_at, now=now)})"
    ids = ", ".join(s.keyid[:16] for s in b.signatures) or "none"
    yield f"  signatures: {len(b.signatures)} ({ids})"
    yield "  (signatures are not verified here: use 'tlspin bundle verify')"
    if b.signing_keys is not None:
        yield f"  hands signing over to {_keys_line(b.signing_keys)}"
    if document.chain:
        versions = ", ".join(str(c.version) for c in document.chain)
        yield f"  carries {len(document.chain)} earlier key rotation(s): version(s) {versions}"
    rules = _rules(b)
    on_expiry = b.policy_data.get("on_expiry", "fail-open")
    yield f"policy: {len(rules)} rule(s), on_expiry={on_expiry}"
    for rule in rules:
        extras = [str(rule.get("mode", "enforce"))]
        if rule.get("include_subdomains"):
            extras.append("include_subdomains")
        if "expires" in rule:
            extras.append(f"expires {rule['expires']}")
        pins = rule.get("pins", [])
        pins = pins if isinstance(pins, list) else []
        yield f"  {_hosts(rule)}  [{', '.join(extras)}]"
        for pin in pins:
            yield f"    {_pin_text(pin)}"
        deny = rule.get("deny", [])
        for pin in deny if isinstance(deny, list) else []:
            yield f"    deny {_pin_text(pin)}"


def _index(rules: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for rule in rules:
        key = _hosts(rule)
        if key in out:  # Two rules for the same host list: keep both apart.
            n = 2
            while f"{key} #{n}" in out:
                n += 1
            key = f"{key} #{n}"
        out[key] = rule
    return out


def diff(old: Document, new: Document) -> Iterator[str]:
    """Lines listing what changed from *old* to *new*: rules, pins, options and signing keys."""
    a, b = old.bundle, new.bundle
    yield f"changes from version {a.version} to version {b.version}:"
    changed = False
    if b.version <= a.version:
        yield f"  ! version does not increase ({a.version} -> {b.version}): clients will refuse it"
    before, after = _index(_rules(a)), _index(_rules(b))
    for key in after.keys() - before.keys():
        yield f"  + rule {key} ({len(after[key].get('pins', []))} pin(s))"
        changed = True
    for key in before.keys() - after.keys():
        yield f"  - rule {key}"
        changed = True
    for key in sorted(before.keys() & after.keys()):
        lines = list(_rule_diff(before[key], after[key]))
        if lines:
            changed = True
            yield f"  ~ rule {key}"
            yield from (f"      {line}" for line in lines)
    old_exp = a.policy_data.get("on_expiry", "fail-open")
    new_exp = b.policy_data.get("on_expiry", "fail-open")
    if old_exp != new_exp:
        changed = True
        yield f"  ~ on_expiry {old_exp} -> {new_exp}"
    if b.signing_keys is not None:
        changed = True
        yield f"  ~ signing keys handed over to {_keys_line(b.signing_keys)}"
    old_ids = {s.keyid for s in a.signatures}
    new_ids = {s.keyid for s in b.signatures}
    if old_ids != new_ids:
        changed = True
        added = ", ".join(k[:16] for k in sorted(new_ids - old_ids)) or "none"
        removed = ", ".join(k[:16] for k in sorted(old_ids - new_ids)) or "none"
        yield f"  ~ signers: added {added}; no longer signing {removed}"
    if not changed:
        yield "  (no change to the rules or keys)"


def _rule_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> Iterator[str]:
    for field in ("pins", "deny"):
        before = {_pin_value(p): p for p in old.get(field, []) or []}
        after = {_pin_value(p): p for p in new.get(field, []) or []}
        label = "pin" if field == "pins" else "deny"
        for pin in after.keys() - before.keys():
            yield f"+ {label} {_pin_text(after[pin])}"
        for pin in before.keys() - after.keys():
            yield f"- {label} {_pin_text(before[pin])}"
    defaults = {"include_subdomains": False, "mode": "enforce", "expires": None, "report_uri": None}
    for field, default in defaults.items():
        x, y = old.get(field, default), new.get(field, default)
        if x != y:
            yield f"{field}: {x} -> {y}"
