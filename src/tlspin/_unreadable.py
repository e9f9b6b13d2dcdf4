"""The refusal for a chain holding a certificate whose key tlspin cannot locate.

OpenSSL verifies certificates in BER encodings that tlspin's DER reader does not follow (an
indefinite length, say) when a trusted CA signed them; no pin can be shown to match such a
chain, so it is refused, and reported like any failed check (reason
``"unreadable-certificate"``). Used by :func:`tlspin.verify.check`,
:func:`tlspin.verify.check_resumed` and the leaf-only rule (:mod:`tlspin._leafonly`), which
Twisted's check shares.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from tlspin.exceptions import InvalidPinError, PinningUnavailableError
from tlspin.verify import Verdict, Violation, _Plan, _served, describe_chain, notify

if TYPE_CHECKING:
    from tlspin.policy import Mode, PinPolicy, PinRule

__all__ = ["unreadable"]


def unreadable(
    policy: PinPolicy,
    plan: _Plan,
    chain: Sequence[bytes],
    *,
    port: int | None,
    served_chain: Sequence[bytes] | Callable[[], Sequence[bytes]] | None,
    now: dt.datetime | None,
    error: InvalidPinError,
) -> Verdict:
    """Decide a chain holding a certificate whose key cannot be read: refuse, and report it.

    Every failing rule gets a :class:`Violation` with reason ``"unreadable-certificate"``;
    report-only rules let the connection go ahead.

    Raises:
        PinningUnavailableError: an enforced rule covers the host (reason
            ``"unreadable-certificate"``).
    """
    when = now or dt.datetime.now(dt.UTC)
    served = _served(chain, served_chain)
    failing: tuple[tuple[Mode, tuple[PinRule, ...]], ...] = (
        ("enforce", plan.enforce_rules),
        ("report", plan.report_rules),
    )
    violations = [
        Violation(
            plan.host, port, when, served, tuple(chain),
            tuple(dict.fromkeys(p for r in rules for p in r.pins)), mode, rules,
            "unreadable-certificate",
        )
        for mode, rules in failing
        if rules
    ]
    for violation in violations:
        notify(policy, violation)
    if plan.enforce_rules:
        expected = [str(p) for p in violations[0].expected]
        msg = (
            f"refused the connection to {plan.host}: a certificate in its chain cannot be read "
            f"({error}), so its key cannot be compared with the pins for {plan.host}. OpenSSL "
            "accepted it, but tlspin refuses what it cannot check."
        )
        raise PinningUnavailableError(
            msg, hostname=plan.host, chain=describe_chain(chain), expected=expected,
            reason="unreadable-certificate",
        )
    return Verdict(plan.host, True, (), tuple(violations), plan.rules)
