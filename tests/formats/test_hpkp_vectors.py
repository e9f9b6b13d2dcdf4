"""HPKP import against the browsers' own test vectors, not against tlspin's output.

The headers below are the inputs of Chromium's ``net/http/http_security_headers_unittest.cc``
(``TestBogusPinsHeaders``, ``TestValidPKPHeaders``) and of Firefox's
``security/manager/ssl/tests/unit/test_pinning_header_parsing.js``, with what each browser did
with them. Where the browsers disagree, the import follows the RFC; each such case says so.
"""

from __future__ import annotations

import base64
import datetime as dt

import pytest

from cli.world import World, invoke
from tlspin.exceptions import PinConfigurationError, PolicyError
from tlspin.formats import Imported, import_policy
from tlspin.pins import Pin
from tlspin.policy import PinPolicy

TODAY = dt.date(2026, 3, 1)
HOST = "example.com"
SIXTY_DAYS = TODAY + dt.timedelta(days=59)  # max-age = 60 days covers today and 59 more


def chromium_pin(label: int, *, quoted: bool = True) -> str:
    """Chromium's GetTestPin(label): 32 bytes of *label*, base64, as a pin-sha256 directive."""
    value = base64.b64encode(bytes([label]) * 32).decode()
    return f'pin-sha256="{value}"' if quoted else f"pin-sha256={value}"


GOOD, GOOD2, BACKUP = chromium_pin(2), chromium_pin(3), chromium_pin(4)
GOOD_UNQUOTED = chromium_pin(2, quoted=False)
FORTY_FIVE_NINES = "9" * 45


def parse(header: str, *, report_only: bool = False) -> Imported:
    """Import *header* (as Public-Key-Pins, or -Report-Only) for example.com, as of TODAY."""
    name = "Public-Key-Pins-Report-Only" if report_only else "Public-Key-Pins"
    return import_policy(f"{name}: {header}".encode("latin-1"), "hpkp", host=HOST, today=TODAY)


# Chromium TestBogusPinsHeaders: every one of these was refused.
CHROMIUM_BOGUS = [
    "",
    "    ",
    "abc",
    "  abc",
    "  abc   ",
    "max-age",
    "  max-age",
    "  max-age  ",
    "max-age=",
    "   max-age=",
    "   max-age  =",
    "   max-age=   ",
    "   max-age  =     ",
    "   max-age  =     xy",
    "   max-age  =     3488a923",
    "max-age=3488a923  ",
    f"max-ag=3488923pins={GOOD},{BACKUP}",
    f'max-age=3488923;pins={GOOD},{BACKUP}report-uri="http://foo.com"',
    f"max-aged=3488923{BACKUP}",
    f"max-aged=3488923; {BACKUP}",
    f"max-aged=3488923; {BACKUP};{BACKUP}",
    f"max-aged=3488923; {GOOD};{GOOD}",
    f"max-aged=3488923; {GOOD}",
    "max-age==3488923",
    "amax-age=3488923",
    "max-age=-3488923",
    "max-age=3488923;",
    "max-age=3488923     e",
    "max-age=3488923     includesubdomain",
    'max-age=3488923     report-uri="http://foo.com"',
    "max-age=34889.23",
    f"max-age=243; {GOOD_UNQUOTED};{BACKUP}",
    f"max-age=243; {GOOD};{BACKUP};report-uri=;",
    f"max-age=243; {GOOD};{BACKUP};report-uri=http://foo.com;",
    f"max-age=243; {GOOD};{BACKUP};report-uri=''",
    f"max-age=999; {BACKUP}; {GOOD}; report-uri=\"http://foo;bar'",
    f"max-age=999; {BACKUP}; {GOOD}; report-uri=\"foo;bar'",
]


@pytest.mark.parametrize("header", CHROMIUM_BOGUS)
def test_chromium_bogus_headers_are_refused(header: str) -> None:
    """Each header Chromium refused is refused, as a configuration error (a ValueError)."""
    with pytest.raises(PinConfigurationError):
        parse(header)


# Chromium TestValidPKPHeaders: accepted, with these max-ages (capped at kMaxHPKPAgeSecs,
# 60 days), includeSubdomains and report-uri. max-age below a day leaves expires = today.
CHROMIUM_VALID = [
    (f"max-age=243; {GOOD};{BACKUP}", TODAY, False, None),
    (
        f'max-age=243; {GOOD};{BACKUP}; report-uri= "http://example.test/foo"',
        TODAY,
        False,
        "http://example.test/foo",
    ),
    (
        f'   {GOOD}; {BACKUP}  ; Max-agE    = 567; repOrT-URi = "http://example.test/foo"',
        TODAY,
        False,
        "http://example.test/foo",
    ),
    (f"includeSubDOMAINS;{GOOD};{BACKUP}  ; mAx-aGe    = 890      ", TODAY, True, None),
    (f"{GOOD};{BACKUP}; max-age=123;IGNORED;", TODAY, False, None),
    (f"max-age=394082;{BACKUP};{GOOD};  ", TODAY + dt.timedelta(days=3), False, None),
    (f"max-age=39408299  ;{BACKUP};{GOOD};  ", SIXTY_DAYS, False, None),
    (
        f"max-age=39408038  ;    cybers=39408038  ;  includeSubdomains; {GOOD};{BACKUP};   ",
        SIXTY_DAYS,
        True,
        None,
    ),
    (f"  max-age={FORTY_FIVE_NINES}  ;  {BACKUP};{GOOD};   ", SIXTY_DAYS, False, None),
    (
        f'  max-age={FORTY_FIVE_NINES}  ;  {BACKUP};{GOOD};   report-uri="http://example.test/foo"',
        SIXTY_DAYS,
        False,
        "http://example.test/foo",
    ),
    (f"  max-age=999;  {BACKUP};{GOOD2};   ", TODAY, False, None),
    (
        f'max-age=999; {BACKUP}; {GOOD}; report-uri="http://foo.com/?;bar"',
        TODAY,
        False,
        "http://foo.com/?;bar",
    ),
    # A raw DEL in the report-uri: Chromium's GURL percent-encodes it.
    (
        f'max-age=999; {BACKUP}; {GOOD}; report-uri="http://foo.com/\x7f"',
        TODAY,
        False,
        "http://foo.com/%7F",
    ),
]


@pytest.mark.parametrize(("header", "expires", "subdomains", "report_uri"), CHROMIUM_VALID)
def test_chromium_valid_headers_are_imported(
    header: str, expires: dt.date, subdomains: bool, report_uri: str | None
) -> None:
    """Each header Chromium accepted imports as one enforced rule with its two pins, the
    max-age Chromium would have used (as expires), includeSubdomains and report-uri."""
    (rule,) = parse(header).policy.rules
    assert rule.mode == "enforce"
    assert len(rule.pins) == 2
    assert set(rule.pins) <= {Pin.parse(v) for v in (GOOD, GOOD2, BACKUP)}
    assert rule.expires == expires
    assert rule.hosts[0].text == (f"**.{HOST}" if subdomains else HOST)
    assert rule.report_uri == report_uri


def test_forty_five_digit_max_age_is_the_largest_value() -> None:
    """RFC 7234 §1.2.1: a max-age too large to represent means the largest value, which the
    browsers' 60-day cap then limits; the import says so instead of crashing."""
    imported = parse(f"max-age={FORTY_FIVE_NINES}; {GOOD}; {BACKUP}")
    assert imported.policy.rules[0].expires == SIXTY_DAYS
    assert any("60 days" in str(p) for p in imported.problems)
    huge = parse(f"max-age={'9' * 5000}; {GOOD}; {BACKUP}")  # past int()'s digit limit too
    assert huge.policy.rules[0].expires == SIXTY_DAYS


def test_del_in_report_uri_is_percent_encoded_and_never_exported_raw() -> None:
    """The DEL Chromium's vector carries is percent-encoded on import, with a warning; a policy
    cannot hold one raw, so no export writes it into a header."""
    imported = parse(f'max-age=999; {BACKUP}; {GOOD}; report-uri="http://foo.com/\x7f"')
    assert imported.policy.rules[0].report_uri == "http://foo.com/%7F"
    assert any("percent-encoded" in str(p) for p in imported.problems)
    with pytest.raises(PolicyError, match="plain host"):
        parse(f'max-age=999; {BACKUP}; {GOOD}; report-uri="http://foo\x7f.com/"')
    pins = ", ".join(f'"{Pin.parse(p)}"' for p in (GOOD, BACKUP))
    raw = f'[[rule]]\nhosts = ["{HOST}"]\npins = [{pins}]\nreport_uri = "http://foo.com/\\u007f"\n'
    with pytest.raises(PolicyError, match="control characters"):
        PinPolicy.loads(raw)


@pytest.mark.parametrize(
    ("uri", "concern"),
    [
        ("http://127.0.0.1:6379/x", "loopback, private"),
        ("https://localhost/r", "own machine"),
        ("https://169.254.169.254/latest", "loopback, private"),
        ("https://[::1]:8080/r", "loopback, private"),
        ("https://127.1/r", "loopback, private"),
        ("https://redis/r", "single-label"),
        ("http://reports.example.com/r", "plain http"),
        ("https://reports.example.com/r", None),
    ],
)
def test_a_local_or_cleartext_report_uri_is_imported_with_a_warning(
    uri: str, concern: str | None
) -> None:
    """A header's report-uri toward the client's own machine or network (request forgery
    toward, e.g., Redis on 127.0.0.1:6379) or in clear is kept but never silently: the import
    warns, as lint's TP020 does. Twin: a public https URI imports without a word."""
    imported = parse(f'max-age=999; {BACKUP}; {GOOD}; report-uri="{uri}"')
    assert imported.policy.rules[0].report_uri == uri
    found = [str(p) for p in imported.problems if "report_uri" in str(p)]
    if concern is None:
        assert found == []
    else:
        assert len(found) == 1
        assert concern in found[0]


@pytest.mark.parametrize(
    "header",
    [
        f"max-age='999'; {BACKUP}; {GOOD}",
        f"max-age=999; {BACKUP}; {GOOD}; report-uri='http://foo.com\\'\\a'",
    ],
)
def test_single_quotes_are_refused(header: str) -> None:
    """Chromium alone read single-quoted values; RFC 7230 quotes with '"' and Firefox's parser
    refuses them, so the import does too (twin: the double-quoted form is accepted)."""
    with pytest.raises(PolicyError, match="single-quoted"):
        parse(header)
    assert parse(header.replace("'999'", '"999"').replace("report-uri='", 'report-uri="')
                 .replace("\\a'", '\\a"'))


def test_quoted_pairs_are_unescaped() -> None:
    """A quoted-pair stands for its character (RFC 7230 §3.2.6): \\a is a, \\" a quote, which
    the URL then carries percent-encoded."""
    rule = parse(f'max-age=999; {BACKUP}; {GOOD}; report-uri="http://foo.com/\\a\\"b"').policy
    assert rule.rules[0].report_uri == "http://foo.com/a%22b"


def test_report_only_needs_no_max_age() -> None:
    """Chromium's Report-Only vector has no max-age (it means nothing there): it imports as a
    report-only rule with no expiry; the same header as Public-Key-Pins is refused."""
    header = f'{BACKUP}; {GOOD}; report-uri="http://foo.com"'
    (rule,) = parse(header, report_only=True).policy.rules
    assert (rule.mode, rule.expires, rule.report_uri) == ("report", None, "http://foo.com")
    with pytest.raises(PolicyError, match="max-age is missing"):
        parse(header)


def test_report_only_keeps_a_given_max_age_and_allows_one_pin() -> None:
    """A Report-Only header's max-age, when present, still gives the rule an expiry, and one pin
    is allowed (Chromium checks no backup pin there: nothing is enforced)."""
    imported = parse(f'max-age=86400; {GOOD}; report-uri="https://r.example/"', report_only=True)
    (rule,) = imported.policy.rules
    assert (rule.mode, rule.expires, len(rule.pins)) == ("report", TODAY, 1)
    assert any("one pin" in str(p) for p in imported.problems)


# Firefox test_pinning_header_parsing.js: its pins and directives.
FF_VALID_PIN = 'pin-sha256="VCIlmPM9NkgFQtrs4Oa5TeFcDu6MWRTKSNdePEhOgD8=";'
FF_BACKUP_1 = f'pin-sha256="{"A" * 43}=";'
FF_BACKUP_2 = f'pin-sha256="{"Z" * 43}=";'
FF_BROKEN_PIN = 'pin-sha256="jdjsjsjs";'
FF_MAX_AGE = "max-age=69403;"
FF_INCLUDE_SUBDOMAINS = "includeSubdomains;"
FF_REPORT_URI = 'report-uri="https://www.example.com/report/";'
FF_UNKNOWN = "unreconized-dir=12343;"

FIREFOX_BOGUS = [
    ("max-age=INVALID", "max-age must be a number"),
    (FF_MAX_AGE, "no pin-sha256"),
    (FF_VALID_PIN, "max-age is missing"),
    (FF_REPORT_URI, "max-age is missing"),
    (FF_UNKNOWN, "max-age is missing"),
    (FF_VALID_PIN + FF_BACKUP_1, "max-age is missing"),
    (FF_MAX_AGE + FF_VALID_PIN, "backup pin"),
    (FF_MAX_AGE + FF_VALID_PIN + FF_BROKEN_PIN, "jdjsjsjs"),
    (FF_MAX_AGE + FF_VALID_PIN + FF_VALID_PIN, "backup pin"),  # one pin, twice
    (FF_MAX_AGE + FF_MAX_AGE + FF_VALID_PIN + FF_BACKUP_1, "appears twice"),
    (FF_MAX_AGE + FF_VALID_PIN + FF_BACKUP_1 + FF_INCLUDE_SUBDOMAINS * 2, "appears twice"),
    (FF_MAX_AGE + FF_VALID_PIN + FF_BACKUP_1 + FF_REPORT_URI * 2, "appears twice"),
    ("thisisinvalidtest", "max-age is missing"),
    ("invalid" + FF_MAX_AGE + FF_VALID_PIN + FF_BACKUP_1, "max-age is missing"),
]


@pytest.mark.parametrize(("header", "why"), FIREFOX_BOGUS)
def test_firefox_bogus_headers_are_refused_for_the_same_reason(header: str, why: str) -> None:
    """Each header Firefox refused is refused, and the message names Firefox's reason."""
    with pytest.raises(PinConfigurationError, match=why):
        parse(header)


@pytest.mark.parametrize(
    "header", ["max-age=0", "max-age=0;", "max-age=0;" + FF_VALID_PIN, FF_VALID_PIN + "max-age=0;"]
)
def test_firefox_removal_headers_have_nothing_to_import(header: str) -> None:
    """max-age=0 told Firefox to forget the host's pins: there is no rule to import."""
    with pytest.raises(PolicyError, match="nothing to import"):
        parse(header)


@pytest.mark.parametrize(
    ("header", "subdomains", "report_uri"),
    [
        (FF_MAX_AGE + FF_VALID_PIN + FF_BACKUP_1, False, None),
        (FF_MAX_AGE + FF_VALID_PIN + FF_BACKUP_2, False, None),
        (FF_MAX_AGE + FF_VALID_PIN + FF_BACKUP_2 + FF_INCLUDE_SUBDOMAINS, True, None),
        (FF_VALID_PIN + FF_MAX_AGE + FF_BACKUP_2 + FF_INCLUDE_SUBDOMAINS, True, None),
        (
            FF_VALID_PIN + FF_MAX_AGE + FF_BACKUP_2 + FF_REPORT_URI + FF_INCLUDE_SUBDOMAINS,
            True,
            "https://www.example.com/report/",
        ),
        (FF_INCLUDE_SUBDOMAINS + FF_VALID_PIN + FF_MAX_AGE + FF_BACKUP_2, True, None),
        (FF_MAX_AGE + FF_VALID_PIN + FF_BACKUP_1 + FF_UNKNOWN, False, None),
    ],
)
def test_firefox_valid_headers_are_imported(
    header: str, subdomains: bool, report_uri: str | None
) -> None:
    """Each header Firefox noted imports as an enforced two-pin rule, directives in any order."""
    imported = parse(header)
    (rule,) = imported.policy.rules
    assert (rule.mode, len(rule.pins), rule.expires) == ("enforce", 2, TODAY)
    assert rule.hosts[0].text == (f"**.{HOST}" if subdomains else HOST)
    assert rule.report_uri == report_uri
    assert ("unreconized-dir" in " ".join(map(str, imported.problems))) == (FF_UNKNOWN in header)


def test_include_subdomains_with_a_value_is_refused() -> None:
    """Firefox refused includeSubdomains=…; the directive takes no value (twin: bare is fine)."""
    with pytest.raises(PolicyError, match="takes no value"):
        parse(FF_MAX_AGE + FF_VALID_PIN + FF_BACKUP_1 + "includeSubdomains=true;")
    assert parse(FF_MAX_AGE + FF_VALID_PIN + FF_BACKUP_1 + FF_INCLUDE_SUBDOMAINS)


def test_cli_imports_the_overflowing_header(world: World) -> None:
    """`tlspin import --from hpkp` on the 45-digit max-age: a policy, not 'unexpected
    OverflowError'; the one-pin header is refused with the RFC's reason."""
    path = world.write("h.txt", f"Public-Key-Pins: max-age={FORTY_FIVE_NINES}; {GOOD}; {BACKUP}")
    result = invoke("import", str(path), "--from", "hpkp", "--host", HOST)
    assert result.exit_code == 0, result.stderr
    assert "unexpected" not in result.stderr
    assert "expires = " in result.stdout
    single = world.write("s.txt", f"Public-Key-Pins: max-age=5000; {GOOD}; {GOOD}")
    refused = invoke("import", str(single), "--from", "hpkp", "--host", HOST)
    assert refused.exit_code == 2
    assert "backup pin" in refused.stderr


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (f'max-age=243; pin-sha256=""; {BACKUP}', "empty"),  # Chromium: an empty pin fails
        (f"max-age=243; pin-sha256; {GOOD}; {BACKUP}", "quoted value"),
        (f'max-age=243; {GOOD}; {BACKUP}; report-uri=""', "absolute http"),
        (f'max-age=243; {GOOD}; {BACKUP}; report-uri="/relative"', "absolute http"),
        (f"max-age=243; {GOOD}; {BACKUP}; max-age=244", "appears twice"),
        (f"MAX-AGE=243; {GOOD}; {BACKUP}; max-age=243", "appears twice"),  # names fold case
    ],
)
def test_malformed_directives_are_refused(header: str, why: str) -> None:
    """Empty or unquoted pins, an empty or relative report-uri and a repeated directive (in
    any case) are refused, each with its reason."""
    with pytest.raises(PinConfigurationError, match=why):
        parse(header)


def test_unknown_and_other_algorithm_directives_are_ignored() -> None:
    """Unknown directives and pins of other algorithms are ignored with a warning, as both
    browsers did (twin: the same header without them imports the same rule)."""
    noisy = parse(f'max-age=86400; {GOOD}; pin-sha1="AAAA"; {BACKUP}; future-thing="x"; flag')
    plain = parse(f"max-age=86400; {GOOD}; {BACKUP}")
    assert noisy.policy == plain.policy
    warned = " ".join(map(str, noisy.problems))
    assert "pin-sha1" in warned
    assert "future-thing" in warned
    assert "flag" in warned
