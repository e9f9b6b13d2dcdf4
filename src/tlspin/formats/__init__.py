"""Export a policy to every platform's pinning configuration, and import them back.

One module per target (``okhttp``, ``android``, ``trustkit``, ``ats``, ``hpkp``, ``curl``,
``jsonfmt``). Exports never drop anything silently: whatever a target cannot express is a
:class:`Problem`. Errors refuse the export (:class:`ExportRefusedError`) unless ``force`` is set, in
which case they are returned as warnings next to the output. A few problems cannot be forced
because the target itself would refuse the result (TrustKit with one pin, ATS without roles).

Dates: tlspin's ``expires`` is the *last* day a rule is enforced. Android's ``expiration`` and
TrustKit's ``TSKExpirationDate`` are the first day pins are *no longer* enforced (they compare
with midnight of that date), so exports write ``expires + 1 day`` and imports subtract it again.
"""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from tlspin.exceptions import PinConfigurationError
from tlspin.policy import PinPolicy, PinRule

__all__ = [
    "EXPORT_FORMATS",
    "IMPORT_FORMATS",
    "ExportOptions",
    "ExportRefusedError",
    "Exported",
    "Imported",
    "Problem",
    "Problems",
    "canonical",
    "export",
    "import_policy",
]

Severity = Literal["error", "warning"]

#: format name -> module implementing ``export(policy, options, problems) -> str``.
EXPORT_FORMATS: dict[str, str] = {
    "okhttp-kotlin": "tlspin.formats.okhttp",
    "okhttp-java": "tlspin.formats.okhttp",
    "android-nsc": "tlspin.formats.android",
    "trustkit-android": "tlspin.formats.android",
    "trustkit-ios": "tlspin.formats.trustkit",
    "ats": "tlspin.formats.ats",
    "hpkp": "tlspin.formats.hpkp",
    "curl": "tlspin.formats.curl",
    "json": "tlspin.formats.jsonfmt",
}
#: format name -> module implementing ``parse(data, options, problems) -> PinPolicy``.
IMPORT_FORMATS: dict[str, str] = {
    "android-nsc": "tlspin.formats.android",
    "trustkit-android": "tlspin.formats.android",
    "trustkit-ios": "tlspin.formats.trustkit",
    "hpkp": "tlspin.formats.hpkp",
    "okhttp-java": "tlspin.formats.okhttp",
    "json": "tlspin.formats.jsonfmt",
}


@dataclass(frozen=True, slots=True)
class Problem:
    """Something a target format cannot express, or a caveat of the output.

    Attributes:
        severity: ``error`` (the export would behave differently from the policy) or
            ``warning`` (information is lost, behaviour is not).
        message: one line: what cannot be expressed, for which rule, and why.
        rule: 0-based index of the rule concerned, if any.
        forceable: False when ``--force`` cannot help (the target would reject the output).
    """

    severity: Severity
    message: str
    rule: int | None = None
    forceable: bool = True

    def __str__(self) -> str:
        where = f"rule #{self.rule + 1}: " if self.rule is not None else ""
        return f"{where}{self.message}"


@dataclass(slots=True)
class Problems:
    """Collects problems while a format module works."""

    items: list[Problem] = field(default_factory=list)

    def error(self, message: str, *, rule: int | None = None, forceable: bool = True) -> None:
        """Record something the target cannot express (refuses the export unless forced)."""
        self.items.append(Problem("error", message, rule, forceable))

    def warning(self, message: str, *, rule: int | None = None) -> None:
        """Record a caveat that does not change what clients accept."""
        self.items.append(Problem("warning", message, rule))


class ExportRefusedError(PinConfigurationError):
    """The policy cannot be exported faithfully; ``problems`` says why."""

    def __init__(self, fmt: str, problems: list[Problem]) -> None:
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        super().__init__(
            f"cannot export to {fmt}: {len(errors)} problem(s); first: {errors[0]}"
            if errors
            else f"cannot export to {fmt}"
        )


@dataclass(frozen=True, slots=True)
class ExportOptions:
    """Options shared by the exporters (each uses the ones that concern it).

    Attributes:
        force: export despite errors, which then come back as warnings.
        okhttp_version: 3 (no ``**.`` patterns) or 4 (OkHttp ≥ 4.3).
        host: the host to export for single-host targets (``hpkp``, ``curl``).
        report_only: ``hpkp``: write ``Public-Key-Pins-Report-Only``.
        max_age: ``hpkp``: max-age in seconds when the rule has no ``expires``.
        today: the date expiry is measured from (default: today, UTC).
    """

    force: bool = False
    okhttp_version: int = 4
    host: str | None = None
    report_only: bool = False
    max_age: int | None = None
    today: dt.date | None = None

    @property
    def date(self) -> dt.date:
        """*today*, or the current UTC date."""
        return self.today or dt.datetime.now(dt.UTC).date()


@dataclass(frozen=True, slots=True)
class Exported:
    """An export's text and the warnings (and forced errors) that came with it."""

    text: str
    problems: tuple[Problem, ...] = ()


@dataclass(frozen=True, slots=True)
class Imported:
    """An imported policy and the caveats of the conversion."""

    policy: PinPolicy
    problems: tuple[Problem, ...] = ()


class _Exporter(Protocol):
    def __call__(
        self, policy: PinPolicy, fmt: str, options: ExportOptions, problems: Problems
    ) -> str: ...


def export(policy: PinPolicy, fmt: str, options: ExportOptions | None = None) -> Exported:
    """Export *policy* to format *fmt*.

    Raises:
        ExportRefusedError: the target cannot express the policy (and ``force`` is off, or the
            problem cannot be forced).
        PinConfigurationError: *fmt* is unknown or an option is invalid.
    """
    options = options or ExportOptions()
    if fmt not in EXPORT_FORMATS:
        msg = f"unknown export format {fmt!r}; expected one of {sorted(EXPORT_FORMATS)}"
        raise PinConfigurationError(msg)
    module = importlib.import_module(EXPORT_FORMATS[fmt])
    exporter: _Exporter = module.export
    problems = Problems()
    text = exporter(policy, fmt, options, problems)
    errors = [p for p in problems.items if p.severity == "error"]
    if any(not p.forceable for p in errors) or (errors and not options.force):
        raise ExportRefusedError(fmt, problems.items)
    return Exported(text, tuple(problems.items))


def import_policy(
    data: bytes, fmt: str, *, host: str | None = None, today: dt.date | None = None
) -> Imported:
    """Turn an existing configuration in format *fmt* into a policy.

    Raises:
        PinConfigurationError: the input is malformed or *fmt* is unknown.
    """
    if fmt not in IMPORT_FORMATS:
        msg = f"unknown import format {fmt!r}; expected one of {sorted(IMPORT_FORMATS)}"
        raise PinConfigurationError(msg)
    module = importlib.import_module(IMPORT_FORMATS[fmt])
    parser: Callable[..., PinPolicy] = module.parse
    problems = Problems()
    options = ExportOptions(host=host, today=today)
    policy = parser(data, fmt, options, problems)
    _check_report_uris(policy, problems)
    return Imported(policy, tuple(problems.items))


def _check_report_uris(policy: PinPolicy, problems: Problems) -> None:
    """Warn about report URIs no client should send reports to (lint's TP020).

    An imported ``report-uri`` comes from someone else's configuration (an HPKP header a
    server sent): ``http://127.0.0.1:6379/`` would make every client post to a service on its
    own machine. The import keeps the URI (nothing is dropped silently) and says so.
    """
    from tlspin._shared.endpoints import report_uri_concern

    for index, rule in enumerate(policy.rules):
        concern = None if rule.report_uri is None else report_uri_concern(rule.report_uri)
        if concern is not None:
            problems.warning(f"report_uri {rule.report_uri}: {concern}", rule=index)


def canonical(policy: PinPolicy) -> PinPolicy:
    """Rewrite ``include_subdomains`` rules with ``**.`` patterns (the same meaning).

    Imports produce this form, so ``import(export(p)) == canonical(p)``.
    """
    rules = []
    for rule in policy.rules:
        if not rule.include_subdomains:
            rules.append(rule)
            continue
        hosts = [h.text if h.text.startswith("*") else f"**.{h.base}" for h in rule.hosts]
        rules.append(_rebuild(rule, hosts=hosts, include_subdomains=False))
    return policy.with_rules(rules)


def _rebuild(rule: PinRule, **changes: object) -> PinRule:
    import warnings

    from tlspin.exceptions import SinglePinWarning

    fields: dict[str, object] = {
        "hosts": [h.text for h in rule.hosts],
        "pins": rule.pins,
        "include_subdomains": rule.include_subdomains,
        "expires": rule.expires,
        "mode": rule.mode,
        "deny": rule.deny,
        "report_uri": rule.report_uri,
        "pin_info": rule.pin_info,
        "ports": rule.ports,
    }
    fields.update(changes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinglePinWarning)
        return PinRule(**fields)  # type: ignore[arg-type]
