"""Rotation preflight: which shipped policy versions would refuse a planned certificate chain?

Clients check pins against the chain their TLS library *builds* to a trusted root, not the chain
the server sends, so the planned chain is first verified (path building with ``cryptography``'s
verifier, for each host name at the planned date) and then checked against every rule of every
policy version, with the engine's own :meth:`~tlspin.PinPolicy.check` deciding each host.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tlspin.exceptions import InvalidPinError, PinMismatchError
from tlspin.hosts import HostPattern, canonical_host
from tlspin.lint import pattern_overlap
from tlspin.pins import Pin, spki_sha256

if TYPE_CHECKING:
    from cryptography import x509

    from tlspin.policy import PinPolicy, PinRule

__all__ = [
    "NO_PATH",
    "ChainDiff",
    "HostResult",
    "PreflightReport",
    "RuleResult",
    "VersionResult",
    "compare_chains",
    "hosts_for",
    "preflight",
    "verify_chain",
]

_SAMPLE_LABEL = "tlspin-preflight"
#: Starts the reason :func:`verify_chain` gives when no path leads to a trusted root.
NO_PATH = "no path to a root in"
# cryptography's path-building failures: they say only that no candidate path worked.
_PATH_FAILURES = ("candidates exhausted", "exceeds max depth")


@dataclass(frozen=True, slots=True)
class RuleResult:
    """One rule of one policy version, for one host: pass or fail, and why."""

    rule: int
    hosts: tuple[str, ...]
    passed: bool
    reason: str


@dataclass(frozen=True, slots=True)
class HostResult:
    """The verdict for one host name: what a client of this policy version would do."""

    host: str
    passed: bool
    reason: str
    rules: tuple[RuleResult, ...]


@dataclass(frozen=True, slots=True)
class VersionResult:
    """All hosts for one shipped policy version."""

    name: str
    hosts: tuple[HostResult, ...]

    @property
    def passed(self) -> bool:
        """True when no host of this version would refuse the chain."""
        return all(h.passed for h in self.hosts)


@dataclass(frozen=True, slots=True)
class PreflightReport:
    """The planned chain as clients would verify it, and each version's verdict."""

    chains: dict[str, tuple[bytes, ...]]
    errors: dict[str, str]
    versions: tuple[VersionResult, ...]

    @property
    def passed(self) -> bool:
        """True when every version accepts the chain for every host."""
        return all(v.passed for v in self.versions)


def _sample(pattern_text: str) -> str:
    """A concrete host name inside a pattern (``*.x`` and ``**.x`` give ``tlspin-preflight.x``)."""
    if pattern_text.startswith("**."):
        return f"{_SAMPLE_LABEL}.{pattern_text[3:]}"
    if pattern_text.startswith("*."):
        return f"{_SAMPLE_LABEL}.{pattern_text[2:]}"
    return pattern_text


def _leaf_names(leaf: x509.Certificate) -> list[str]:
    from cryptography import x509

    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return names


def hosts_for(leaf_der: bytes, policies: Sequence[PinPolicy]) -> list[tuple[str, str]]:
    """``(shown, checked)`` host names: the leaf's names that some rule covers.

    A wildcard name (``*.example.com``) is matched against rule patterns; where they overlap in a
    wildcard, a sample name under it is checked and the pattern is shown.
    """
    from cryptography import x509

    leaf = x509.load_der_x509_certificate(leaf_der)
    out: dict[str, str] = {}
    for name in _leaf_names(leaf):
        try:
            san = HostPattern.parse(name)
        except ValueError:
            continue
        for policy in policies:
            for rule in policy.rules:
                for pattern in rule.hosts:
                    shared = pattern_overlap(san, pattern, b_sub=rule.include_subdomains)
                    if shared is not None:
                        out.setdefault(shared, _sample(shared))
    return list(out.items())


def verify_chain(
    served: Sequence[bytes],
    anchors: Sequence[bytes],
    host: str,
    at: dt.datetime,
    *,
    roots: str = "the trusted roots",
) -> tuple[tuple[bytes, ...] | None, str | None]:
    """Build and verify the chain for *host* at *at*.

    Args:
        roots: what *anchors* are, for messages (e.g. ``"the system trust store"``).

    Returns:
        ``(chain DER, None)`` on success, ``(None, why)`` on failure. When no path leads from
        the leaf to one of *anchors*, *why* contains :data:`NO_PATH`.
    """
    import warnings

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.utils import CryptographyDeprecationWarning
    from cryptography.x509 import verification

    certs = [x509.load_der_x509_certificate(d) for d in served]
    with warnings.catch_warnings():
        # Old roots of system stores draw deprecation warnings (a negative serial number).
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        roots_ = [x509.load_der_x509_certificate(d) for d in anchors]
    if not roots_:
        return None, "no trusted root certificates were given"
    try:
        subject: x509.DNSName | x509.IPAddress = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        subject = x509.DNSName(host)
    try:
        verifier = (
            verification.PolicyBuilder()
            .store(verification.Store(roots_))
            .time(at)
            .build_server_verifier(subject)
        )
        chain = verifier.verify(certs[0], certs[1:])
    except (verification.VerificationError, ValueError) as exc:
        why = str(exc).split(" (encountered")[0]
        if any(marker in why for marker in _PATH_FAILURES):
            return None, _no_path(certs, roots_, at, roots)
        return None, why
    return tuple(c.public_bytes(Encoding.DER) for c in chain), None


def _no_path(
    certs: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    at: dt.datetime,
    roots: str,
) -> str:
    """Say why no path was found; cryptography's own words ("candidates exhausted…") do not."""
    top = certs[-1]
    subjects = {a.subject for a in anchors}
    if top.issuer not in subjects and top.subject not in subjects:
        return (
            f"{NO_PATH} {roots}: the last certificate of the chain "
            f"({top.subject.rfc4514_string()}) is issued by {top.issuer.rfc4514_string()}, "
            f"which is not among them (a private CA, or an intermediate missing from the chain?)"
        )
    for cert in certs:
        if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            return (
                f"{NO_PATH} {roots}: {cert.subject.rfc4514_string()} is not valid on "
                f"{at.date()} (valid {cert.not_valid_before_utc.date()} to "
                f"{cert.not_valid_after_utc.date()})"
            )
    return (
        f"{NO_PATH} {roots}: no valid signature path from the leaf through the chain's "
        "intermediates (check that the chain holds each intermediate, leaf first)"
    )


def _describe(chain: Sequence[bytes], digest: bytes) -> str:
    from cryptography import x509

    for depth, der in enumerate(chain):
        if spki_sha256(der) == digest:
            subject = x509.load_der_x509_certificate(der).subject.rfc4514_string()
            return f"depth {depth} ({subject})"
    return "the chain"


def _rule_result(
    index: int, rule: PinRule, chain: Sequence[bytes], at: dt.date, on_expiry: str
) -> RuleResult:
    hosts = tuple(h.text for h in rule.hosts)
    digests = [spki_sha256(der) for der in chain]
    denied = [p for p in rule.deny if isinstance(p, Pin) and p.digest in digests]
    expired = rule.expired(at)
    if expired and on_expiry == "fail-open":
        return RuleResult(
            index, hosts, True, f"expired on {rule.expires}: not enforced (fail-open)"
        )
    if denied:
        return RuleResult(
            index, hosts, False, f"denied key {denied[0]} at {_describe(chain, denied[0].digest)}"
        )
    matched = [p for p in rule.pins if isinstance(p, Pin) and p.digest in digests]
    if not matched:
        return RuleResult(
            index, hosts, False, f"none of its {len(rule.pins)} pins is in the new chain"
        )
    pin = matched[0]
    meta = rule.info(pin)
    role = f"{meta.role} " if meta is not None and meta.role else ""
    more = f" (+{len(matched) - 1} more)" if len(matched) > 1 else ""
    return RuleResult(
        index, hosts, True, f"matches {role}pin {pin} at {_describe(chain, pin.digest)}{more}"
    )


def preflight(
    versions: Sequence[tuple[str, PinPolicy]],
    served: Sequence[bytes],
    anchors: Sequence[bytes],
    *,
    hosts: Sequence[str] = (),
    also: Sequence[str] = (),
    at: dt.datetime | None = None,
    roots: str = "the trusted roots",
) -> PreflightReport:
    """Check a planned served chain (leaf first) against each shipped policy version.

    Args:
        versions: ``(name, policy)`` for each policy version in the field.
        served: the planned chain as the server will send it, leaf first.
        anchors: DER root certificates clients trust.
        hosts: host names to check (default: the leaf's names that some rule covers).
        also: more host names to check besides the default ones (e.g. a live host).
        at: the planned deployment time (default: now).
        roots: what *anchors* are, for messages (e.g. ``"the system trust store"``).
    """
    if not served:
        msg = "the planned chain is empty; expected at least the leaf certificate"
        raise InvalidPinError(msg)
    at = at or dt.datetime.now(dt.UTC)
    policies = [p for _, p in versions]
    targets = [(canonical_host(h), canonical_host(h)) for h in hosts] or hosts_for(
        served[0], policies
    )
    for extra in also:
        host = canonical_host(extra)
        if host not in dict(targets):
            targets.append((host, host))
    chains: dict[str, tuple[bytes, ...]] = {}
    errors: dict[str, str] = {}
    for shown, checked in targets:
        chain, error = verify_chain(served, anchors, checked, at, roots=roots)
        if chain is not None:
            chains[shown] = chain
        else:
            errors[shown] = error or "verification failed"
    results = []
    for name, policy in versions:
        host_results = []
        for shown, checked in targets:
            rules = policy.rules_for(checked)
            if not rules:
                host_results.append(HostResult(shown, True, "not pinned by this version", ()))
                continue
            if shown in errors:
                host_results.append(
                    HostResult(
                        shown, False, f"the chain does not verify for {shown}: {errors[shown]}", ()
                    )
                )
                continue
            chain = chains[shown]
            rule_results = tuple(
                _rule_result(policy.rules.index(r), r, chain, at.date(), policy.on_expiry)
                for r in rules
            )
            host_results.append(
                _host_verdict(
                    policy=policy,
                    shown=shown,
                    checked=checked,
                    chain=chain,
                    rules=rule_results,
                    at=at,
                )
            )
        results.append(VersionResult(name, tuple(host_results)))
    return PreflightReport(chains, errors, tuple(results))


def _host_verdict(
    *,
    policy: PinPolicy,
    shown: str,
    checked: str,
    chain: tuple[bytes, ...],
    rules: tuple[RuleResult, ...],
    at: dt.datetime,
) -> HostResult:
    import warnings

    from tlspin.exceptions import TlspinWarning

    # The engine decides: the union of matching rules, report-only and expiry exactly as clients.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TlspinWarning)
            verdict = policy.with_observers().check(checked, list(chain), now=at)
    except PinMismatchError as exc:
        why = (
            "a denied key is in the chain"
            if exc.reason == "denied"
            else "no pin of any matching rule is in the chain"
        )
        return HostResult(shown, False, f"clients refuse the connection: {why}", rules)
    if not verdict.ok:
        return HostResult(shown, True, "passes, but a report-only rule reports a violation", rules)
    return HostResult(shown, True, "clients accept the chain", rules)


@dataclass(frozen=True, slots=True)
class ChainDiff:
    """One depth of the current chain next to the planned one."""

    depth: int
    current: str | None
    planned: str | None
    same_key: bool


def compare_chains(current: Sequence[bytes], planned: Sequence[bytes]) -> list[ChainDiff]:
    """Line up the live chain and the planned chain depth by depth (subjects and key identity)."""
    from cryptography import x509

    def subject(der: bytes) -> str:
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()

    out = []
    for depth in range(max(len(current), len(planned))):
        cur = current[depth] if depth < len(current) else None
        new = planned[depth] if depth < len(planned) else None
        same = cur is not None and new is not None and spki_sha256(cur) == spki_sha256(new)
        out.append(
            ChainDiff(
                depth,
                None if cur is None else f"{subject(cur)} {Pin(spki_sha256(cur))}",
                None if new is None else f"{subject(new)} {Pin(spki_sha256(new))}",
                same,
            )
        )
    return out
