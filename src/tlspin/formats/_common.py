"""Helpers shared by the format modules: capability checks, host mapping, safe parsing."""

from __future__ import annotations

import datetime as dt
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from xml.parsers import expat

from tlspin.exceptions import PolicyError, SinglePinWarning
from tlspin.formats import ExportOptions, Problems
from tlspin.hosts import Kind, canonical_host
from tlspin.pins import CertificatePin, Pin
from tlspin.policy import AnyPin, PinPolicy, PinRule

MAX_IMPORT_BYTES = 16 * 1024 * 1024
#: Deepest element nesting an imported XML document may have (Android's and TrustKit's are
#: a handful of levels deep).
MAX_XML_DEPTH = 64
_IP = re.compile(r"^[0-9.]+$|:")


def platform_expiry(rule: PinRule) -> str | None:
    """The first day pins are no longer enforced, as Android and TrustKit write it."""
    return None if rule.expires is None else (rule.expires + dt.timedelta(days=1)).isoformat()


def tlspin_expiry(text: str, what: str) -> dt.date:
    """Turn a platform expiration date (``yyyy-MM-dd``) back into tlspin's ``expires``."""
    try:
        return dt.date.fromisoformat(text.strip()) - dt.timedelta(days=1)
    except (ValueError, AttributeError, OverflowError):
        msg = f"{what}: expected a date as yyyy-MM-dd, found {text!r}"
        raise PolicyError(msg) from None


def spki_pins(rule: PinRule, index: int, problems: Problems, target: str) -> list[Pin]:
    """The rule's SPKI pins; whole-certificate pins are reported as inexpressible."""
    out = []
    for pin in rule.pins:
        if isinstance(pin, CertificatePin):
            problems.error(
                f"{target} cannot pin a whole certificate ({pin}); it was left out", rule=index
            )
        else:
            out.append(pin)
    return out


def check_rule(
    rule: PinRule,
    index: int,
    problems: Problems,
    target: str,
    *,
    expiry: bool,
    report_mode: bool,
    report_uri: bool,
    today: dt.date | None = None,
) -> None:
    """Report the rule features *target* lacks (``deny`` is never supported by exports).

    With *today*, a target that has an expiry is told when the rule has expired already.
    """
    if rule.deny:
        problems.error(
            f"{target} has no deny list; {len(rule.deny)} denied key(s) would be accepted if "
            "chained to a trusted root",
            rule=index,
        )
    if expiry and today is not None and rule.expired(today):
        problems.warning(
            f"the rule expired on {rule.expires}: the exported {target} configuration no "
            "longer applies its pins",
            rule=index,
        )
    if rule.expires is not None and not expiry:
        problems.error(
            f"{target} has no pin expiry; clients would keep enforcing the pins after "
            f"{rule.expires}",
            rule=index,
        )
    if rule.mode == "report" and not report_mode:
        problems.error(
            f"{target} has no report-only mode; this report-only rule would be enforced", rule=index
        )
    if rule.report_uri is not None and not report_uri:
        problems.warning(
            f"{target} cannot send reports; report_uri {rule.report_uri} is not exported",
            rule=index,
        )


def exportable_pins(
    rule: PinRule,
    index: int,
    problems: Problems,
    target: str,
    *,
    report_mode: bool,
    report_uri: bool,
    today: dt.date | None,
) -> list[Pin]:
    """`check_rule` for a *target* that has a pin expiry, then the rule's `spki_pins`.

    The Android, TrustKit and OkHttp exports all start a rule this way.
    """
    check_rule(
        rule,
        index,
        problems,
        target,
        expiry=True,
        report_mode=report_mode,
        report_uri=report_uri,
        today=today,
    )
    return spki_pins(rule, index, problems, target)


@dataclass(frozen=True, slots=True)
class Domain:
    """A platform's domain entry: a name and whether it covers subdomains."""

    name: str
    include_subdomains: bool


def domains(
    rule: PinRule, index: int, problems: Problems, target: str, *, one_level: bool = False
) -> list[Domain]:
    """Map a rule's host patterns to ``(domain, includeSubdomains)`` entries.

    Android and TrustKit's includeSubdomains covers any depth (like ``**.``); with *one_level*
    (ATS) it covers the domain and one more label only.
    """
    kinds: dict[str, set[Kind]] = {}
    for pattern in rule.hosts:
        kind = (
            Kind.ANY_DEPTH
            if rule.include_subdomains and pattern.kind is Kind.EXACT
            else pattern.kind
        )
        kinds.setdefault(pattern.base, set()).add(kind)
    out = []
    for base, found in kinds.items():
        if one_level:
            if Kind.ANY_DEPTH in found:
                problems.error(
                    f"{target}'s NSIncludesSubdomains covers one level only; **.{base} also covers "
                    f"deeper names (a.b.{base}), which would be left unpinned",
                    rule=index,
                )
            elif Kind.ONE_LABEL in found and Kind.EXACT not in found:
                problems.error(
                    f"{target} has no one-label wildcard; *.{base} becomes NSIncludesSubdomains on "
                    f"{base}, which also pins {base} itself",
                    rule=index,
                )
            # "x" plus "*.x" is exactly what NSIncludesSubdomains covers.
            out.append(Domain(base, Kind.ANY_DEPTH in found or Kind.ONE_LABEL in found))
            continue
        if Kind.ONE_LABEL in found and Kind.ANY_DEPTH not in found:
            also = "deeper names" if Kind.EXACT in found else f"{base} itself and deeper names"
            problems.error(
                f"{target} has no one-label wildcard; *.{base} becomes includeSubdomains on "
                f"{base}, which also pins {also}",
                rule=index,
            )
        out.append(Domain(base, Kind.ANY_DEPTH in found or Kind.ONE_LABEL in found))
    return out


def check_overlaps(policy: PinPolicy, problems: Problems, target: str) -> None:
    """Report rules that share hosts: the target uses one entry per host, not the union."""
    from tlspin.lint import _overlaps

    for i, j, shared in _overlaps(list(enumerate(policy.rules))):
        problems.error(
            f"rules #{i + 1} and #{j + 1} both cover {shared}: tlspin accepts the pins of both, "
            f"{target} uses only the most specific entry",
            rule=i,
        )


def is_ip(host: str) -> bool:
    """True for IPv4/IPv6 literals."""
    return bool(_IP.search(host))


def select_host(
    policy: PinPolicy, options: ExportOptions, problems: Problems, target: str
) -> tuple[str, tuple[PinRule, ...]] | None:
    """Pick the host a single-host target (HPKP, curl) is exported for, and its rules."""
    if options.host is not None:
        host = canonical_host(options.host)
    else:
        bases = {h.base for r in policy.rules for h in r.hosts}
        if len(bases) != 1:
            problems.error(
                f"{target} pins one host at a time; choose it with --host "
                f"(the policy covers {len(bases)} domains)",
                forceable=False,
            )
            return None
        host = bases.pop()
    rules = policy.rules_for(host)
    if not rules:
        problems.error(f"no rule of the policy covers {host}", forceable=False)
        return None
    return host, rules


def union_pins(rules: Iterable[PinRule]) -> list[AnyPin]:
    """Pins of *rules*, first seen first."""
    return list(dict.fromkeys(p for r in rules for p in r.pins))


def make_rule(hosts: Sequence[str], pins: Sequence[str | AnyPin], **options: Any) -> PinRule:
    """Build a rule without the single-pin warning (imports report what they find)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinglePinWarning)
        return PinRule(hosts, pins, **options)


def comment_text(text: str, *, forbid: str) -> str:
    """Make free text safe inside a comment: one line, printable ASCII, without *forbid*."""
    cleaned = "".join(
        ch if " " <= ch <= "~" and ch != "\\" else "?" for ch in text.replace("\n", " ")
    )
    while forbid in cleaned:
        cleaned = cleaned.replace(forbid, forbid[0] + " " + forbid[1:])
    return cleaned.strip()


def pin_label(rule: PinRule, pin: AnyPin) -> str | None:
    """``role: note`` for a pin with metadata, else None."""
    info = rule.info(pin)
    if info is None:
        return None
    parts = [p for p in (info.role, info.note) if p]
    if info.not_after is not None:
        parts.append(f"not after {info.not_after}")
    return ": ".join(parts[:2]) + (f" ({parts[2]})" if len(parts) > 2 else "") if parts else None


def xml_tree(
    data: bytes, what: str, *, doctype: str | None = None, invalid: str = "invalid XML"
) -> ET.Element:
    """Parse untrusted XML into an element tree, refusing every DTD feature in the parser.

    Configuration files never need a DTD, and its entities are how a small file expands into
    gigabytes or reads local files. The refusal runs inside expat, on the document as decoded
    (UTF-16 and every other encoding expat reads), not on the raw bytes, which an encoding
    hides a declaration from. A DOCTYPE is refused unless it names *doctype* and has no
    internal subset (a plist's ``<!DOCTYPE plist PUBLIC …>``); entity declarations always.
    Elements nested more than :data:`MAX_XML_DEPTH` deep are refused, so that no reader of
    the tree runs out of stack. A document that is not well-formed is *invalid* (the words
    the message starts with).

    Raises:
        PolicyError: too large, not well-formed, a DTD feature, or nested too deeply.
    """
    if len(data) > MAX_IMPORT_BYTES:
        msg = f"{what}: the file is larger than {MAX_IMPORT_BYTES} bytes"
        raise PolicyError(msg)
    # Namespaced names as ElementTree writes them ("{uri}tag"); expat gives "uri}tag".
    parser = expat.ParserCreate(None, "}")
    parser.buffer_text = True
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    builder = ET.TreeBuilder()
    depth = 0

    def name(text: str) -> str:
        return "{" + text if "}" in text else text

    def start(tag: str, attributes: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth > MAX_XML_DEPTH:
            msg = f"{what}: elements are nested more than {MAX_XML_DEPTH} deep"
            raise PolicyError(msg)
        builder.start(name(tag), {name(k): v for k, v in attributes.items()})

    def end(tag: str) -> None:
        nonlocal depth
        depth -= 1
        builder.end(name(tag))

    def start_doctype(
        doctype_name: str, system_id: str | None, public_id: str | None, internal: int
    ) -> None:
        if doctype is None or doctype_name != doctype or internal:
            msg = f"{what}: XML entity or DOCTYPE declarations are not accepted"
            raise PolicyError(msg)

    def refuse_entity(*_: object) -> None:
        msg = f"{what}: XML entity declarations are not accepted"
        raise PolicyError(msg)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = start_doctype
    parser.EntityDeclHandler = refuse_entity
    parser.UnparsedEntityDeclHandler = refuse_entity
    try:
        parser.Parse(data, True)
        return builder.close()
    except PolicyError:
        raise  # from a handler above: already says what was refused
    except expat.ExpatError as exc:
        msg = f"{what}: {invalid}: {exc}"
        raise PolicyError(msg) from None
    except (ValueError, LookupError) as exc:  # e.g. an encoding expat cannot read
        msg = f"{what}: {invalid}: {exc}"
        raise PolicyError(msg) from None


def inert_xml(text: str, fmt: str) -> str:
    """An exported XML document with control, bidi and line-separator characters (from a
    report URI) written as character references: the same document to a reader, inert on a
    terminal (the markup and comments tlspin writes are ASCII)."""
    from tlspin._shared.escapes import xml_inert

    try:
        return xml_inert(text)
    except ValueError as exc:
        msg = f"{fmt}: {exc}"
        raise PolicyError(msg) from None


def group_entries(
    entries: Sequence[tuple[str, dict[str, Any]]],
) -> list[tuple[list[str], dict[str, Any]]]:
    """Merge consecutive ``(host pattern, settings)`` entries with equal settings into rules."""
    groups: list[tuple[list[str], dict[str, Any]]] = []
    for host, settings in entries:
        if groups and groups[-1][1] == settings:
            groups[-1][0].append(host)
        else:
            groups.append(([host], settings))
    return groups
