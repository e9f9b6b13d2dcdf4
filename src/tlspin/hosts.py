"""Host names and host patterns: canonical forms and OkHttp-compatible matching.

Patterns, exactly as OkHttp's ``CertificatePinner``:

* ``api.example.com`` matches that host only;
* ``*.example.com`` matches exactly one more label (``a.example.com``, not ``example.com`` nor
  ``a.b.example.com``);
* ``**.example.com`` matches zero or more labels (``example.com``, ``a.b.example.com``).

Patterns and host names are canonicalised the same way: lower case, IDNs to punycode (IDNA 2008
with UTS #46 mapping), one trailing dot removed. IP addresses are allowed as exact patterns only.

An IPv6 zone ID (``fe80::1%eth0``, ``::1%1``; ``%25eth0`` as URLs spell it) names the link an
address is reached on, not another host: it is dropped from host names, so the address's pins
apply on every link, and refused in patterns, where it would suggest per-link pins that the
lookup cannot tell apart.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import Enum

from tlspin.exceptions import PolicyError

__all__ = ["HostPattern", "canonical_host", "is_public_suffix"]

_LDH_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


class Kind(Enum):
    """How a pattern matches."""

    EXACT = "exact"
    ONE_LABEL = "one-label"
    ANY_DEPTH = "any-depth"


# RFC 6874's characters for a zone ID (an interface name or index), at most 64 of them.
_ZONE_ID = re.compile(r"[A-Za-z0-9._~-]{1,64}")


def _canonical_ip(text: str) -> str | None:
    """The canonical form of an IP literal (brackets and zone ID dropped), None for a name.

    Raises:
        PolicyError: an address carries a zone ID that is not an interface name or index.
    """
    candidate = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    address, percent, zone = candidate.partition("%")
    if ":" not in address and address.strip("0123456789."):
        # Neither IPv6 (which has a colon) nor IPv4 (ASCII digits and dots only): a name, as
        # ipaddress would also find, without importing it (start-up time of `tlspin run`).
        return None
    import ipaddress

    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if percent:
        # The stdlib passes "::1%1" on as the TLS server name, so a lookup that kept the zone
        # would find no rule for "::1" and check no pins; a zone is also attacker-chosen text
        # (reports), so only an interface name or index is accepted.
        if not isinstance(ip, ipaddress.IPv6Address):
            raise PolicyError(f"host name {text!r} has a zone ID, which only IPv6 addresses take")
        if not _ZONE_ID.fullmatch(zone):
            raise PolicyError(
                f"host name {text!r} has an invalid IPv6 zone ID: expected an interface name or "
                "index (letters, digits, '.', '_', '~' or '-', at most 64), found "
                f"{zone[:80]!r}"
            )
    # "::ffff:127.0.0.1" reaches the IPv4 host on a dual-stack socket: same host, same pins.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.compressed
    return ip.compressed


# The last label of a name that resolvers and OpenSSL may read as an IPv4 address: all digits,
# or hex (as the WHATWG URL standard's "ends in a number" test). See canonical_host().
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")


@functools.lru_cache(maxsize=4096)
def canonical_host(host: str) -> str:
    """Return the canonical form of a host name or IP address.

    Lower case, IDN to A-labels (punycode), one trailing dot removed, IPv6 compressed without
    brackets or zone ID (``fe80::1%eth0`` is ``fe80::1``).

    Raises:
        PolicyError: the name is empty or not a valid host name.
    """
    if not isinstance(host, str):
        raise PolicyError(f"a host name must be a string, found {type(host).__name__}")
    name = host.strip()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise PolicyError(f"host name {host!r} is empty")
    ip = _canonical_ip(name)
    if ip is not None:
        return ip
    if name.isascii():
        name = name.lower()
    else:
        import idna

        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise PolicyError(f"host name {host!r} is not a valid IDN: {exc}") from None
        ip = _canonical_ip(name)  # full-width digits and dots map to an IP address
        if ip is not None:
            return ip
    if len(name) > 253:
        raise PolicyError(f"host name {host!r} is longer than 253 characters")
    labels = name.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        # Not a canonical IP address, yet numeric: OpenSSL verifies "127.0.0.01" as the IP
        # 127.0.0.1 and the resolver connects "127.1" or "0x7f000001" to it, while a name
        # lookup would find no pins for it. No DNS name ends in a number, so refuse it.
        raise PolicyError(
            f"host name {host!r} ends in a number but is not an IP address in canonical form "
            "(expected e.g. '127.0.0.1' or '::1'; leading zeros, hex and short forms are refused)"
        )
    for label in labels:
        if not _LDH_LABEL.fullmatch(label):
            raise PolicyError(
                f"host name {host!r} has an invalid label {label!r}: expected letters, digits and "
                "inner hyphens, 1 to 63 characters"
            )
    return name


@functools.lru_cache(maxsize=1)
def _psl() -> object:
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


def is_public_suffix(domain: str) -> bool:
    """Return True if *domain* is a public suffix (``com``, ``co.uk``, ``github.io``…)."""
    psl = _psl()
    return bool(psl.is_public(domain))  # type: ignore[attr-defined]


def _idna2003(name: str) -> str | None:
    """The name as the stdlib's ``idna`` codec encodes it, when it differs in kind from ASCII."""
    if name.isascii():
        return None
    try:
        legacy = name.encode("idna").decode("ascii")
    except UnicodeError:
        return None  # the stdlib cannot connect to it at all
    try:
        return canonical_host(legacy)
    except PolicyError:
        return None


@dataclass(frozen=True, slots=True)
class HostPattern:
    """A parsed host pattern. Build with :meth:`parse`.

    Attributes:
        text: the canonical pattern, e.g. ``**.example.com``.
        kind: exact, one label, or any depth.
        base: the domain under the wildcard (the host itself for exact patterns).
    """

    text: str
    kind: Kind
    base: str

    @classmethod
    def parse(
        cls,
        pattern: str | HostPattern,
        *,
        include_subdomains: bool = False,
        public_suffix_guard: bool = True,
    ) -> HostPattern:
        """Parse and canonicalise *pattern*.

        With *include_subdomains* an exact host behaves like ``**.host``.

        A wildcard (or *include_subdomains*) always needs a base with a dot. With
        *public_suffix_guard* (the default, for policies people write) its base must also not
        be a public suffix (``*.co.uk``, ``**.github.io``), by the Public Suffix List of the
        installed ``publicsuffixlist``. Only the bundle verifier turns the guard off: its verdict
        must not depend on a list that differs between platforms and versions (the signer
        applies the guard instead, docs/bundle-format.md §9).

        Raises:
            PolicyError: the pattern is malformed, or its wildcard covers a public suffix.
        """
        if isinstance(pattern, HostPattern):
            pattern = pattern.text
        if not isinstance(pattern, str):
            raise PolicyError(f"a host pattern must be a string, found {type(pattern).__name__}")
        raw = pattern.strip()
        if raw.startswith("**."):
            kind, rest = Kind.ANY_DEPTH, raw[3:]
        elif raw.startswith("*."):
            kind, rest = Kind.ONE_LABEL, raw[2:]
        else:
            kind, rest = Kind.EXACT, raw
        if "*" in rest:
            raise PolicyError(
                f"host pattern {pattern!r} is invalid: a wildcard is allowed only as the whole "
                "leftmost label ('*.example.com' or '**.example.com')"
            )
        try:
            base = canonical_host(rest)
        except PolicyError as exc:
            raise PolicyError(f"host pattern {pattern!r} is invalid: {exc}") from None
        if "%" in rest:  # only an IPv6 zone ID gets a '%' through canonical_host()
            raise PolicyError(
                f"host pattern {pattern!r} has an IPv6 zone ID: host names are matched without "
                f"one (an address has the same pins on every link), so write {base!r}"
            )
        legacy = _idna2003(rest)
        if legacy is not None and legacy != base:
            raise PolicyError(
                f"host pattern {pattern!r} names two different hosts: {base!r} under IDNA 2008 "
                f"(idna, urllib3, httpx) and {legacy!r} under IDNA 2003 (Python's ssl and socket "
                "modules, e.g. http.client and asyncio); list the A-label form of each host meant"
            )
        is_ip = _canonical_ip(base) is not None
        if is_ip and (kind is not Kind.EXACT or include_subdomains):
            raise PolicyError(
                f"host pattern {pattern!r} is invalid: IP addresses take no wildcard or subdomains"
            )
        effective = Kind.ANY_DEPTH if include_subdomains and kind is Kind.EXACT else kind
        prefix = {Kind.EXACT: "", Kind.ONE_LABEL: "*.", Kind.ANY_DEPTH: "**."}[kind]
        if effective is not Kind.EXACT and (
            "." not in base or (public_suffix_guard and is_public_suffix(base))
        ):
            # The same pattern one label further down, under a domain someone can register.
            suggestion = f"{prefix}example.{base}"
            raise PolicyError(
                f"host pattern {pattern!r} covers every name under the public suffix {base!r}; "
                f"pin a registrable domain under it instead, such as {suggestion!r}"
            )
        return cls(text=prefix + base, kind=kind, base=base)

    def matches(self, host: str, *, include_subdomains: bool = False) -> bool:
        """Return True if canonical *host* is covered by this pattern."""
        base = self.base
        kind = self.kind
        if include_subdomains and kind is Kind.EXACT:
            kind = Kind.ANY_DEPTH
        if kind is Kind.EXACT:
            return host == base
        if kind is Kind.ANY_DEPTH:
            return host == base or (
                host.endswith(base) and host[-len(base) - 1 : -len(base)] == "."
            )
        # One label: "<label>.<base>" with a non-empty label that has no dot.
        if not host.endswith(base) or len(host) < len(base) + 2:
            return False
        head = host[: -len(base)]
        return head[-1] == "." and "." not in head[:-1] and len(head) > 1

    def __str__(self) -> str:
        return self.text
