"""Pin rules and the immutable pin policy.

A :class:`PinRule` binds host patterns to pins. A :class:`PinPolicy` is an immutable set of rules;
when several rules match a host, any pin from any of them is accepted (the union, as OkHttp does).

This module is the data the rest of the core builds on: :mod:`tlspin.verify` checks chains
against a policy and :mod:`tlspin.policyfile` reads and writes policy documents, and both import
this module. :meth:`PinPolicy.check`, :meth:`PinPolicy.load` and :meth:`PinPolicy.loads` are
the public doors to them, imported when first called; tlspin itself calls
:func:`tlspin.verify.check` and :mod:`tlspin.policyfile` directly.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from tlspin.exceptions import PolicyError, SinglePinWarning
from tlspin.hosts import HostPattern, canonical_host
from tlspin.pins import CertificatePin, Pin, parse_any

if TYPE_CHECKING:
    from pathlib import Path

    from tlspin.verify import Verdict, Violation

__all__ = ["PinInfo", "PinPolicy", "PinRule"]

Mode = Literal["enforce", "report"]
OnExpiry = Literal["fail-open", "enforce"]
Role = Literal["leaf", "intermediate", "root", "backup"]
AnyPin = Pin | CertificatePin
Observer = Callable[["Violation"], object]

_ROLES = ("leaf", "intermediate", "root", "backup")


@dataclass(frozen=True, slots=True)
class PinInfo:
    """Where a pin came from: its role, a free-text note and the key's certificate expiry."""

    role: Role | None = None
    note: str | None = None
    not_after: dt.date | None = None

    def __post_init__(self) -> None:
        if self.role is not None and self.role not in _ROLES:
            msg = f"pin role {self.role!r} is invalid; expected one of {_ROLES}"
            raise PolicyError(msg)
        if self.not_after is not None and not isinstance(self.not_after, dt.date):
            msg = f"pin not_after must be a date, found {self.not_after!r}"
            raise PolicyError(msg)


def _to_date(value: object, what: str) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    msg = f"{what} must be a date (YYYY-MM-DD), found {value!r}"
    raise PolicyError(msg)


def _port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        msg = f"a port must be an integer from 1 to 65535, found {value!r}"
        raise PolicyError(msg)
    return value


@dataclass(frozen=True, slots=True)
class PinRule:
    """Pins for one or more host patterns.

    Args:
        hosts: host patterns (``api.example.com``, ``*.example.com``, ``**.example.com``).
        pins: the accepted pins; any one in the verified chain passes.
        include_subdomains: make exact hosts cover all their subdomains (same as ``**.``).
        expires: after this date the rule is not enforced (see ``PinPolicy(on_expiry=…)``).
        mode: ``"enforce"`` refuses failures; ``"report"`` only reports them.
        deny: keys that must never appear in the chain (e.g. a compromised intermediate).
        report_uri: where a :class:`tlspin.Reporter` sends this rule's violations.
        pin_info: optional metadata per pin (role, note, not_after).
        ports: the TCP ports the rule's hosts serve TLS on, for the tools that connect to them
            (``tlspin check``, ``lint --live``, ``monitor``); empty means 443. Pinning itself
            is per host name, as on every platform, so the check never looks at them.
        public_suffix_guard: refuse a wildcard over a public suffix (see
            :meth:`tlspin.hosts.HostPattern.parse`); only the bundle verifier turns it off.

    Raises:
        PolicyError: a host pattern, pin or option is invalid.
    """

    hosts: tuple[HostPattern, ...]
    pins: tuple[AnyPin, ...]
    include_subdomains: bool = False
    expires: dt.date | None = None
    mode: Mode = "enforce"
    deny: tuple[AnyPin, ...] = ()
    report_uri: str | None = None
    pin_info: tuple[tuple[AnyPin, PinInfo], ...] = ()
    ports: tuple[int, ...] = ()
    _spki: frozenset[bytes] = field(default=frozenset(), repr=False, compare=False)
    _cert: frozenset[bytes] = field(default=frozenset(), repr=False, compare=False)

    def __init__(
        self,
        hosts: str | Iterable[str | HostPattern],
        pins: Iterable[str | AnyPin],
        *,
        include_subdomains: bool = False,
        expires: dt.date | str | None = None,
        mode: Mode = "enforce",
        deny: Iterable[str | AnyPin] = (),
        report_uri: str | None = None,
        pin_info: Mapping[str | AnyPin, PinInfo] | Iterable[tuple[AnyPin, PinInfo]] | None = None,
        ports: Iterable[int] | int = (),
        public_suffix_guard: bool = True,
    ) -> None:
        if isinstance(hosts, str):
            hosts = (hosts,)
        if mode not in ("enforce", "report"):
            msg = f"rule mode must be 'enforce' or 'report', found {mode!r}"
            raise PolicyError(msg)
        if not isinstance(include_subdomains, bool):
            msg = f"include_subdomains must be true or false, found {include_subdomains!r}"
            raise PolicyError(msg)
        patterns = tuple(
            dict.fromkeys(
                HostPattern.parse(
                    h,
                    include_subdomains=include_subdomains,
                    public_suffix_guard=public_suffix_guard,
                )
                for h in hosts
            )
        )
        if not patterns:
            msg = "a rule needs at least one host pattern, found none"
            raise PolicyError(msg)
        if isinstance(pins, str):
            pins = (pins,)
        parsed = tuple(dict.fromkeys(parse_any(p) for p in pins))
        if not parsed:
            msg = f"the rule for {patterns[0]} has no pins; expected at least one"
            raise PolicyError(msg)
        if isinstance(deny, str):
            deny = (deny,)
        denied = tuple(dict.fromkeys(parse_any(p) for p in deny))
        if report_uri is not None and not (
            isinstance(report_uri, str) and report_uri.startswith(("https://", "http://"))
        ):
            msg = f"report_uri must be an http(s) URL, found {report_uri!r}"
            raise PolicyError(msg)
        if report_uri is not None and any(ch <= " " or "\x7f" <= ch <= "\x9f" for ch in report_uri):
            # Exports write it into headers, XML and plists, where a newline or control
            # character would end a header line or break the document. The same set as the
            # bundle format's (docs/bundle-format.md §9), so every verifier agrees: space, C0
            # and C1 controls, DEL.
            msg = (
                "report_uri must be a URL without spaces or control characters (percent-encode "
                f"them, e.g. %20, %7F), found {report_uri!r}"
            )
            raise PolicyError(msg)
        if isinstance(ports, int):
            ports = (ports,)
        if isinstance(ports, str | bytes):
            msg = f"ports must be a list of port numbers, found {ports!r}"
            raise PolicyError(msg)
        port_list = tuple(dict.fromkeys(_port(p) for p in ports))
        info: dict[AnyPin, PinInfo] = {}
        items = pin_info.items() if isinstance(pin_info, Mapping) else (pin_info or ())
        for key, value in items:
            pin = parse_any(key)
            if pin not in parsed and pin not in denied:
                msg = f"pin_info names {pin}, which is not a pin of the rule"
                raise PolicyError(msg)
            info[pin] = value
        set_ = object.__setattr__
        set_(self, "hosts", patterns)
        set_(self, "pins", parsed)
        set_(self, "include_subdomains", include_subdomains)
        set_(self, "expires", _to_date(expires, "expires"))
        set_(self, "mode", mode)
        set_(self, "deny", denied)
        set_(self, "report_uri", report_uri)
        # Stored in pin order, so that equal rules compare equal whatever order the info came in.
        set_(self, "pin_info", tuple((p, info[p]) for p in parsed + denied if p in info))
        set_(self, "ports", port_list)
        set_(self, "_spki", frozenset(p.digest for p in parsed if isinstance(p, Pin)))
        set_(self, "_cert", frozenset(p.digest for p in parsed if isinstance(p, CertificatePin)))
        if mode == "enforce" and len(parsed) < 2:
            warnings.warn(
                f"the enforced rule for {patterns[0]} has a single pin: when that key rotates, "
                "every client refuses the server (bricking). Add a backup pin for a key kept "
                "offline (tlspin backup-key).",
                SinglePinWarning,
                stacklevel=2,
            )

    def matches(self, host: str) -> bool:
        """Return True if canonical *host* is covered by one of the rule's patterns."""
        sub = self.include_subdomains
        return any(p.matches(host, include_subdomains=sub) for p in self.hosts)

    def info(self, pin: AnyPin) -> PinInfo | None:
        """Return the metadata recorded for *pin*, if any."""
        for key, value in self.pin_info:
            if key == pin:
                return value
        return None

    def expired(self, today: dt.date) -> bool:
        """Return True if the rule's ``expires`` date is before *today*."""
        return self.expires is not None and today > self.expires


@dataclass(frozen=True, slots=True, eq=False)
class PinPolicy:
    """An immutable set of :class:`PinRule`.

    Args:
        rules: the rules.
        on_expiry: ``"fail-open"`` (default, as Android and TrustKit) stops enforcing a rule after
            its ``expires`` date and warns once; ``"enforce"`` keeps enforcing it.
        observers: callables that receive every :class:`tlspin.Violation`, enforced or
            report-only. An observer that raises never affects the connection.
    """

    rules: tuple[PinRule, ...]
    on_expiry: OnExpiry = "fail-open"
    observers: tuple[Observer, ...] = ()
    _lookup: dict[str, tuple[PinRule, ...]] = field(
        default_factory=dict, repr=False, compare=False
    )
    _expired_warned: set[int] = field(default_factory=set, repr=False, compare=False)
    _plans: dict[str, object] = field(default_factory=dict, repr=False, compare=False)

    def __init__(
        self,
        rules: Iterable[PinRule] = (),
        *,
        on_expiry: OnExpiry = "fail-open",
        observers: Iterable[Observer] = (),
    ) -> None:
        rules = tuple(rules)
        for rule in rules:
            if not isinstance(rule, PinRule):
                msg = f"a policy holds PinRule objects, found {type(rule).__name__}"
                raise PolicyError(msg)
        if on_expiry not in ("fail-open", "enforce"):
            msg = f"on_expiry must be 'fail-open' or 'enforce', found {on_expiry!r}"
            raise PolicyError(msg)
        observers = tuple(observers)
        for obs in observers:
            if not callable(obs):
                msg = f"an observer must be callable, found {type(obs).__name__}"
                raise PolicyError(msg)
        set_ = object.__setattr__
        set_(self, "rules", rules)
        set_(self, "on_expiry", on_expiry)
        set_(self, "observers", observers)
        set_(self, "_lookup", {})
        set_(self, "_expired_warned", set())
        set_(self, "_plans", {})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PinPolicy):
            return NotImplemented
        return self.rules == other.rules and self.on_expiry == other.on_expiry

    def __hash__(self) -> int:
        return hash((self.rules, self.on_expiry))

    def __bool__(self) -> bool:
        return bool(self.rules)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_mapping(
        cls,
        mapping: Mapping[str, Sequence[str | AnyPin] | str],
        *,
        on_expiry: OnExpiry = "fail-open",
        observers: Iterable[Observer] = (),
    ) -> PinPolicy:
        """Build enforcing rules from ``{"host pattern": ["sha256/…", …]}``."""
        rules = [PinRule(pattern, pins) for pattern, pins in mapping.items()]
        return cls(rules, on_expiry=on_expiry, observers=observers)

    @classmethod
    def loads(cls, text: str, *, format: Literal["toml", "json"] = "toml") -> PinPolicy:
        """Parse a policy document (TOML by default, or JSON).

        Raises:
            PolicyError: the document is malformed; the message names the line and the key.
        """
        from tlspin import policyfile

        return policyfile.loads(text, format=format)

    @classmethod
    def load(cls, path: str | Path) -> PinPolicy:
        """Read a policy file; ``.json`` files are read as JSON, everything else as TOML.

        Raises:
            PolicyError: the file cannot be read or is malformed.
        """
        from tlspin import policyfile

        return policyfile.load(path)

    def with_observers(self, *observers: Observer) -> PinPolicy:
        """Return a copy of this policy with more observers."""
        return PinPolicy(
            self.rules, on_expiry=self.on_expiry, observers=self.observers + tuple(observers)
        )

    def with_rules(self, rules: Iterable[PinRule]) -> PinPolicy:
        """Return a copy with other rules and the same options and observers."""
        return PinPolicy(rules, on_expiry=self.on_expiry, observers=self.observers)

    # -- queries --------------------------------------------------------------------------
    def rules_for(self, hostname: str) -> tuple[PinRule, ...]:
        """Return every rule that covers *hostname* (canonicalised first)."""
        found = self._lookup.get(hostname)
        if found is None:
            host = canonical_host(hostname)
            found = tuple(rule for rule in self.rules if rule.matches(host))
            if len(self._lookup) > 10_000:
                self._lookup.clear()
            self._lookup[hostname] = found
        return found

    def pins_for(self, hostname: str) -> frozenset[AnyPin]:
        """Return the union of pins for *hostname*; empty for an unpinned host."""
        return frozenset(p for r in self.rules_for(hostname) for p in r.pins)

    def check(
        self,
        hostname: str,
        chain: Sequence[bytes],
        *,
        port: int | None = None,
        served_chain: Sequence[bytes] | Callable[[], Sequence[bytes]] | None = None,
        now: dt.datetime | None = None,
    ) -> Verdict:
        """Check a *verified* chain (DER, leaf first) against the pins for *hostname*.

        Passes when any certificate matches any pin of a matching rule and none matches a deny
        pin. An unpinned host passes. Report-only failures go to the observers and the log.

        Raises:
            PinMismatchError: an enforced rule failed.
        """
        from tlspin import verify

        return verify.check(self, hostname, chain, port=port, served_chain=served_chain, now=now)
