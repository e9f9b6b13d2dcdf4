"""The bundle profile of the policy schema: every host, pin and date in its one canonical form.

A policy *file* is forgiving (``API.Example.com.``, ``pin-sha256="…"``, IDNs, ``20270101``): it is
read once, by tlspin. A *bundle* is read by verifiers on every platform, which must reach the
same verdict, so its policy may hold only what ``tlspin bundle sign`` writes: the canonical text
of each value (docs/bundle-format.md §9). Then a verifier needs no IDNA tables and no list of
pin notations to agree with this one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from tlspin.bundles.errors import BundleError
from tlspin.hosts import HostPattern
from tlspin.pins import parse_any

__all__ = ["check_canonical_policy"]


def check_canonical_policy(data: Mapping[str, Any]) -> None:
    """Refuse hosts, pins and dates that are not in canonical form.

    *data* must already have passed :func:`tlspin.policyfile.from_data` (types are known).

    Raises:
        BundleError: ``reason="policy"``, naming the rule and the value.
    """
    for index, rule in enumerate(data.get("rule", [])):
        where = f"rule #{index + 1}"
        if "ports" in rule:
            # A policy file's ports tell tlspin's tools where to connect; the bundle schema has
            # no such member (§9), and `tlspin bundle sign` leaves it out.
            raise BundleError(
                f"the bundle's policy is invalid: {where}: unknown member 'ports' (a bundle rule "
                "has hosts, pins, include_subdomains, expires, mode, deny and report_uri only)",
                reason="policy",
            )
        hosts = rule["hosts"]
        for host in [hosts] if isinstance(hosts, str) else hosts:
            if "%" in host:
                # An IPv6 zone ("fe80::1%eth0") names an interface of one machine; no platform
                # pins by it, and verifiers should not have to parse it.
                _same(host, host.partition("%")[0], where, "host pattern")
            canonical = HostPattern.parse(host, public_suffix_guard=False).text
            _same(host, canonical, where, "host pattern")
        for key in ("pins", "deny"):
            for item in rule.get(key, []):
                pin = item["pin"] if isinstance(item, Mapping) else item
                _same(pin, str(parse_any(pin)), where, "pin")
                if isinstance(item, Mapping):
                    _date(item.get("not_after"), where)
        _date(rule.get("expires"), where)


def _date(value: Any, where: str) -> None:
    if isinstance(value, str):
        _same(value, dt.date.fromisoformat(value).isoformat(), where, "date")


def _same(found: str, canonical: str, where: str, what: str) -> None:
    if found != canonical:
        raise BundleError(
            f"the bundle's policy is invalid: {where}: {what} {found!r:.80} is not in canonical "
            f"form; expected {canonical!r:.80} (a bundle holds canonical values only, as "
            "`tlspin bundle sign` writes them)",
            reason="policy",
        )
