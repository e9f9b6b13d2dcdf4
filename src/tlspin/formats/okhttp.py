"""OkHttp ``CertificatePinner``: a Kotlin or Java builder expression, and its import.

OkHttp matches exactly like tlspin (``*.`` one label, ``**.`` any depth, the union of all matching
pins), so hosts and pins map one to one. OkHttp has no expiry, report-only mode, deny list or
reporting. ``**.`` needs OkHttp ≥ 4.3: for OkHttp 3 (``okhttp_version=3``, what Debian ships) it
is expanded to ``x`` plus ``*.x``, which leaves deeper names unpinned: an error unless forced.
OkHttp 3 also needs IPv6 patterns in brackets (``[::1]``).
"""

from __future__ import annotations

import re

from tlspin.exceptions import PolicyError
from tlspin.formats import ExportOptions, Problems
from tlspin.formats._common import (
    check_rule,
    comment_text,
    group_entries,
    make_rule,
    pin_label,
    spki_pins,
)
from tlspin.hosts import Kind
from tlspin.pins import Pin
from tlspin.policy import PinPolicy

_STRING = r'"(?:[^"\\\n]|\\.)*"'
_ADD = re.compile(r"\.add\s*\(")
_ADD_CALL = re.compile(rf"\.add\s*\(\s*({_STRING})((?:\s*,\s*{_STRING})+)\s*,?\s*\)")
_ARG = re.compile(_STRING)


def _patterns(
    rule_hosts: list[tuple[Kind, str]], version: int, index: int, problems: Problems
) -> list[str]:
    out: list[str] = []
    for kind, base in rule_hosts:
        if kind is Kind.EXACT and version == 3 and ":" in base:
            # OkHttp 3 reads a pattern as the host of "http://" + pattern: an IPv6 address
            # needs its brackets there ("::1" throws), while OkHttp 4 takes either form.
            out.append(f"[{base}]")
        elif kind is Kind.EXACT:
            out.append(base)
        elif kind is Kind.ONE_LABEL:
            out.append(f"*.{base}")
        elif version >= 4:
            out.append(f"**.{base}")
        else:
            problems.error(
                f"OkHttp 3 has no '**.' patterns; **.{base} becomes {base} and *.{base}, which "
                f"leave deeper names (a.b.{base}) unpinned (use OkHttp >= 4.3, or --force)",
                rule=index,
            )
            out.extend([base, f"*.{base}"])
    return list(dict.fromkeys(out))


def export(policy: PinPolicy, fmt: str, options: ExportOptions, problems: Problems) -> str:
    """Write a ``CertificatePinner.Builder()…build()`` expression (Kotlin or Java)."""
    if options.okhttp_version not in (3, 4, 5):
        msg = f"--okhttp-version must be 3, 4 or 5, found {options.okhttp_version}"
        raise PolicyError(msg)
    java = fmt == "okhttp-java"
    target = "OkHttp"
    lines = ["new CertificatePinner.Builder()" if java else "CertificatePinner.Builder()"]
    for index, rule in enumerate(policy.rules):
        check_rule(rule, index, problems, target, expiry=False, report_mode=False, report_uri=False)
        pins = spki_pins(rule, index, problems, target)
        if not pins:
            continue
        hosts = [
            (Kind.ANY_DEPTH if rule.include_subdomains and h.kind is Kind.EXACT else h.kind, h.base)
            for h in rule.hosts
        ]
        for pattern in _patterns(hosts, options.okhttp_version, index, problems):
            lines.append(f'    .add("{pattern}",')
            for n, pin in enumerate(pins):
                end = "," if n < len(pins) - 1 else ")"
                label = pin_label(rule, pin)
                comment = f"  // {comment_text(label, forbid='*/')}" if label else ""
                lines.append(f'        "{pin}"{end}{comment}')
    lines.append("    .build()")
    return "\n".join(lines) + "\n"


def _strip_comments(source: str) -> str:
    """Remove // and /* */ comments outside string literals."""
    out: list[str] = []
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch == '"':
            match = re.compile(_STRING).match(source, i)
            if match is None:
                msg = "okhttp-java: unterminated string literal"
                raise PolicyError(msg)
            out.append(match.group(0))
            i = match.end()
        elif source.startswith("//", i):
            end = source.find("\n", i)
            i = n if end < 0 else end
        elif source.startswith("/*", i):
            end = source.find("*/", i + 2)
            if end < 0:
                msg = "okhttp-java: unterminated /* comment"
                raise PolicyError(msg)
            out.append(" ")
            i = end + 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _literal(text: str) -> str:
    body = text[1:-1]
    if "\\" in body:
        if re.search(r"\\[^\"\\/]", body):
            msg = f"okhttp-java: unsupported escape in string literal {text}"
            raise PolicyError(msg)
        body = re.sub(r"\\(.)", r"\1", body)
    return body


def parse(data: bytes, fmt: str, options: ExportOptions, problems: Problems) -> PinPolicy:
    """Read ``.add("pattern", "sha256/…", …)`` calls from Java or Kotlin source.

    Only string literals are understood; any other ``.add(`` call is an error, never skipped.
    """
    try:
        source = _strip_comments(data.decode("utf-8"))
    except UnicodeDecodeError:
        msg = "okhttp-java: the file is not UTF-8 text"
        raise PolicyError(msg) from None
    calls = list(_ADD_CALL.finditer(source))
    if len(calls) != len(_ADD.findall(source)):
        msg = (
            "okhttp-java: found .add( calls that are not of the form "
            '.add("pattern", "sha256/…", …) with string literals only'
        )
        raise PolicyError(msg)
    if not calls:
        msg = 'okhttp-java: no .add("pattern", "sha256/…") call found'
        raise PolicyError(msg)
    entries = []
    for call in calls:
        pattern = _literal(call.group(1))
        pins = [_literal(arg) for arg in _ARG.findall(call.group(2))]
        for pin in pins:
            if pin.startswith("sha1/"):
                msg = (
                    f"okhttp-java: {pattern} has a SHA-1 pin ({pin}); tlspin accepts "
                    "only sha256/ pins"
                )
                raise PolicyError(msg)
        entries.append((pattern, {"pins": tuple(str(Pin.parse(p)) for p in pins)}))
    rules = [make_rule(hosts, list(settings["pins"])) for hosts, settings in group_entries(entries)]
    problems.warning("OkHttp has no expiry: the imported rules have no 'expires'; add one")
    return PinPolicy(rules)
