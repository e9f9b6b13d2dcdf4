"""HTTP Public Key Pinning (RFC 7469) headers: export one host's pins, import a header.

``Public-Key-Pins: pin-sha256="…"; pin-sha256="…"; max-age=…; includeSubDomains; report-uri="…"``.
``--report-only`` writes ``Public-Key-Pins-Report-Only``. ``max-age`` runs to the end of the rule's
``expires`` day; an import turns it back into ``expires``. RFC 7469 requires a backup pin, so a
header with fewer than two pins is refused.
"""

from __future__ import annotations

import datetime as dt
import re

from tlspin.exceptions import PolicyError
from tlspin.formats import ExportOptions, Problems
from tlspin.formats._common import make_rule, select_host, spki_pins
from tlspin.hosts import Kind, canonical_host
from tlspin.pins import CertificatePin, Pin
from tlspin.policy import PinPolicy

HEADER = "Public-Key-Pins"
HEADER_RO = "Public-Key-Pins-Report-Only"
DEFAULT_MAX_AGE = 60 * 86400
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def export(policy: PinPolicy, fmt: str, options: ExportOptions, problems: Problems) -> str:
    """Write the header line for one host (``--host``, or the policy's only domain)."""
    chosen = select_host(policy, options, problems, "HPKP")
    if chosen is None:
        return ""
    host, rules = chosen
    index = policy.rules.index(rules[0])
    modes = {r.mode for r in rules}
    if len(modes) > 1:
        problems.error(
            f"the rules for {host} mix enforce and report-only; one header cannot do both",
            rule=index,
        )
    if "report" in modes and not options.report_only:
        problems.error(
            f"the rules for {host} are report-only; export them with --report-only", rule=index
        )
    if modes == {"enforce"} and options.report_only:
        problems.warning(f"the rules for {host} are enforced; this exports them as Report-Only")
    pins: list[Pin] = []
    for rule in rules:
        i = policy.rules.index(rule)
        if rule.deny:
            problems.error("HPKP has no deny list; the denied keys are not exported", rule=i)
        pins.extend(p for p in spki_pins(rule, i, problems, "HPKP") if p not in pins)
    if len(pins) < 2:
        problems.error(
            f"RFC 7469 requires a backup pin; {host} has {len(pins)} pin(s)",
            rule=index,
            forceable=False,
        )
    today = options.date
    dates = [r.expires for r in rules if r.expires is not None]
    if dates:
        days = (min(dates) - today).days + 1
        if days <= 0:
            problems.error(
                f"the rules for {host} expired on {min(dates)}; max-age would be 0, which "
                "removes the pins",
                rule=index,
                forceable=False,
            )
        max_age = max(days, 0) * 86400
    else:
        max_age = options.max_age if options.max_age is not None else DEFAULT_MAX_AGE
        if options.max_age is None:
            problems.warning(
                f"the rules for {host} have no expires; max-age defaults to "
                f"{DEFAULT_MAX_AGE} s (60 days)"
            )
    subdomains = any(
        (h.kind is Kind.ANY_DEPTH or (r.include_subdomains and h.kind is Kind.EXACT))
        and h.matches(host, include_subdomains=r.include_subdomains)
        for r in rules
        for h in r.hosts
    )
    uris = sorted({r.report_uri for r in rules if r.report_uri is not None})
    if len(uris) > 1:
        problems.error(
            f"the rules for {host} name {len(uris)} report URIs; a header carries one", rule=index
        )
    if options.report_only and not uris:
        problems.warning("a Report-Only header without report-uri reports nowhere")
    parts = [p.hpkp for p in pins] + [f"max-age={max_age}"]
    if subdomains:
        parts.append("includeSubDomains")
    if uris:
        quoted = uris[0].replace("\\", "\\\\").replace('"', '\\"')
        parts.append(f'report-uri="{quoted}"')
    name = HEADER_RO if options.report_only else HEADER
    return f"{name}: {'; '.join(parts)}\n"


def _skip(value: str, i: int, chars: str = " \t") -> int:
    """Return the index of the first character at or after *i* that is not in *chars*."""
    while i < len(value) and value[i] in chars:
        i += 1
    return i


def _token(value: str, i: int, expected: str) -> tuple[str, int]:
    """Return the token at *i* and the index after it; PolicyError naming *expected* if none."""
    match = _TOKEN.match(value, i)
    if match is None:
        msg = f"hpkp: expected {expected}"
        raise PolicyError(msg)
    return match.group(0), match.end()


def _directives(value: str) -> list[tuple[str, str | None]]:
    """Split a header value into ``(name, value)`` directives (RFC 7469 §2.1)."""
    out: list[tuple[str, str | None]] = []
    i, n = 0, len(value)
    while (i := _skip(value, i, " \t;")) < n:
        name, i = _token(value, i, f"a directive name at {value[i : i + 20]!r}")
        i = _skip(value, i)
        directive: str | None = None
        if i < n and value[i] == "=":
            i = _skip(value, i + 1)
            if i < n and value[i] == '"':
                i += 1
                chars = []
                while i < n and value[i] != '"':
                    if value[i] == "\\" and i + 1 < n:
                        i += 1
                    chars.append(value[i])
                    i += 1
                if i >= n:
                    msg = f"hpkp: unterminated quoted value for {name}"
                    raise PolicyError(msg)
                i += 1
                directive = "".join(chars)
            else:
                directive, i = _token(value, i, f"a value for {name}")
        i = _skip(value, i)
        if i < n and value[i] != ";":
            msg = f"hpkp: expected ';' after {name}, found {value[i]!r}"
            raise PolicyError(msg)
        out.append((name, directive))
    return out


def parse(data: bytes, fmt: str, options: ExportOptions, problems: Problems) -> PinPolicy:
    """Read a ``Public-Key-Pins`` (or ``-Report-Only``) header, with or without its name."""
    if options.host is None:
        msg = "hpkp: a header does not name its host; give it with --host"
        raise PolicyError(msg)
    host = canonical_host(options.host)
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        msg = "hpkp: a header must be ASCII text"
        raise PolicyError(msg) from None
    if "\n" in text:
        msg = "hpkp: expected one header line, found several lines"
        raise PolicyError(msg)
    mode = "enforce"
    name, sep, rest = text.partition(":")
    if sep and name.strip().lower() in (HEADER.lower(), HEADER_RO.lower()):
        mode = "report" if name.strip().lower() == HEADER_RO.lower() else "enforce"
        text = rest
    seen: set[str] = set()
    pins: list[Pin | CertificatePin] = []
    max_age: int | None = None
    subdomains = False
    report_uri: str | None = None
    for key, value in _directives(text):
        low = key.lower()
        if low != "pin-sha256" and low in seen:
            msg = f"hpkp: directive {key} appears twice (RFC 7469 forbids it)"
            raise PolicyError(msg)
        seen.add(low)
        if low == "pin-sha256":
            if value is None:
                msg = "hpkp: pin-sha256 needs a value"
                raise PolicyError(msg)
            pins.append(Pin.parse(value))
        elif low.startswith("pin-"):
            problems.warning(f"directive {key} is ignored: tlspin accepts only pin-sha256")
        elif low == "max-age":
            if value is None or not value.isdigit():
                msg = f"hpkp: max-age must be a number of seconds, found {value!r}"
                raise PolicyError(msg)
            max_age = int(value)
        elif low == "includesubdomains":
            subdomains = True
        elif low == "report-uri":
            report_uri = value
        else:
            problems.warning(f"unknown directive {key} is ignored (as RFC 7469 requires)")
    if max_age is None:
        msg = "hpkp: max-age is missing (RFC 7469 requires it)"
        raise PolicyError(msg)
    if not pins:
        msg = "hpkp: no pin-sha256 directive found"
        raise PolicyError(msg)
    days = max_age // 86400
    if max_age == 0:
        msg = "hpkp: max-age=0 removes the host's pins; there is nothing to import"
        raise PolicyError(msg)
    today = options.date
    expires = today + dt.timedelta(days=days - 1) if days >= 1 else today
    if max_age % 86400:
        problems.warning(
            f"max-age {max_age} s is not whole days; expires rounded down to {expires}"
        )
    return PinPolicy(
        [
            make_rule(
                [f"**.{host}" if subdomains else host],
                pins,
                expires=expires,
                mode=mode,
                report_uri=report_uri,
            )
        ]
    )
