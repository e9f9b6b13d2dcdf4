"""Judge one probe: status (green/amber/red), reasons, matched pins, expiries, redundancy, changes.

Red: the endpoint cannot be reached, its certificate fails verification (expired included), or
no pinned key is in its verified chain (or a denied key is). Amber: a certificate expires within
the warning window while a renewal with a new key would break the pins, a rule expires within
the window (or has expired), the pins have no redundancy, or a report-only/expired rule would
refuse the chain. Green otherwise.

**Redundancy** means the pins survive the rotation of the key that matches today: pins match at
two depths of the chain, or a *backup* pin exists outside the chain. A pin counts as a backup
unless its ``pin_info`` role says it belongs to a chain position (leaf, intermediate, root) or it
matched this endpoint in the previous run: a pin that just stopped matching is stale, not spare.

Reasons are strings ``"<code>: <message>"``; the code is stable across runs (messages carry
day counts that change daily), and alerting compares codes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography import x509

from tlspin.exceptions import InvalidPinError, PinMismatchError, TlspinWarning
from tlspin.monitor.probe import ProbeResult
from tlspin.monitor.targets import Target
from tlspin.pins import CertificatePin, Pin, spki_sha256
from tlspin.policy import PinPolicy, PinRule
from tlspin.verify import Verdict

__all__ = [
    "AMBER_CODES",
    "RED_CODES",
    "CertInfo",
    "EndpointResult",
    "Status",
    "describe_certificate",
    "evaluate",
    "reason_codes",
]

Status = Literal["green", "amber", "red"]

RED_CODES = frozenset(
    {"unreachable", "timeout", "tls-error", "cert-invalid", "cert-expired", "pin-mismatch",
     "pin-denied"}
)
AMBER_CODES = frozenset(
    {"cert-expiring", "rule-expiring", "rule-expired", "no-redundancy", "pin-unenforced",
     "unpinned"}
)
_CHAIN_ROLES = frozenset({"leaf", "intermediate", "root"})
_DAY = dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class CertInfo:
    """The parts of a certificate a health report shows."""

    subject: str
    issuer: str
    pin: str
    not_after: dt.datetime | None
    not_before: dt.datetime | None = None

    @property
    def self_issued(self) -> bool:
        """True for a certificate whose subject is its issuer (a root)."""
        return self.subject == self.issuer

    def days_left(self, now: dt.datetime) -> int | None:
        """Whole days until expiry (negative once expired)."""
        if self.not_after is None:
            return None
        return (self.not_after - now) // _DAY

    def as_dict(self) -> dict[str, Any]:
        """The ``{subject, issuer, pin, not_after}`` form stored with results."""
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "pin": self.pin,
            "not_after": self.not_after.isoformat() if self.not_after else None,
        }


_DESCRIBED: dict[bytes, CertInfo] = {}


def describe_certificate(der: bytes) -> CertInfo:
    """Describe a DER certificate; unparsable input gives a placeholder, never an exception."""
    info = _DESCRIBED.get(der)
    if info is not None:
        return info
    try:
        pin = str(Pin(spki_sha256(der)))
    except InvalidPinError:
        pin = ""
    try:
        cert = x509.load_der_x509_certificate(der)
        info = CertInfo(
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            pin=pin,
            not_after=cert.not_valid_after_utc,
            not_before=cert.not_valid_before_utc,
        )
    except ValueError:
        info = CertInfo("<unparsable certificate>", "<unknown>", pin, None)
    if len(_DESCRIBED) > 4096:
        _DESCRIBED.clear()
    _DESCRIBED[der] = info
    return info


@dataclass(frozen=True, slots=True)
class EndpointResult:
    """The health of one endpoint in one run. :meth:`as_dict` gives the stored/JSON form."""

    target: Target
    status: Status
    reasons: tuple[str, ...]
    chain: tuple[CertInfo, ...]
    verified: bool
    matched: tuple[tuple[str, int], ...]
    leaf_days_left: int | None
    min_intermediate_days_left: int | None
    rule_days_left: int | None
    redundant: bool | None
    changes: tuple[str, ...]
    error: str | None
    probed_at: dt.datetime
    served_chain: tuple[bytes, ...] = field(default=(), repr=False)

    def as_dict(self) -> dict[str, Any]:
        """Return the result in the collector's ``monitor_results`` shape (JSON-ready)."""
        return {
            "endpoint": self.target.endpoint,
            "host": self.target.host,
            "port": self.target.port,
            "ip": self.target.ip,
            "status": self.status,
            "reasons": list(self.reasons),
            "chain": [c.as_dict() for c in self.chain],
            "matched": [{"pin": pin, "depth": depth} for pin, depth in self.matched],
            "leaf_days_left": self.leaf_days_left,
            "min_intermediate_days_left": self.min_intermediate_days_left,
            "rule_days_left": self.rule_days_left,
            "redundant": self.redundant,
            "changes": list(self.changes),
            "error": self.error,
            "probed_at": self.probed_at.isoformat(),
        }


def reason_codes(reasons: Sequence[str]) -> frozenset[str]:
    """The stable codes of ``"<code>: <message>"`` reasons."""
    return frozenset(r.partition(":")[0].strip() for r in reasons)


def _status(reasons: Sequence[str]) -> Status:
    codes = reason_codes(reasons)
    if codes & RED_CODES:
        return "red"
    if codes:
        return "amber"
    return "green"


def _day(moment: dt.datetime | None) -> str:
    return moment.date().isoformat() if moment else "an unknown date"


def _position(depth: int, size: int, info: CertInfo) -> str:
    if depth == 0:
        return "leaf"
    if depth == size - 1 and info.self_issued:
        return "root"
    return "intermediate"


def _rule_reasons(rules: Sequence[PinRule], today: dt.date, warn_days: int) -> list[str]:
    out = []
    for rule in rules:
        if rule.expires is None:
            continue
        days = (rule.expires - today).days
        if days < 0:
            out.append(
                f"rule-expired: the rule for {rule.hosts[0]} expired on {rule.expires}; clients "
                "with on_expiry='fail-open' no longer enforce it (ship updated pins)"
            )
        elif days <= warn_days:
            out.append(
                f"rule-expiring: the rule for {rule.hosts[0]} expires in {days} days "
                f"({rule.expires}); ship updated pins before then"
            )
    return out


def _failure_reasons(probe: ProbeResult, chain: Sequence[CertInfo], now: dt.datetime) -> list[str]:
    kind = probe.error_kind
    if kind == "connect":
        return [f"unreachable: {probe.error}"]
    if kind == "timeout":
        return [f"timeout: {probe.error}"]
    if kind != "verify":
        return [f"tls-error: {probe.error}"]
    expired = [c for c in chain if c.not_after is not None and c.not_after < now]
    if expired:
        return [
            f"cert-expired: {c.subject} expired on {_day(c.not_after)} ({probe.error})"
            for c in expired
        ]
    return [f"cert-invalid: {probe.error}; the chain shown is the unverified one the server sent"]


def _matched(
    host: str, chain: Sequence[bytes], rules: Sequence[PinRule]
) -> tuple[list[tuple[str, int]], tuple[bytes, ...]]:
    digests = tuple(spki_sha256(der) for der in chain)
    verdict = Verdict(host, True, digests, (), tuple(rules))
    found = [(str(pin), depth) for depth, pin in verdict.matched()]
    cert_pins = {p.digest: p for r in rules for p in r.pins if isinstance(p, CertificatePin)}
    if cert_pins:
        for depth, der in enumerate(chain):
            pin = cert_pins.get(hashlib.sha256(der).digest())
            if pin is not None:
                found.append((str(pin), depth))
    return sorted(found, key=lambda item: item[1]), digests


def _pin_reasons(
    policy: PinPolicy, target: Target, chain: Sequence[bytes], *, matched: bool, now: dt.datetime
) -> list[str]:
    host, port = target.host, target.port
    try:
        with warnings.catch_warnings():
            # Expiry warnings are reported as reasons; the monitor's own run must not warn.
            warnings.simplefilter("ignore", TlspinWarning)
            verdict = policy.check(host, chain, port=port, now=now)
    except PinMismatchError as exc:
        if exc.reason == "denied":
            return ["pin-denied: a key on the rule's deny list is in the verified chain"]
        expected = ", ".join(exc.expected)
        return [f"pin-mismatch: no pinned key is in the verified chain (pinned: {expected})"]
    if verdict.violations:
        return [
            "pin-unenforced: a report-only rule would refuse this chain "
            f"({v.reason}); clients report it but connect"
            for v in verdict.violations
        ]
    if not matched:
        return [
            "pin-unenforced: no pinned key is in the verified chain; clients accept it only "
            "because the rule has expired and fails open"
        ]
    return []


def _backups(
    rules: Sequence[PinRule], digests: Sequence[bytes], previous_matched: frozenset[str]
) -> list[Pin]:
    out = []
    for rule in rules:
        for pin in rule.pins:
            if not isinstance(pin, Pin) or pin.digest in digests or str(pin) in previous_matched:
                continue
            info = rule.info(pin)
            if info is not None and info.role in _CHAIN_ROLES:
                continue
            out.append(pin)
    return out


def _changes(previous: Mapping[str, Any] | None, chain: Sequence[CertInfo]) -> list[str]:
    """``"<kind>: <what>"`` for a new leaf key, a new issuer and a new chain length."""
    if not previous or previous.get("error") or not chain:
        return []
    before = previous.get("chain")
    if not isinstance(before, list) or not before:
        return []
    if not all(isinstance(c, Mapping) for c in before):
        return []
    out = []
    if before[0].get("pin") != chain[0].pin:
        out.append(
            f"new-key: the leaf key changed from {before[0].get('pin')} to {chain[0].pin} "
            f"({chain[0].subject})"
        )
    old_key = before[1].get("pin") if len(before) > 1 else None
    new_key = chain[1].pin if len(chain) > 1 else None
    if before[0].get("issuer") != chain[0].issuer or old_key != new_key:
        out.append(
            f"new-issuer: the leaf is now issued by {chain[0].issuer} "
            f"(key {new_key or 'not served'}), was {before[0].get('issuer')} "
            f"(key {old_key or 'not served'})"
        )
    if len(before) != len(chain):
        out.append(f"chain-length: the chain has {len(chain)} certificates, was {len(before)}")
    return out


def evaluate(
    probe: ProbeResult,
    policy: PinPolicy,
    *,
    previous: Mapping[str, Any] | None = None,
    warn_days: int = 30,
    now: dt.datetime | None = None,
) -> EndpointResult:
    """Judge *probe* against *policy*.

    Args:
        probe: the probe outcome.
        policy: the policy (observers, if any, see pin failures; pass one without them).
        previous: this endpoint's result from the previous run (:meth:`EndpointResult.as_dict`
            form), for the change list and the stale-pin rule of redundancy.
        warn_days: the warning window for certificate and rule expiry.
        now: the time to judge at (default: the current UTC time).
    """
    now = now or dt.datetime.now(dt.UTC)
    target = probe.target
    rules = policy.rules_for(target.host)
    ders = probe.verified_chain if probe.verified else probe.served_chain
    chain = tuple(describe_certificate(d) for d in ders)
    reasons: list[str] = []
    matched: list[tuple[str, int]] = []
    redundant: bool | None = None
    if not probe.verified:
        reasons += _failure_reasons(probe, chain, now)
    elif not rules:
        reasons.append(f"unpinned: no rule of the policy covers {target.host}")
    else:
        matched, digests = _matched(target.host, ders, rules)
        reasons += _pin_reasons(policy, target, ders, matched=bool(matched), now=now)
        before = (previous or {}).get("matched") or ()
        previous_matched = frozenset(str(m.get("pin")) for m in before if isinstance(m, Mapping))
        backups = _backups(rules, digests, previous_matched)
        depths = {depth for _, depth in matched}
        redundant = len(depths) >= 2 or (bool(depths) and bool(backups))
        if depths and not redundant:
            (depth,) = depths
            where = _position(depth, len(chain), chain[depth])
            reasons.append(
                f"no-redundancy: only the {where} key ({chain[depth].subject}) matches and no "
                "backup pin exists outside the chain; rotating that key breaks clients"
            )
        for depth, info in enumerate(chain):
            days = info.days_left(now)
            if days is None or days > warn_days or backups or depths != {depth}:
                continue
            where = _position(depth, len(chain), info)
            reasons.append(
                f"cert-expiring: the {where} certificate {info.subject} expires in {days} days "
                f"({_day(info.not_after)}) and the next key is not pinned; a renewal with a "
                "new key breaks clients"
            )
    reasons += _rule_reasons(rules, now.date(), warn_days)
    rule_dates = [r.expires for r in rules if r.expires is not None]
    inner = [c.days_left(now) for c in chain[1:] if not c.self_issued]
    inner_days = [d for d in inner if d is not None]
    return EndpointResult(
        target=target,
        status=_status(reasons),
        reasons=tuple(reasons),
        chain=chain,
        verified=probe.verified,
        matched=tuple(matched),
        leaf_days_left=chain[0].days_left(now) if chain else None,
        min_intermediate_days_left=min(inner_days) if inner_days else None,
        rule_days_left=min((d - now.date()).days for d in rule_dates) if rule_dates else None,
        redundant=redundant,
        changes=tuple(_changes(previous, chain) if probe.verified else ()),
        error=probe.error,
        probed_at=now,
        served_chain=probe.served_chain,
    )
