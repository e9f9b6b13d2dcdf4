"""HTTP Public Key Pinning (RFC 7469) headers: export one host's pins, import a header.

``Public-Key-Pins: pin-sha256="…"; pin-sha256="…"; max-age=…; includeSubDomains; report-uri="…"``.
``--report-only`` writes ``Public-Key-Pins-Report-Only``. ``max-age`` runs to the end of the rule's
``expires`` day; an import turns it back into ``expires``. RFC 7469 requires a backup pin, so a
header with fewer than two pins is refused.

The import follows what browsers did with a header (Chromium's ``http_security_headers.cc`` and
Firefox's ``nsSiteSecurityService``; their test vectors are in the suite), and the RFC where they
differ:

* directive names are case-insensitive, unknown directives are ignored (with a warning), a
  directive other than ``pin-*`` may appear once (Firefox refuses a repeat; RFC 7469 §2.1);
* ``pin-sha256`` and ``report-uri`` values are quoted strings, ``max-age`` a token or quoted
  string; a quoted string uses double quotes and ``\\`` escapes (RFC 7230 §3.2.6);
* an enforced header needs two distinct pins (RFC 7469 §2.5: a header without a backup pin is
  not noted; Chromium and Firefox ignore it);
* ``max-age`` above 60 days counts as 60 days, and a number too large for any integer type as
  the largest value (RFC 7234 §1.2.1): 60 days is the cap of Chromium (``kMaxHPKPAgeSecs``)
  and Firefox (``security.cert_pinning.max_max_age_seconds``), RFC 7469 §4.1's suggestion;
* ``Public-Key-Pins-Report-Only`` needs no ``max-age`` (browsers ignore it there); when given,
  it still becomes the report-only rule's ``expires``;
* a ``report-uri`` is made a URL as browsers make it: surrounding spaces and control characters
  and any tab or newline are dropped, other control characters, spaces and non-ASCII bytes are
  percent-encoded (``%7F``); one whose host holds such a character is refused.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from tlspin.exceptions import PolicyError
from tlspin.formats import ExportOptions, Problems
from tlspin.formats._common import make_rule, select_host, spki_pins
from tlspin.hosts import Kind, canonical_host
from tlspin.pins import CertificatePin, Pin
from tlspin.policy import PinPolicy

HEADER = "Public-Key-Pins"
HEADER_RO = "Public-Key-Pins-Report-Only"
DEFAULT_MAX_AGE = 60 * 86400
#: The longest max-age browsers honoured: Chromium's kMaxHPKPAgeSecs and Firefox's default
#: security.cert_pinning.max_max_age_seconds, both 60 days (RFC 7469 §4.1's suggestion).
MAX_AGE_CAP = 60 * 86400
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_DIGITS = re.compile(r"[0-9]+")
# WHATWG URL parsing drops tabs and newlines; these are always percent-encoded after the host.
_TAB_NEWLINE = str.maketrans("", "", "\t\n\r")
_ALWAYS_ESCAPED = frozenset('"<>`')
_QUOTED_ONLY = ("pin-sha256", "report-uri")


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
        if days * 86400 > MAX_AGE_CAP:
            problems.warning(
                f"max-age={days * 86400} is more than the 60 days browsers honour (Chromium and "
                f"Firefox cap it there): they stop enforcing 60 days after a visit, not on "
                f"{min(dates)}"
            )
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
        try:
            uri, changed = percent_encode_uri(uris[0], "hpkp: report_uri")
        except PolicyError as exc:
            problems.error(str(exc), rule=index, forceable=False)
            uri, changed = uris[0], False
        if changed:
            problems.warning(f"report_uri {uris[0]!r} is written as {uri} (a header is ASCII)")
        quoted = uri.replace("\\", "\\\\").replace('"', '\\"')
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


@dataclass(frozen=True, slots=True)
class _Directive:
    name: str
    value: str | None
    quoted: bool


def _quoted(value: str, i: int, name: str) -> tuple[str, int]:
    """The quoted string opening at *i* (RFC 7230 §3.2.6, with its quoted-pairs), and the index
    after it."""
    chars = []
    i += 1
    while i < len(value) and value[i] != '"':
        if value[i] == "\\" and i + 1 < len(value):
            i += 1
        chars.append(value[i])
        i += 1
    if i >= len(value):
        msg = f"hpkp: unterminated quoted value for {name}"
        raise PolicyError(msg)
    return "".join(chars), i + 1


def _directives(value: str) -> list[_Directive]:
    """Split a header value into its directives (RFC 7469 §2.1)."""
    out: list[_Directive] = []
    i, n = 0, len(value)
    while (i := _skip(value, i, " \t;")) < n:
        name, i = _token(value, i, f"a directive name at {value[i : i + 20]!r}")
        i = _skip(value, i)
        directive: str | None = None
        quoted = False
        if i < n and value[i] == "=":
            i = _skip(value, i + 1)
            if i < n and value[i] == '"':
                directive, i = _quoted(value, i, name)
                quoted = True
            elif i < n and value[i] == "'":
                # Chromium alone read single quotes; RFC 7230 and Firefox do not.
                msg = f"hpkp: {name} has a single-quoted value; HTTP quotes with '\"' only"
                raise PolicyError(msg)
            else:
                directive, i = _token(value, i, f"a value for {name}")
        i = _skip(value, i)
        if i < n and value[i] != ";":
            if directive is not None and not quoted and name.lower() in _QUOTED_ONLY:
                # An unquoted base64 pin or URL stops at its first '=', '/' or ':'.
                msg = f'hpkp: {name} takes a quoted value ({name}="…"), found it unquoted'
            else:
                msg = f"hpkp: expected ';' after {name}, found {value[i]!r}"
            raise PolicyError(msg)
        out.append(_Directive(name, directive, quoted))
    return out


def _max_age(value: str | None) -> tuple[int, bool]:
    """Seconds of a ``max-age`` value, at most :data:`MAX_AGE_CAP`, and whether it was capped."""
    if value is None or not _DIGITS.fullmatch(value):
        found = "no value" if value is None else repr(value)
        msg = f"hpkp: max-age must be a number of seconds (digits only), found {found}"
        raise PolicyError(msg)
    # RFC 7234 §1.2.1: a number too large to represent means the largest one. Python would
    # represent it, but int() of thousands of digits is refused, and no date is that far.
    if len(value) > 12 or int(value) > MAX_AGE_CAP:
        return MAX_AGE_CAP, True
    return int(value), False


def percent_encode_uri(text: str, what: str) -> tuple[str, bool]:
    """Make *text* a URL as a browser would: the WHATWG URL parser's clean-up, then
    percent-encoding of what a URL cannot hold raw. Returns the URL and whether it changed.

    Raises:
        PolicyError: the URL's scheme or host holds such a character, or it is not absolute.
    """
    cleaned = text.strip("".join(map(chr, range(0x21)))).translate(_TAB_NEWLINE)
    scheme, sep, rest = cleaned.partition("://")
    end = next((k for k, ch in enumerate(rest) if ch in "/?#"), len(rest))
    authority, tail = rest[:end], rest[end:]
    if not sep or not authority or any(_needs_escape(ch) for ch in scheme + authority):
        msg = f"{what}: expected an absolute http(s) URL with a plain host, found {text!r}"
        raise PolicyError(msg)
    encoded = "".join(
        "".join(f"%{b:02X}" for b in ch.encode("utf-8")) if _needs_escape(ch) else ch
        for ch in tail
    )
    url = f"{scheme}{sep}{authority}{encoded}"
    return url, url != text


def _needs_escape(ch: str) -> bool:
    return ch <= " " or ch >= "\x7f" or ch in _ALWAYS_ESCAPED


def parse(data: bytes, fmt: str, options: ExportOptions, problems: Problems) -> PinPolicy:
    """Read a ``Public-Key-Pins`` (or ``-Report-Only``) header, with or without its name."""
    if options.host is None:
        msg = "hpkp: a header does not name its host; give it with --host"
        raise PolicyError(msg)
    host = canonical_host(options.host)
    # Latin-1 keeps every byte as one character: obs-text in a quoted string survives to be
    # percent-encoded, and anything non-ASCII elsewhere fails the token grammar.
    text = data.decode("latin-1").strip()
    if "\n" in text or "\r" in text:
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
    for directive in _directives(text):
        key, value, low = directive.name, directive.value, directive.name.lower()
        if not low.startswith("pin-") and low in seen:
            msg = f"hpkp: directive {key} appears twice (RFC 7469 §2.1 forbids it)"
            raise PolicyError(msg)
        seen.add(low)
        if low == "pin-sha256":
            if value is None or not directive.quoted:
                msg = (
                    'hpkp: pin-sha256 takes a quoted value (pin-sha256="<base64>"), '
                    f"found {value!r}"
                )
                raise PolicyError(msg)
            if not value:
                msg = 'hpkp: an empty pin-sha256="" is not a pin'
                raise PolicyError(msg)
            pins.append(Pin.parse(value))
        elif low.startswith("pin-"):
            problems.warning(f"directive {key} is ignored: tlspin accepts only pin-sha256")
        elif low == "max-age":
            max_age, capped = _max_age(value)
            if capped and value is not None:
                problems.warning(
                    f"max-age={value if len(value) <= 20 else value[:20] + '…'} is more than "
                    f"the {MAX_AGE_CAP} s (60 days) browsers honoured (Chromium and Firefox cap "
                    "it there): imported as 60 days"
                )
        elif low == "includesubdomains":
            if value is not None:
                msg = f"hpkp: includeSubDomains takes no value, found {value!r}"
                raise PolicyError(msg)
            subdomains = True
        elif low == "report-uri":
            if value is None or not directive.quoted:
                msg = (
                    'hpkp: report-uri takes a quoted URL (report-uri="https://…"), '
                    f"found {value!r}"
                )
                raise PolicyError(msg)
            report_uri, changed = percent_encode_uri(value, "hpkp: report-uri")
            if changed:
                problems.warning(
                    f"report-uri {value!r} held characters a URL cannot carry raw; read as "
                    f"{report_uri} (percent-encoded, as browsers do)"
                )
        else:
            problems.warning(f"unknown directive {key} is ignored (as RFC 7469 requires)")
    if mode == "enforce" and max_age is None:
        msg = "hpkp: max-age is missing (RFC 7469 §2.1.2 requires it in Public-Key-Pins)"
        raise PolicyError(msg)
    if mode == "enforce" and max_age == 0:
        msg = "hpkp: max-age=0 removes the host's pins; there is nothing to import"
        raise PolicyError(msg)
    if not pins:
        msg = "hpkp: no pin-sha256 directive found"
        raise PolicyError(msg)
    distinct = list(dict.fromkeys(pins))
    if mode == "enforce":
        if len(distinct) < 2:
            msg = (
                f"hpkp: the header has {len(distinct)} distinct pin; RFC 7469 §2.5 requires a "
                "backup pin, so browsers ignore such a header (Chromium and Firefox refuse it) "
                "and so does this import"
            )
            raise PolicyError(msg)
    elif len(distinct) < 2:
        problems.warning("the report-only header has one pin: reports will name no backup key")
    if mode == "report" and report_uri is None:
        problems.warning("a report-only header without report-uri reports nowhere")
    expires = None
    if max_age:  # Report-Only: max-age is optional, and 0 (or none) leaves no expiry
        days = max_age // 86400
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
                distinct,
                expires=expires,
                mode=mode,
                report_uri=report_uri,
            )
        ]
    )
