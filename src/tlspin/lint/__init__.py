"""Policy lint: find the mistakes that brick pinned clients, before they ship.

Each finding has a stable code (``TP001``…), a severity and a one-line message; :data:`CODES`
lists them all. The lint works on the raw policy document rule by rule, so one broken rule is
reported as a finding instead of hiding the others. Live checks (``--live``) take a probe
callable, so this module does no I/O of its own.
"""

from __future__ import annotations

import datetime as dt
import json
import tomllib
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from tlspin.exceptions import PinConfigurationError, PolicyError, TlspinWarning
from tlspin.hosts import HostPattern, Kind, is_public_suffix
from tlspin.pins import CertificatePin, Pin, spki_sha256
from tlspin.policy import PinRule
from tlspin.policyfile import _RULE_KEYS, _rule, _Where

if TYPE_CHECKING:
    from tlspin._shared.probe import ProbeResult

__all__ = [
    "CODES",
    "Finding",
    "LintInputError",
    "LintReport",
    "concrete_hosts",
    "lint_data",
    "lint_text",
    "pattern_overlap",
]

Severity = Literal["error", "warning", "info"]
SEVERITY_ORDER: dict[str, int] = {"error": 0, "warning": 1, "info": 2}

#: Every lint code: (severity, one-line explanation). Codes are stable; new ones are appended.
CODES: dict[str, tuple[Severity, str]] = {
    "TP000": ("error", "the rule cannot be loaded (bad pin, key or value); the message says why"),
    "TP001": (
        "error",
        "an enforced rule has fewer than two distinct pins: one rotation bricks clients",
    ),
    "TP002": ("error", "--live: every pin is in the live chain, so no backup key lies outside it"),
    "TP003": (
        "error",
        "--live: the live chain matches none of the rule's pins (clients fail today)",
    ),
    "TP004": (
        "warning",
        "every pin has the same role (one level of the chain): no independent backup",
    ),
    "TP005": (
        "warning",
        "every pin is a key of the current chain (leaf/intermediate/root) and none is a backup",
    ),
    "TP006": ("error", "a host pattern is invalid"),
    "TP007": ("error", "a wildcard or include_subdomains rule covers a public suffix"),
    "TP008": ("warning", "an exact host is itself a public suffix"),
    "TP009": (
        "error",
        "the rule has expired: clients no longer enforce it (or fail, with on_expiry=enforce)",
    ),
    "TP010": (
        "warning",
        "the rule expires more than a year from now: stale pins outlive key rotations",
    ),
    "TP011": ("warning", "the rule expires in less than 30 days: ship updated pins now"),
    "TP012": ("warning", "an enforced rule has no expires date: old clients enforce it forever"),
    "TP013": ("warning", "rules overlap: for hosts they share, any pin of either rule is accepted"),
    "TP014": ("error", "a deny pin is also an allowed pin for the same host"),
    "TP015": ("info", "a report-only rule: it reports failures but does not enforce"),
    "TP016": ("warning", "a pin's not_after date has passed: its certificate expired"),
    "TP017": ("error", "--live: the host could not be reached or failed TLS verification"),
    "TP018": ("info", "--live: the rule has only one-label wildcards; no concrete host to check"),
    "TP019": ("warning", "a whole-certificate pin (cert-sha256): it breaks at every renewal"),
    "TP020": (
        "warning",
        "report_uri is plain http, or a loopback, private or single-label host: clients would "
        "send reports in clear or into their own network (the Reporter refuses by default)",
    ),
}

_TOP_KEYS = ("on_expiry", "rule")
_CA_ROLES = {"leaf", "intermediate", "root"}


class LintInputError(PolicyError):
    """The policy document cannot be read at all (lint exit code 2)."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One lint finding.

    Attributes:
        code: stable code, ``TP001``…
        severity: ``error``, ``warning`` or ``info`` (fixed per code).
        message: one line saying what is wrong and what was found.
        rule: 0-based index of the rule, or None for policy-wide findings.
        line: TOML only: for a rule that cannot be loaded (TP000, TP006, TP007), the line of
            the key at fault, as ``check`` and ``export`` name it; otherwise the line of the
            rule's ``[[rule]]`` header.
        hosts: the rule's host patterns.
    """

    code: str
    severity: Severity
    message: str
    rule: int | None = None
    line: int | None = None
    hosts: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``rule`` is 1-based, as in messages)."""
        return {
            "code": self.code,
            "severity": self.severity,
            "rule": None if self.rule is None else self.rule + 1,
            "line": self.line,
            "hosts": list(self.hosts),
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class LintReport:
    """All findings for one policy, sorted by rule, then severity."""

    findings: tuple[Finding, ...]
    rules: int
    loaded: tuple[PinRule | None, ...] = field(default=(), repr=False)

    def count(self, severity: Severity) -> int:
        """Number of findings of *severity*."""
        return sum(1 for f in self.findings if f.severity == severity)

    def failed(self, fail_on: Severity = "error") -> bool:
        """True if any finding is at least as severe as *fail_on*."""
        limit = SEVERITY_ORDER[fail_on]
        return any(SEVERITY_ORDER[f.severity] <= limit for f in self.findings)


# -- host pattern algebra -------------------------------------------------------------------------


def _effective(pattern: HostPattern, include_subdomains: bool) -> tuple[Kind, str]:
    if include_subdomains and pattern.kind is Kind.EXACT:
        return Kind.ANY_DEPTH, pattern.base
    return pattern.kind, pattern.base


def _under(host: str, base: str) -> bool:
    """True if *host* is a proper subdomain of *base*."""
    return host.endswith("." + base)


def _one_below(host: str, base: str) -> bool:
    return _under(host, base) and "." not in host[: -len(base) - 1]


def pattern_overlap(
    a: HostPattern, b: HostPattern, *, a_sub: bool = False, b_sub: bool = False
) -> str | None:
    """Describe the hosts both patterns cover, as a host or pattern; None if they are disjoint.

    *a_sub* / *b_sub* are the rules' ``include_subdomains`` flags.
    """
    (ka, xa), (kb, xb) = _effective(a, a_sub), _effective(b, b_sub)
    order = {Kind.EXACT: 0, Kind.ONE_LABEL: 1, Kind.ANY_DEPTH: 2}
    if order[ka] > order[kb]:
        (ka, xa), (kb, xb) = (kb, xb), (ka, xa)
    if ka is Kind.EXACT:
        if kb is Kind.EXACT:
            return xa if xa == xb else None
        if kb is Kind.ONE_LABEL:
            return xa if _one_below(xa, xb) else None
        return xa if xa == xb or _under(xa, xb) else None
    if ka is Kind.ONE_LABEL:
        if kb is Kind.ONE_LABEL:
            return f"*.{xa}" if xa == xb else None
        if xa == xb or _under(xa, xb):
            return f"*.{xa}"
        return xb if _one_below(xb, xa) else None
    if xa == xb or _under(xa, xb):
        return f"**.{xa}"
    return f"**.{xb}" if _under(xb, xa) else None


def concrete_hosts(rule: PinRule) -> list[str]:
    """Hosts a live check can connect to for *rule* (``*.x`` patterns have none)."""
    out = []
    for pattern in rule.hosts:
        kind, base = _effective(pattern, rule.include_subdomains)
        if kind is not Kind.ONE_LABEL:
            out.append(base)
    return list(dict.fromkeys(out))


def _overlaps(rules: Sequence[tuple[int, PinRule]]) -> Iterable[tuple[int, int, str]]:
    """Yield ``(i, j, shared)`` for rules that share hosts, without comparing every pair."""
    by_base: dict[str, list[tuple[int, HostPattern, bool]]] = {}
    for index, rule in rules:
        for pattern in rule.hosts:
            by_base.setdefault(pattern.base, []).append((index, pattern, rule.include_subdomains))
    seen: set[tuple[int, int]] = set()
    for index, rule in rules:
        for pattern in rule.hosts:
            # Overlapping patterns have bases on one ancestor line: walk this base's ancestors
            # and its one-label-deeper children are found from their side.
            labels = pattern.base.split(".")
            for start in range(len(labels)):
                ancestor = ".".join(labels[start:])
                for other, other_pattern, other_sub in by_base.get(ancestor, ()):
                    if other == index:
                        continue
                    pair = (min(index, other), max(index, other))
                    if pair in seen:
                        continue
                    shared = pattern_overlap(
                        pattern, other_pattern, a_sub=rule.include_subdomains, b_sub=other_sub
                    )
                    if shared is not None:
                        seen.add(pair)
                        yield pair[0], pair[1], shared


# -- the lint -------------------------------------------------------------------------------------


def _raw_hosts(raw: Any) -> tuple[str, ...]:
    hosts = raw.get("hosts") if isinstance(raw, Mapping) else None
    if isinstance(hosts, str):
        return (hosts,)
    if isinstance(hosts, list):
        return tuple(str(h) for h in hosts)
    return ()


def _load_rule(raw: Any, index: int, where: _Where) -> PinRule | tuple[str, int | None]:
    """The rule, or ``(why, line)``: the loader's message without its location, and the line
    of the key it is about (of the ``[[rule]]`` header when it is about no key)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TlspinWarning)
            return _rule(raw, index, where)
    except PinConfigurationError as exc:
        message = str(exc)
    keys = [*(raw if isinstance(raw, Mapping) else ()), *_RULE_KEYS]
    for key in dict.fromkeys([None, *keys]):
        prefix = f"{where(index, key)}: "
        if message.startswith(prefix):
            shown = f"key '{key}': " if key else ""
            return shown + message[len(prefix) :], where.line(index, key)
    return message, where.line(index, None)  # Defensive: every loader error names its place.


def _label(index: int, hosts: Sequence[str]) -> str:
    shown = ", ".join(hosts[:3]) + (", …" if len(hosts) > 3 else "")
    return f"rule #{index + 1} ({shown})" if shown else f"rule #{index + 1}"


def lint_text(
    text: str,
    *,
    format: Literal["toml", "json"] = "toml",
    today: dt.date | None = None,
    live: Callable[[str, int | None], ProbeResult] | None = None,
) -> LintReport:
    """Lint a policy document.

    Raises:
        LintInputError: the text is not valid TOML/JSON or not a policy at all.
    """
    try:
        data = json.loads(text) if format == "json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        msg = f"invalid {format.upper()}: {exc}"
        raise LintInputError(msg) from None
    return lint_data(data, text=text if format == "toml" else None, today=today, live=live)


def lint_data(
    data: Any,
    *,
    text: str | None = None,
    today: dt.date | None = None,
    live: Callable[[str, int | None], ProbeResult] | None = None,
) -> LintReport:
    """Lint parsed policy data; *live* probes a host for the live checks.

    *live* is called with a host name and one of the rule's ``ports``, or None when the rule
    names none (the caller's default port).

    Raises:
        LintInputError: the data is not a policy (wrong top-level shape, no rules).
    """
    today = today or dt.datetime.now(dt.UTC).date()
    if not isinstance(data, Mapping):
        msg = f"a policy must be a table/object, found {type(data).__name__}"
        raise LintInputError(msg)
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        msg = f"unknown top-level key(s) {unknown}; expected {list(_TOP_KEYS)}"
        raise LintInputError(msg)
    on_expiry = data.get("on_expiry", "fail-open")
    if on_expiry not in ("fail-open", "enforce"):
        msg = f"on_expiry must be 'fail-open' or 'enforce', found {on_expiry!r}"
        raise LintInputError(msg)
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list):
        msg = f"'rule' must be an array of tables, found {type(raw_rules).__name__}"
        raise LintInputError(msg)
    if not raw_rules:
        msg = "the policy is empty; expected at least one [[rule]]"
        raise LintInputError(msg)
    where = _Where(text)
    lines = [where.line(index, None) for index in range(len(raw_rules))]
    findings: list[Finding] = []
    loaded: list[PinRule | None] = []
    for index, raw in enumerate(raw_rules):
        line = lines[index]
        hosts = _raw_hosts(raw)
        result = _load_rule(raw, index, where)
        if isinstance(result, tuple):
            loaded.append(None)
            why, key_line = result
            low = why.lower()
            code = (
                "TP007"
                if "public suffix" in low
                else "TP006"
                if ("host" in low and "pattern" in low) or "host name" in low
                else "TP000"
            )
            message = f"{_label(index, hosts)}: {why}"
            findings.append(Finding(code, CODES[code][0], message, index, key_line, hosts))
            continue
        loaded.append(result)
        findings.extend(
            Finding(f.code, f.severity, f.message, index, line, tuple(h.text for h in result.hosts))
            for f in _rule_findings(index, result, today, on_expiry)
        )
    good = [(i, r) for i, r in enumerate(loaded) if r is not None]
    for i, j, shared in _overlaps(good):
        ri, rj = loaded[i], loaded[j]
        assert ri is not None
        assert rj is not None
        modes = "" if ri.mode == rj.mode else f" (modes differ: {ri.mode} and {rj.mode})"
        findings.append(
            Finding(
                "TP013",
                "warning",
                f"rules #{i + 1} and #{j + 1} both cover {shared}: their pins combine there, any "
                f"pin of either rule is accepted{modes}",
                i,
                lines[i] if i < len(lines) else None,
                tuple(h.text for h in ri.hosts),
            )
        )
        clash = (set(ri.deny) & set(rj.pins)) | (set(rj.deny) & set(ri.pins))
        if clash:
            findings.append(
                Finding(
                    "TP014",
                    "error",
                    f"rules #{i + 1} and #{j + 1} both cover {shared}, and one denies a pin the "
                    f"other allows: {', '.join(sorted(map(str, clash)))}",
                    i,
                    lines[i] if i < len(lines) else None,
                    tuple(h.text for h in ri.hosts),
                )
            )
    if live is not None:
        findings.extend(_live_findings(good, lines, live))
    findings.sort(
        key=lambda f: (-1 if f.rule is None else f.rule, SEVERITY_ORDER[f.severity], f.code)
    )
    return LintReport(tuple(findings), len(raw_rules), tuple(loaded))


def _rule_findings(index: int, rule: PinRule, today: dt.date, on_expiry: str) -> Iterable[Finding]:
    label = _label(index, [h.text for h in rule.hosts])

    def make(code: str, message: str) -> Finding:
        return Finding(code, CODES[code][0], f"{label}: {message}")

    pins = rule.pins
    if rule.mode == "enforce" and len(pins) < 2:
        yield make(
            "TP001",
            f"enforced with {len(pins)} distinct pin; add a backup pin "
            "(tlspin backup-key --add-to POLICY)",
        )
    roles = [rule.info(p) for p in pins]
    known = [info.role for info in roles if info is not None and info.role is not None]
    same_level = (
        len(pins) >= 2 and len(known) == len(pins) and len(set(known)) == 1 and known[0] != "backup"
    )
    if same_level:
        yield make(
            "TP004",
            f"all {len(pins)} pins have role '{known[0]}'; a change at that level "
            "(new CA, new key) matches none of them",
        )
    elif len(pins) >= 2 and len(known) == len(pins) and set(known) <= _CA_ROLES:
        yield make(
            "TP005",
            f"pins are roles {sorted(set(known))} of the current chain and none is a "
            "backup key; a CA change or key compromise bricks clients",
        )
    for pattern in rule.hosts:
        if (
            pattern.kind is Kind.EXACT
            and not rule.include_subdomains
            and "." in pattern.base
            and not pattern.base.replace(".", "").isdigit()
            and ":" not in pattern.base
            and is_public_suffix(pattern.base)
        ):
            yield make("TP008", f"the host {pattern.base} is a public suffix")
    if rule.expires is not None:
        left = (rule.expires - today).days
        if left < 0:
            action = (
                "still enforced (on_expiry=enforce)"
                if on_expiry == "enforce"
                else "no longer enforced"
            )
            yield make("TP009", f"expired on {rule.expires}; it is {action}")
        elif left > 365:
            yield make(
                "TP010", f"expires on {rule.expires}, {left} days from now (more than a year)"
            )
        elif left < 30:
            yield make("TP011", f"expires on {rule.expires}, in {left} day(s)")
    elif rule.mode == "enforce":
        yield make(
            "TP012", "no expires date; set one (at most a year ahead) so old clients fail open"
        )
    both = [p for p in rule.deny if p in set(pins)]
    if both:
        yield make("TP014", f"pin(s) both allowed and denied: {', '.join(map(str, both))}")
    if rule.mode == "report":
        yield make("TP015", "report-only: violations are reported, connections are not refused")
    for pin in pins:
        info = rule.info(pin)
        if info is not None and info.not_after is not None and info.not_after < today:
            yield make("TP016", f"pin {pin} has not_after {info.not_after}, which has passed")
        if isinstance(pin, CertificatePin):
            yield make("TP019", f"{pin} pins a whole certificate; pin its public key instead")
    if rule.report_uri is not None:
        from tlspin._shared.endpoints import report_uri_concern

        concern = report_uri_concern(rule.report_uri)
        if concern is not None:
            yield make("TP020", f"report_uri {rule.report_uri}: {concern}")


def _live_findings(
    rules: Sequence[tuple[int, PinRule]],
    lines: Sequence[int | None],
    live: Callable[[str, int | None], ProbeResult],
) -> Iterable[Finding]:
    cache: dict[tuple[str, int | None], ProbeResult] = {}
    for index, rule in rules:
        patterns = tuple(h.text for h in rule.hosts)
        line = lines[index] if index < len(lines) else None
        label = _label(index, patterns)
        hosts = concrete_hosts(rule)
        if not hosts:
            yield Finding(
                "TP018",
                "info",
                f"{label}: not checked live (no concrete host name)",
                index,
                line,
                patterns,
            )
            continue
        # The rule's ports say where its hosts listen; None lets the caller choose (443).
        ports: Sequence[int | None] = rule.ports or (None,)
        for host, port in ((h, p) for h in hosts for p in ports):
            result = cache.get((host, port))
            if result is None:
                result = cache[host, port] = live(host, port)
            endpoint = str(result.target)
            if not result.ok:
                yield Finding(
                    "TP017",
                    "error",
                    f"{label}: live check of {endpoint} failed: {result.error}",
                    index,
                    line,
                    patterns,
                )
                continue
            digests = {spki_sha256(der) for der in result.verified_chain}
            spki_pins = [p for p in rule.pins if isinstance(p, Pin)]
            inside = [p for p in spki_pins if p.digest in digests]
            if not inside:
                yield Finding(
                    "TP003",
                    "error",
                    f"{label}: the live chain of {endpoint} matches none of the "
                    f"{len(rule.pins)} pins",
                    index,
                    line,
                    patterns,
                )
            elif len(inside) == len(rule.pins):
                yield Finding(
                    "TP002",
                    "error",
                    f"{label}: all {len(inside)} pins are in the live chain of {endpoint}; "
                    "add a backup pin for a key outside it (tlspin backup-key)",
                    index,
                    line,
                    patterns,
                )
