"""curl's ``--pinnedpubkey`` value: ``sha256//<b64>;sha256//<b64>``, export only.

curl compares the pins with the *leaf* key only, so CA pins never match there: they are reported,
and a set of CA pins alone is an error. The value is meant for use now, so an expired rule is an
error while a future ``expires`` is not.
"""

from __future__ import annotations

from tlspin.formats import ExportOptions, Problems
from tlspin.formats._common import select_host, spki_pins
from tlspin.pins import Pin
from tlspin.policy import PinPolicy

_CA_ROLES = ("root", "intermediate")


def export(policy: PinPolicy, fmt: str, options: ExportOptions, problems: Problems) -> str:
    """Write the ``--pinnedpubkey`` value for one host (``--host``, or the policy's only domain)."""
    chosen = select_host(policy, options, problems, "curl")
    if chosen is None:
        return ""
    host, rules = chosen
    today = options.date
    pins: list[Pin] = []
    leafish = 0
    for rule in rules:
        index = policy.rules.index(rule)
        if rule.expired(today):
            problems.error(
                f"the rule for {host} expired on {rule.expires}; it is not enforced today",
                rule=index,
            )
        if rule.mode == "report":
            problems.error(
                "curl has no report-only mode; this report-only rule would be enforced", rule=index
            )
        if rule.deny:
            problems.error("curl has no deny list; the denied keys are not exported", rule=index)
        if rule.report_uri is not None:
            problems.warning(
                f"curl cannot send reports; report_uri {rule.report_uri} is not exported",
                rule=index,
            )
        for pin in spki_pins(rule, index, problems, "curl"):
            if pin in pins:
                continue
            info = rule.info(pin)
            if info is not None and info.role in _CA_ROLES:
                problems.warning(
                    f"{pin} has role {info.role}, but curl checks only the leaf key; "
                    "it never matches",
                    rule=index,
                )
            else:
                leafish += 1
            pins.append(pin)
    if pins and not leafish:
        problems.error(
            f"every pin for {host} is a CA key; curl compares the leaf key only and "
            "would refuse every connection"
        )
    if not pins:
        problems.error(f"no SPKI pin for {host}", forceable=False)
    return ";".join(p.curl for p in pins) + "\n"
