"""The pin check itself: pure, no I/O, a few microseconds per connection.

:func:`check` takes the *verified* chain (DER, leaf first) that the TLS library built to a
trusted root, and the host name the connection was made for. Pins count only on that chain:
certificates an attacker appends to what it serves never reach it (RFC 7469 §2.6,
CVE-2016-2402).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from tlspin.exceptions import (
    InvalidPinError,
    PinMismatchError,
    PinningUnavailableError,
    PinPolicyExpiredWarning,
)
from tlspin.hosts import canonical_host
from tlspin.pins import _SPKI_CACHE, CertificatePin, Pin, spki_sha256
from tlspin.policy import AnyPin, Mode, PinPolicy, PinRule

__all__ = ["Verdict", "Violation", "check", "check_resumed", "describe_chain"]

log = logging.getLogger("tlspin")
# A library never prints by itself: the application chooses where "tlspin" records go.
log.addHandler(logging.NullHandler())


@dataclass(frozen=True, slots=True)
class Violation:
    """One pin failure, enforced or report-only: the event reporters and observers receive.

    Attributes:
        hostname: canonical host name of the connection.
        port: the server port when known (``None`` on memory-BIO connections).
        time: when the check ran (UTC).
        served_chain: DER certificates as the server sent them (may include extras).
        verified_chain: DER certificates of the chain built to a trusted root, leaf first.
        expected: the pins the failing rules accept.
        mode: ``"enforce"`` (the connection was refused) or ``"report"`` (it went ahead).
        rules: the rules that failed.
        reason: ``"mismatch"`` (no pin matched), ``"denied"`` (a deny pin matched),
            ``"resumption"`` (a resumed session whose leaf was never checked),
            ``"unverified-chain"`` (no CA verification, and no pin of the leaf's own key) or
            ``"unreadable-certificate"`` (a certificate whose key tlspin cannot locate).
    """

    hostname: str
    port: int | None
    time: dt.datetime
    served_chain: tuple[bytes, ...]
    verified_chain: tuple[bytes, ...]
    expected: tuple[AnyPin, ...]
    mode: Mode
    rules: tuple[PinRule, ...]
    reason: str = "mismatch"

    @property
    def noted_hostname(self) -> str:
        """The base of the first failing rule's pattern for the host (RFC 7469 noted-hostname)."""
        for rule in self.rules:
            for pattern in rule.hosts:
                if pattern.matches(self.hostname, include_subdomains=rule.include_subdomains):
                    return pattern.base
        return self.hostname

    @property
    def include_subdomains(self) -> bool:
        """Whether the failing rule covers subdomains."""
        from tlspin.hosts import Kind

        return any(
            r.include_subdomains or any(p.kind is not Kind.EXACT for p in r.hosts)
            for r in self.rules
        )

    @property
    def expires(self) -> dt.date | None:
        """The earliest ``expires`` date among the failing rules."""
        dates = [r.expires for r in self.rules if r.expires is not None]
        return min(dates) if dates else None

    def message(self) -> str:
        """A human-readable explanation in the manner of OkHttp's pinning failure."""
        return _failure_message(
            self.hostname, self.verified_chain, self.expected, self.reason, self.denied()
        )

    def denied(self) -> tuple[AnyPin, ...]:
        """The deny pins of the failing rules that the verified chain matched."""
        if self.reason != "denied":
            return ()
        spki = {spki_sha256(der) for der in self.verified_chain}
        whole = {hashlib.sha256(der).digest() for der in self.verified_chain}
        return tuple(
            pin
            for pin in dict.fromkeys(p for r in self.rules for p in r.deny)
            if pin.digest in (spki if isinstance(pin, Pin) else whole)
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of a check that did not raise.

    Attributes:
        hostname: canonical host name.
        pinned: False when no rule covers the host.
        digests: SPKI SHA-256 digests of the verified chain, leaf first.
        violations: report-only failures (an enforced failure raises instead).
    """

    hostname: str
    pinned: bool
    digests: tuple[bytes, ...] = ()
    violations: tuple[Violation, ...] = ()
    rules: tuple[PinRule, ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        """True when nothing failed, not even a report-only rule."""
        return not self.violations

    def matched(self) -> list[tuple[int, Pin]]:
        """``(depth, pin)`` for every pin that matched the chain; depth 0 is the leaf."""
        out = []
        pins = {p.digest: p for r in self.rules for p in r.pins if isinstance(p, Pin)}
        for depth, digest in enumerate(self.digests):
            if digest in pins:
                out.append((depth, pins[digest]))
        return out


class _Plan(NamedTuple):
    """Pins merged per mode for one host, so the hot path is a few set look-ups.

    A NamedTuple rather than a frozen dataclass: it is built on each new host and on every
    check of an expiring rule, and tuples are several times cheaper to construct.
    """

    host: str  # canonical: what verdicts, violations and errors name
    rules: tuple[PinRule, ...]
    has_expiry: bool
    enforce_spki: frozenset[bytes]
    enforce_cert: frozenset[bytes]
    report_spki: frozenset[bytes]
    report_cert: frozenset[bytes]
    deny_spki: frozenset[bytes]
    deny_cert: frozenset[bytes]
    enforce_rules: tuple[PinRule, ...]
    report_rules: tuple[PinRule, ...]
    simple: bool  # enforced SPKI pins only: no deny, report-only or certificate pins


def _plan(host: str, rules: Sequence[PinRule], today: dt.date | None, on_expiry: str) -> _Plan:
    enforce: list[PinRule] = []
    report: list[PinRule] = []
    for rule in rules:
        if today and on_expiry == "fail-open" and rule.expired(today):
            continue
        (enforce if rule.mode == "enforce" else report).append(rule)
    empty: frozenset[bytes] = frozenset()
    # Rules keep their pins' digests split by kind, so merging them is a few set unions.
    enforce_spki = empty.union(*(r._spki for r in enforce))
    enforce_cert = empty.union(*(r._cert for r in enforce))
    report_spki = empty.union(*(r._spki for r in report))
    report_cert = empty.union(*(r._cert for r in report))
    denied = [p for r in (*enforce, *report) for p in r.deny]
    deny_spki = frozenset(p.digest for p in denied if isinstance(p, Pin))
    deny_cert = frozenset(p.digest for p in denied if isinstance(p, CertificatePin))
    return _Plan(
        host=host,
        rules=tuple(rules),
        has_expiry=any(r.expires is not None for r in rules),
        enforce_spki=enforce_spki,
        enforce_cert=enforce_cert,
        report_spki=report_spki,
        report_cert=report_cert,
        deny_spki=deny_spki,
        deny_cert=deny_cert,
        enforce_rules=tuple(enforce),
        report_rules=tuple(report),
        simple=bool(enforce) and not report and not denied and not enforce_cert,
    )


_PLANS_ATTR = "_plans"


def _get_plan(policy: PinPolicy, hostname: str, today: dt.date | None) -> _Plan | str:
    """Return the plan for *hostname*, or its canonical form (a str) when no rule covers it."""
    # Plans are memoised on the (immutable) policy per host name as given, so repeated
    # connections skip canonicalisation and rule matching entirely. Every spelling of a host
    # gets its own entry, each built from the canonical name.
    cache: dict[str, object] = getattr(policy, _PLANS_ATTR)
    key = hostname
    plan = cache.get(key)
    if plan is None:
        if len(cache) > 10_000:
            cache.clear()
        rules = policy.rules_for(hostname)
        host = canonical_host(hostname)
        if not rules:
            cache[key] = host
            return host
        plan = _plan(host, rules, None, policy.on_expiry)
        cache[key] = plan
    if type(plan) is str:
        return plan
    assert isinstance(plan, _Plan)
    if plan.has_expiry and today is not None:
        expired = [r for r in plan.rules if r.expired(today)]
        if expired:
            _warn_expired(policy, expired)
            if policy.on_expiry == "fail-open":
                plan = _plan(plan.host, plan.rules, today, policy.on_expiry)
    return plan


def _warn_expired(policy: PinPolicy, rules: Sequence[PinRule]) -> None:
    # The policy owns this per-rule "warned once" set.
    warned = policy._expired_warned
    for rule in rules:
        if id(rule) in warned:
            continue
        warned.add(id(rule))
        action = (
            "is no longer enforced (fail open)"
            if policy.on_expiry == "fail-open"
            else "is still enforced (on_expiry='enforce')"
        )
        warnings.warn(
            f"the pin rule for {rule.hosts[0]} expired on {rule.expires} and {action}; "
            "ship updated pins",
            PinPolicyExpiredWarning,
            stacklevel=4,
        )


def check(
    policy: PinPolicy,
    hostname: str,
    chain: Sequence[bytes],
    *,
    port: int | None = None,
    served_chain: Sequence[bytes] | Callable[[], Sequence[bytes]] | None = None,
    now: dt.datetime | None = None,
) -> Verdict:
    """Check a verified chain against *policy*; see :meth:`tlspin.PinPolicy.check`.

    *served_chain* may be a callable, so that callers on the hot path only fetch it on failure.
    """
    cache: dict[str, object] = getattr(policy, _PLANS_ATTR)
    cached = cache.get(hostname)
    if type(cached) is _Plan and not cached.has_expiry:
        plan = cached  # the hot path: a known host whose rules never expire
    else:
        if type(cached) is str:
            return Verdict(cached, False)
        found = _get_plan(policy, hostname, (now or dt.datetime.now(dt.UTC)).date())
        if type(found) is str:
            return Verdict(found, False)
        assert isinstance(found, _Plan)
        plan = found
    cached_spki = _SPKI_CACHE.get
    try:
        digests = tuple([cached_spki(der) or spki_sha256(der) for der in chain])
    except InvalidPinError as exc:
        # OpenSSL verified a certificate whose key cannot be located (BER that only OpenSSL
        # reads): no pin can be shown to match, so this is a refusal, reported as one.
        from tlspin._unreadable import unreadable

        return unreadable(
            policy, plan, chain, port=port, served_chain=served_chain, now=now, error=exc
        )
    if plan.simple and not plan.enforce_spki.isdisjoint(digests):
        return Verdict(plan.host, True, digests, (), plan.rules)
    cert_digests: tuple[bytes, ...] = ()
    if plan.enforce_cert or plan.report_cert or plan.deny_cert:
        cert_digests = tuple(hashlib.sha256(der).digest() for der in chain)

    failures: list[tuple[Mode, str, tuple[PinRule, ...]]] = []
    denied = (plan.deny_spki and not plan.deny_spki.isdisjoint(digests)) or (
        plan.deny_cert and not plan.deny_cert.isdisjoint(cert_digests)
    )
    if plan.enforce_rules:
        if denied and _rules_deny(plan.enforce_rules, digests, cert_digests):
            failures.append(("enforce", "denied", plan.enforce_rules))
        elif plan.enforce_spki.isdisjoint(digests) and plan.enforce_cert.isdisjoint(cert_digests):
            failures.append(("enforce", "mismatch", plan.enforce_rules))
    if plan.report_rules:
        if denied and _rules_deny(plan.report_rules, digests, cert_digests):
            failures.append(("report", "denied", plan.report_rules))
        elif plan.report_spki.isdisjoint(digests) and plan.report_cert.isdisjoint(cert_digests):
            failures.append(("report", "mismatch", plan.report_rules))
    if not failures:
        return Verdict(plan.host, True, digests, (), plan.rules)
    return _fail(
        policy,
        plan.host,
        chain,
        digests=digests,
        port=port,
        served_chain=served_chain,
        now=now,
        failures=failures,
        plan=plan,
    )


def _rules_deny(
    rules: Sequence[PinRule], digests: Sequence[bytes], cert_digests: Sequence[bytes]
) -> bool:
    for rule in rules:
        for pin in rule.deny:
            pool = digests if isinstance(pin, Pin) else cert_digests
            if pin.digest in pool:
                return True
    return False


def _fail(
    policy: PinPolicy,
    hostname: str,
    chain: Sequence[bytes],
    *,
    digests: tuple[bytes, ...],
    port: int | None,
    served_chain: Sequence[bytes] | Callable[[], Sequence[bytes]] | None,
    now: dt.datetime | None,
    failures: list[tuple[Mode, str, tuple[PinRule, ...]]],
    plan: _Plan,
) -> Verdict:
    when = now or dt.datetime.now(dt.UTC)
    served = _served(chain, served_chain)
    violations = []
    for mode, reason, rules in failures:
        expected = tuple(dict.fromkeys(p for r in rules for p in r.pins))
        violations.append(
            Violation(
                hostname=hostname,
                port=port,
                time=when,
                served_chain=served,
                verified_chain=tuple(chain),
                expected=expected,
                mode=mode,
                rules=rules,
                reason=reason,
            )
        )
    for violation in violations:
        notify(policy, violation)
    enforced = [v for v in violations if v.mode == "enforce"]
    if enforced:
        v = enforced[0]
        raise PinMismatchError(
            v.message(),
            hostname=hostname,
            chain=describe_chain(chain),
            expected=[str(p) for p in v.expected],
            reason=v.reason,
        )
    return Verdict(hostname, True, digests, tuple(violations), plan.rules)


def _served(
    chain: Sequence[bytes],
    served_chain: Sequence[bytes] | Callable[[], Sequence[bytes]] | None,
) -> tuple[bytes, ...]:
    """The chain the server sent (a callable is asked only now), else the verified *chain*."""
    if callable(served_chain):
        try:
            served_chain = served_chain()
        except Exception:  # noqa: BLE001 - the served chain is informational only
            served_chain = None
    return tuple(served_chain if served_chain is not None else chain)


def notify(policy: PinPolicy, violation: Violation) -> None:
    """Log *violation* and hand it to the policy's observers.

    An observer that raises an :class:`Exception` is logged and skipped. ``KeyboardInterrupt``
    and ``SystemExit`` (any ``BaseException`` that is not an ``Exception``) propagate: they ask
    the program to stop, and swallowing them here would hide that. The connection then fails
    with that exception, since its check did not finish; a pinned socket runs the check again
    on its next read or write.
    """
    log.warning(
        "pin %s for %s (%s mode)%s",
        "violation" if violation.reason != "denied" else "deny-list hit",
        violation.hostname,
        violation.mode,
        "; connection refused" if violation.mode == "enforce" else "; connection allowed",
    )
    for observer in policy.observers:
        try:
            observer(violation)
        except Exception:  # an observer must never affect the connection
            log.exception("a tlspin violation observer raised; ignored")


def check_resumed(
    policy: PinPolicy,
    hostname: str,
    leaf_der: bytes,
    seen_leaves: set[tuple[str, bytes]],
    *,
    port: int | None = None,
) -> Verdict:
    """Decide a resumed TLS session, which has no verified chain.

    Accept it only if the leaf's own key (or certificate) is pinned for the host, or if this leaf
    passed a full check for this host earlier in the process (*seen_leaves*, which holds
    ``(canonical host, leaf DER)`` pairs, see :func:`tlspin._state.remember`). Otherwise refuse:
    fail closed.

    Raises:
        PinMismatchError: the leaf is pinned-against by a deny pin.
        PinningUnavailableError: the leaf cannot be vouched for, or cannot be read.
    """
    plan = _get_plan(policy, hostname, dt.datetime.now(dt.UTC).date())
    if type(plan) is str:
        return Verdict(plan, False)
    assert isinstance(plan, _Plan)
    host = plan.host
    try:
        digest = spki_sha256(leaf_der)
    except InvalidPinError as exc:
        from tlspin._unreadable import unreadable

        return unreadable(
            policy, plan, [leaf_der], port=port, served_chain=None, now=None, error=exc
        )
    if (host, leaf_der) in seen_leaves:
        # This leaf passed the full check for this host (by any spelling: the set holds
        # canonical names), deny pins included, on its whole verified chain and under this same
        # policy (the caller keeps one set per policy). Checking the lone leaf again would
        # refuse a chain whose pin is on a CA certificate.
        return Verdict(host, True, (digest,), (), plan.rules)
    cert_digest = hashlib.sha256(leaf_der).digest()
    pinned = (digest in plan.enforce_spki or cert_digest in plan.enforce_cert) or (
        not plan.enforce_rules and (digest in plan.report_spki or cert_digest in plan.report_cert)
    )
    if pinned:
        return check(policy, hostname, [leaf_der], port=port)
    if not plan.enforce_rules:
        # Only report-only rules: never refuse, but report that the chain could not be checked.
        violation = Violation(
            host, port, dt.datetime.now(dt.UTC), (leaf_der,), (leaf_der,),
            tuple(p for r in plan.rules for p in r.pins), "report", plan.rules, "resumption",
        )
        notify(policy, violation)
        return Verdict(host, True, (digest,), (violation,), plan.rules)
    violation = Violation(
        host, port, dt.datetime.now(dt.UTC), (leaf_der,), (leaf_der,),
        tuple(p for r in plan.enforce_rules for p in r.pins), "enforce", plan.enforce_rules,
        "resumption",
    )
    notify(policy, violation)
    msg = (
        f"refused a resumed TLS session to {host}: a resumed session has no verified chain, "
        "and its leaf key is neither pinned itself nor known from an earlier full check in this "
        "process (pin the leaf key as well, or let the client make a full handshake)"
    )
    raise PinningUnavailableError(
        msg, hostname=host, chain=describe_chain([leaf_der]),
        expected=[str(p) for p in violation.expected], reason="resumption",
    )


def describe_chain(chain: Sequence[bytes]) -> list[tuple[str, str]]:
    """``(subject, "sha256/…")`` for each DER certificate, leaf first."""
    from cryptography import x509

    out = []
    for der in chain:
        try:
            pin = str(Pin(spki_sha256(der)))
        except InvalidPinError:
            out.append(("<unreadable certificate>", "(no pin: its key cannot be located)"))
            continue
        try:
            subject = x509.load_der_x509_certificate(der).subject.rfc4514_string()
        except ValueError:
            subject = "<unparsable certificate>"
        out.append((subject, pin))
    return out


def _failure_message(
    hostname: str,
    chain: Sequence[bytes],
    expected: Sequence[AnyPin],
    reason: str,
    denied: Sequence[AnyPin] = (),
) -> str:
    lines = ["Certificate pinning failure!"]
    if reason == "denied":
        lines[0] = "Certificate pinning failure! A denied key is in the verified chain."
        lines.append("  Denied keys found:")
        lines += [f"    {pin}" for pin in denied]
    lines.append("  Peer certificate chain (verified):")
    for subject, pin in describe_chain(chain):
        lines.append(f"    {pin}: {subject}")
    lines.append(f"  Pinned certificates for {hostname}:")
    for expected_pin in expected:
        lines.append(f"    {expected_pin}")
    return "\n".join(lines)
