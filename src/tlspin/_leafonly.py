"""The check for a connection whose chain OpenSSL never verified (``CERT_NONE``).

Under :func:`tlspin.inject`, programs that switch CA verification off (smtplib's default
``starttls()``, asyncpg ``sslmode=require``/``prefer``, Scrapy's default) still connect to pinned
hosts. What such a connection proves:

* the leaf: the server signed the handshake with the leaf's key, so a pin of the leaf's own key
  (or of that exact certificate) is meaningful;
* nothing else. The rest of the "verified" chain that OpenSSL builds is not verified: a forged
  leaf that names the genuine intermediate as its issuer, served with that intermediate,
  yields ``[forged leaf, genuine intermediate]``, so an intermediate or root pin would pass it.

So the connection passes only on a match of the leaf's own key or certificate. Deny pins are
matched against everything the server sent as well: a denied key refuses even where it proves
nothing, since refusing more cannot help an attacker. Report-only rules report instead of
refusing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Sequence

from tlspin._unreadable import unreadable
from tlspin.exceptions import InvalidPinError, PinMismatchError, PinningUnavailableError
from tlspin.pins import Pin, spki_sha256
from tlspin.policy import PinPolicy, PinRule
from tlspin.verify import Verdict, Violation, _get_plan, _Plan, describe_chain, notify

__all__ = ["check_unverified"]

_FIX = (
    "To fix it, give this client a verifying context (for example ssl.create_default_context()), "
    "or add the server's leaf key to the pins."
)


def _matches(rules: Sequence[PinRule], spki: bytes, cert: bytes) -> bool:
    return any(p.digest == (spki if isinstance(p, Pin) else cert) for r in rules for p in r.pins)


def _denies(rules: Sequence[PinRule], spkis: set[bytes], certs: set[bytes]) -> bool:
    return any(
        p.digest in (spkis if isinstance(p, Pin) else certs) for r in rules for p in r.deny
    )


def check_unverified(
    policy: PinPolicy,
    hostname: str,
    leaf_der: bytes,
    *,
    port: int | None = None,
    served_chain: Callable[[], Sequence[bytes]],
    now: dt.datetime | None = None,
) -> Verdict:
    """Decide a connection made without CA verification: only the leaf's own key can vouch.

    Raises:
        PinMismatchError: a deny pin of an enforced rule matched what the server sent.
        PinningUnavailableError: no pin of an enforced rule matched the leaf itself, or the
            leaf's key cannot be read (reason ``"unreadable-certificate"``).
    """
    when = now or dt.datetime.now(dt.UTC)
    found = _get_plan(policy, hostname, when.date())
    if isinstance(found, str):
        return Verdict(found, False)
    plan: _Plan = found
    try:
        leaf_spki = spki_sha256(leaf_der)
    except InvalidPinError as exc:
        # Nobody verified this certificate: it may be anything OpenSSL could parse. Refused
        # (enforced rules) and reported like any failed check.
        return unreadable(
            policy, plan, [leaf_der], port=port, served_chain=served_chain, now=when, error=exc
        )
    leaf_cert = hashlib.sha256(leaf_der).digest()
    try:
        served = tuple(served_chain())
    except Exception:  # noqa: BLE001 - the served chain only adds deny matches
        served = ()
    spkis = {leaf_spki}
    certs = {leaf_cert}
    for der in served:
        certs.add(hashlib.sha256(der).digest())
        try:
            spkis.add(spki_sha256(der))
        except InvalidPinError:
            continue  # an unreadable extra certificate proves nothing either way

    refusal: PinMismatchError | PinningUnavailableError | None = None
    violations: list[Violation] = []
    for mode, rules in (("enforce", plan.enforce_rules), ("report", plan.report_rules)):
        if not rules:
            continue
        if _denies(rules, spkis, certs):
            reason = "denied"
        elif _matches(rules, leaf_spki, leaf_cert):
            continue
        else:
            reason = "unverified-chain"
        expected = tuple(dict.fromkeys(p for r in rules for p in r.pins))
        violation = Violation(
            plan.host, port, when, served or (leaf_der,), (leaf_der,), expected,
            mode, tuple(rules), reason,  # type: ignore[arg-type]
        )
        violations.append(violation)
        if mode == "enforce":
            refusal = _refusal(plan.host, leaf_der, violation, _denied(rules, spkis, certs))
    for violation in violations:
        notify(policy, violation)
    if refusal is not None:
        raise refusal
    return Verdict(plan.host, True, (leaf_spki,), tuple(violations), plan.rules)


def _denied(rules: Sequence[PinRule], spkis: set[bytes], certs: set[bytes]) -> list[str]:
    pins = dict.fromkeys(p for r in rules for p in r.deny)
    return [str(p) for p in pins if p.digest in (spkis if isinstance(p, Pin) else certs)]


def _refusal(
    host: str, leaf_der: bytes, violation: Violation, denied: list[str]
) -> PinMismatchError | PinningUnavailableError:
    expected = [str(p) for p in violation.expected]
    leaf = describe_chain([leaf_der])
    lines = [
        f"refused the connection to {host}: certificate verification is off in this client "
        "(the connection was made with verify_mode=CERT_NONE), so the chain the server sent "
        "proves nothing beyond its leaf, and only a pin of the leaf's own key can vouch for it."
    ]
    if violation.reason == "denied":
        lines[0] = (
            f"refused the connection to {host}: a denied key is in the chain the server sent "
            "(certificate verification is off in this client, so that chain was not verified)."
        )
        lines.append("  Denied keys found:")
        lines += [f"    {pin}" for pin in denied]
    lines.append(f"  Server's leaf key: {leaf[0][1]}: {leaf[0][0]}")
    lines.append(f"  Pinned for {host} (a leaf key must be among them):")
    lines += [f"    {pin}" for pin in expected]
    lines.append(f"  {_FIX}")
    message = "\n".join(lines)
    if violation.reason == "denied":
        return PinMismatchError(
            message, hostname=host, chain=leaf, expected=expected, reason="denied"
        )
    return PinningUnavailableError(
        message, hostname=host, chain=leaf, expected=expected, reason="unverified-chain"
    )
