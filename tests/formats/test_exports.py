"""Exports: documented schemas, and refusal (or --force warnings) for what a target cannot say."""

from __future__ import annotations

import base64
import datetime as dt
import os
import plistlib
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cli.world import rule
from tlspin.formats import ExportOptions, ExportRefusedError, export, import_policy
from tlspin.pins import CertificatePin
from tlspin.policy import PinInfo, PinPolicy

from .conftest import pins

TODAY = dt.date(2026, 3, 1)

# Element -> allowed attributes, from Android's Network Security Config reference and
# TrustKit-Android's TrustKitConfigurationParser.
NSC_SCHEMA = {
    "network-security-config": set(),
    "domain-config": {"cleartextTrafficPermitted"},
    "domain": {"includeSubdomains"},
    "pin-set": {"expiration"},
    "pin": {"digest"},
}
TRUSTKIT_ANDROID_SCHEMA = {
    **NSC_SCHEMA,
    "trustkit-config": {"enforcePinning", "disableDefaultReportUri"},
    "report-uri": set(),
}
TSK_GLOBAL_KEYS = {
    "TSKSwizzleNetworkDelegates",
    "TSKPinnedDomains",
    "TSKIgnorePinningForUserDefinedTrustAnchors",
}
TSK_DOMAIN_KEYS = {
    "TSKPublicKeyHashes",
    "TSKEnforcePinning",
    "TSKIncludeSubdomains",
    "TSKExpirationDate",
    "TSKReportUris",
    "TSKDisableDefaultReportUri",
}
ATS_DOMAIN_KEYS = {"NSIncludesSubdomains", "NSPinnedCAIdentities", "NSPinnedLeafIdentities"}


def run(policy: PinPolicy, fmt: str, **options: object) -> str:
    """Export text (raises ExportRefusedError)."""
    return export(policy, fmt, ExportOptions(today=TODAY, **options)).text  # type: ignore[arg-type]


def refusal(policy: PinPolicy, fmt: str, **options: object) -> list[str]:
    """The error messages of a refused export."""
    with pytest.raises(ExportRefusedError) as info:
        run(policy, fmt, **options)
    return [str(p) for p in info.value.problems if p.severity == "error"]


def _is_b64_digest(text: str | None) -> bool:
    return text is not None and len(base64.b64decode(text, validate=True)) == 32


def _check_xml(text: str, schema: dict[str, set[str]]) -> ET.Element:
    root = ET.fromstring(text)
    assert root.tag == "network-security-config"
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue  # comments
        assert element.tag in schema, element.tag
        assert set(element.attrib) <= schema[element.tag], (element.tag, element.attrib)
        if element.tag == "pin":
            assert element.get("digest") == "SHA-256"
            assert _is_b64_digest(element.text)
        if element.tag == "domain":
            assert element.get("includeSubdomains") in ("true", "false")
        if element.tag == "pin-set" and "expiration" in element.attrib:
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", element.get("expiration", ""))
        if element.tag == "trustkit-config":
            assert element.get("enforcePinning") in ("true", "false")
            assert element.get("disableDefaultReportUri") == "true"
    return root


def test_android_nsc_schema() -> None:
    """android-nsc uses only documented elements and attributes; expiration is expires + 1 day."""
    a, b = pins(2)
    text = run(
        PinPolicy([rule(["api.example.com", "**.example.org"], [a, b], expires="2026-12-31")]),
        "android-nsc",
    )
    root = _check_xml(text, NSC_SCHEMA)
    (config,) = root.findall("domain-config")
    assert [(d.text, d.get("includeSubdomains")) for d in config.findall("domain")] == [
        ("api.example.com", "false"),
        ("example.org", "true"),
    ]
    assert config.find("pin-set").get("expiration") == "2027-01-01"  # type: ignore[union-attr]
    assert [p.text for p in config.iter("pin")] == [a.b64, b.b64]


def test_trustkit_android_schema_one_domain_per_config() -> None:
    """trustkit-android: one domain per domain-config, enforcePinning, no default reports."""
    a, b = pins(2)
    text = run(
        PinPolicy(
            [
                rule(
                    ["a.example.com", "b.example.com"],
                    [a, b],
                    mode="report",
                    report_uri="https://r.example.com/",
                )
            ]
        ),
        "trustkit-android",
    )
    root = _check_xml(text, TRUSTKIT_ANDROID_SCHEMA)
    configs = root.findall("domain-config")
    assert [len(c.findall("domain")) for c in configs] == [1, 1]
    for config in configs:
        tk = config.find("trustkit-config")
        assert tk is not None
        assert tk.get("enforcePinning") == "false"
        assert [u.text for u in tk.findall("report-uri")] == ["https://r.example.com/"]


def test_trustkit_ios_keys() -> None:
    """trustkit-ios writes TSKConfiguration with TrustKit's exact key names and value types."""
    a, b = pins(2)
    text = run(
        PinPolicy(
            [
                rule(
                    ["**.example.com"],
                    [a, b],
                    expires="2026-12-31",
                    report_uri="https://r.example.com/",
                )
            ]
        ),
        "trustkit-ios",
    )
    document = plistlib.loads(text.encode())
    config = document["TSKConfiguration"]
    assert set(config) <= TSK_GLOBAL_KEYS
    assert config["TSKSwizzleNetworkDelegates"] is False
    domain = config["TSKPinnedDomains"]["example.com"]
    assert set(domain) <= TSK_DOMAIN_KEYS
    assert domain["TSKPublicKeyHashes"] == [a.b64, b.b64]
    assert domain["TSKIncludeSubdomains"] is True
    assert domain["TSKEnforcePinning"] is True
    assert domain["TSKExpirationDate"] == "2027-01-01"
    assert domain["TSKReportUris"] == ["https://r.example.com/"]
    assert domain["TSKDisableDefaultReportUri"] is True


def test_trustkit_refuses_single_pin_even_forced() -> None:
    """TrustKit refuses an enforced domain with one pin; --force cannot override that."""
    (a,) = pins(1)
    policy = PinPolicy([rule(["api.example.com"], [a])])
    for fmt in ("trustkit-ios", "trustkit-android"):
        assert any("fewer than two pins" in m for m in refusal(policy, fmt))
        assert any("fewer than two pins" in m for m in refusal(policy, fmt, force=True))
    report_only = PinPolicy([rule(["api.example.com"], [a], mode="report")])
    assert plistlib.loads(run(report_only, "trustkit-ios").encode())


def test_ats_roles_and_keys() -> None:
    """ats puts root/intermediate pins under CA identities, leaf/backup under leaf identities."""
    ca1, ca2, leaf, backup = pins(4)
    ca_only = rule(
        ["api.example.com"],
        [ca1, ca2],
        pin_info={ca1: PinInfo("intermediate"), ca2: PinInfo("root")},
    )
    leaf_only = rule(
        ["example.org", "*.example.org"],
        [leaf, backup],
        pin_info={leaf: PinInfo("leaf"), backup: PinInfo("backup")},
    )
    document = plistlib.loads(run(PinPolicy([ca_only, leaf_only]), "ats").encode())
    domains = document["NSAppTransportSecurity"]["NSPinnedDomains"]
    for entry in domains.values():
        assert set(entry) <= ATS_DOMAIN_KEYS
        for key in ("NSPinnedCAIdentities", "NSPinnedLeafIdentities"):
            for identity in entry.get(key, []):
                assert set(identity) == {"SPKI-SHA256-BASE64"}
    assert domains["api.example.com"] == {
        "NSIncludesSubdomains": False,
        "NSPinnedCAIdentities": [{"SPKI-SHA256-BASE64": ca1.b64}, {"SPKI-SHA256-BASE64": ca2.b64}],
    }
    # "x" plus "*.x" is exactly NSIncludesSubdomains (one more label).
    assert domains["example.org"]["NSIncludesSubdomains"] is True
    assert [i["SPKI-SHA256-BASE64"] for i in domains["example.org"]["NSPinnedLeafIdentities"]] == [
        leaf.b64,
        backup.b64,
    ]


def test_ats_refusals() -> None:
    """ats refuses role-less pins (always), mixed CA+leaf sets, **. and expiry (unless forced)."""
    ca, leaf = pins(2)
    roleless = PinPolicy([rule(["a.example.com"], [ca, leaf])])
    assert any("role" in m for m in refusal(roleless, "ats", force=True))
    mixed = PinPolicy(
        [
            rule(
                ["**.example.com"],
                [ca, leaf],
                expires="2027-01-01",
                pin_info={ca: PinInfo("root"), leaf: PinInfo("leaf")},
            )
        ]
    )
    messages = " ".join(refusal(mixed, "ats"))
    assert "match in both" in messages
    assert "one level only" in messages
    assert "no pin expiry" in messages
    forced = export(mixed, "ats", ExportOptions(force=True, today=TODAY))
    entry = plistlib.loads(forced.text.encode())["NSAppTransportSecurity"]["NSPinnedDomains"][
        "example.com"
    ]
    assert set(entry) == ATS_DOMAIN_KEYS
    assert len([p for p in forced.problems if p.severity == "error"]) == 3


@pytest.mark.parametrize("fmt", ["okhttp-java", "okhttp-kotlin", "android-nsc", "ats", "curl"])
def test_deny_and_report_mode_are_never_dropped_silently(fmt: str) -> None:
    """Targets without deny lists or report-only mode refuse them; --force makes them warnings."""
    a, b, c = pins(3)
    policy = PinPolicy(
        [
            rule(
                ["a.example.com"],
                [a, b],
                deny=[c],
                mode="report",
                pin_info={a: PinInfo("leaf"), b: PinInfo("backup")},
            )
        ]
    )
    messages = " ".join(refusal(policy, fmt))
    assert "deny" in messages
    assert "report-only" in messages
    forced = export(policy, fmt, ExportOptions(force=True, today=TODAY, host="a.example.com"))
    assert {p.severity for p in forced.problems} >= {"error"}
    assert c.b64 not in forced.text


def test_whole_certificate_pins_are_refused() -> None:
    """A cert-sha256 pin cannot be exported to an SPKI-only target without --force."""
    a, b = pins(2)
    policy = PinPolicy([rule(["a.example.com"], [a, b, CertificatePin(os.urandom(32))])])
    assert any("whole certificate" in m for m in refusal(policy, "okhttp-java"))


def test_overlapping_rules_refused_where_the_target_takes_one_entry() -> None:
    """Android and TrustKit use the most specific entry, not the union: overlaps are errors."""
    a, b, c, d = pins(4)
    policy = PinPolicy([rule(["**.example.com"], [a, b]), rule(["api.example.com"], [c, d])])
    for fmt in ("android-nsc", "trustkit-ios", "trustkit-android"):
        assert any("most specific" in m for m in refusal(policy, fmt))
    assert "api.example.com" in run(policy, "okhttp-java")  # OkHttp takes the union, like tlspin


def test_one_label_wildcard_refused_by_android() -> None:
    """Android has no *.x; forcing it becomes includeSubdomains on x with a warning."""
    a, b = pins(2)
    policy = PinPolicy([rule(["*.example.com"], [a, b])])
    assert any("one-label wildcard" in m for m in refusal(policy, "android-nsc"))
    forced = export(policy, "android-nsc", ExportOptions(force=True))
    assert '<domain includeSubdomains="true">example.com</domain>' in forced.text


def test_okhttp_version_3_expands_or_refuses_double_star() -> None:
    """OkHttp 3 has no **.: refused by default, expanded to x and *.x with --force."""
    a, b = pins(2)
    policy = PinPolicy([rule(["**.example.com"], [a, b])])
    assert '.add("**.example.com",' in run(policy, "okhttp-java")
    assert any("OkHttp 3" in m for m in refusal(policy, "okhttp-java", okhttp_version=3))
    forced = run(policy, "okhttp-java", okhttp_version=3, force=True)
    assert '.add("example.com",' in forced
    assert '.add("*.example.com",' in forced
    assert "**" not in forced
    exact = PinPolicy([rule(["api.example.com", "*.example.com"], [a, b])])
    assert run(exact, "okhttp-java", okhttp_version=3) == run(exact, "okhttp-java")


def test_okhttp_version_3_brackets_ipv6_patterns() -> None:
    """OkHttp 3 throws on the pattern "::1" (it parses "http://" + pattern); "[::1]" works."""
    a, b = pins(2)
    policy = PinPolicy([rule(["::1", "127.0.0.1"], [a, b])])
    assert '.add("[::1]",' in run(policy, "okhttp-java", okhttp_version=3)
    assert '.add("::1",' in run(policy, "okhttp-java")
    assert '.add("127.0.0.1",' in run(policy, "okhttp-java", okhttp_version=3)
    back = import_policy(run(policy, "okhttp-java", okhttp_version=3).encode(), "okhttp-java")
    assert [h.text for r in back.policy.rules for h in r.hosts] == ["::1", "127.0.0.1"]


def test_okhttp_kotlin_and_java_shapes() -> None:
    """Java is one expression starting with `new`; Kotlin has no `new`; both end with .build()."""
    a, b = pins(2)
    policy = PinPolicy([rule(["example.com"], [a, b], pin_info={a: PinInfo("leaf", "x */ y\nz")})])
    java, kotlin = run(policy, "okhttp-java"), run(policy, "okhttp-kotlin")
    assert java.startswith("new CertificatePinner.Builder()")
    assert java.rstrip().endswith(".build()")
    assert kotlin.startswith("CertificatePinner.Builder()")
    assert kotlin.rstrip().endswith(".build()")
    assert "*/" not in java.split("//", 1)[1].splitlines()[0]


def test_hpkp_header() -> None:
    """hpkp writes pins, max-age to the end of expires, includeSubDomains and report-uri."""
    a, b = pins(2)
    policy = PinPolicy(
        [
            rule(
                ["**.example.com"],
                [a, b],
                expires=TODAY + dt.timedelta(days=9),
                report_uri="https://r.example.com/",
            )
        ]
    )
    text = run(policy, "hpkp")
    assert text == (
        f"Public-Key-Pins: {a.hpkp}; {b.hpkp}; max-age={10 * 86400}; includeSubDomains; "
        'report-uri="https://r.example.com/"\n'
    )
    assert run(policy, "hpkp", report_only=True).startswith("Public-Key-Pins-Report-Only: ")


def test_hpkp_refusals() -> None:
    """hpkp needs a host for multi-domain policies, two pins, and an unexpired rule."""
    a, b, c = pins(3)
    two = PinPolicy([rule(["a.example.com"], [a, b]), rule(["b.example.com"], [b, c])])
    assert any("--host" in m for m in refusal(two, "hpkp"))
    assert run(two, "hpkp", host="b.example.com").count("pin-sha256") == 2
    single = PinPolicy([rule(["a.example.com"], [a])])
    assert any("backup pin" in m for m in refusal(single, "hpkp", force=True))
    expired = PinPolicy([rule(["a.example.com"], [a, b], expires=TODAY - dt.timedelta(days=1))])
    assert any("expired" in m for m in refusal(expired, "hpkp"))
    report = PinPolicy([rule(["a.example.com"], [a, b], mode="report")])
    assert any("--report-only" in m for m in refusal(report, "hpkp"))


def test_hpkp_import_rules() -> None:
    """Imports need max-age, refuse repeated directives, and ignore unknown ones with a warning."""
    a, b = pins(2)
    header = f'{a.hpkp}; pin-sha256="{b.b64}"; max-age=86400; foo=bar'
    imported = import_policy(header.encode(), "hpkp", host="Example.COM", today=TODAY)
    (only,) = imported.policy.rules
    assert only.hosts[0].text == "example.com"
    assert only.expires == TODAY
    assert any("foo" in str(p) for p in imported.problems)
    from tlspin.exceptions import PolicyError

    with pytest.raises(PolicyError, match="max-age is missing"):
        import_policy(a.hpkp.encode(), "hpkp", host="example.com")
    with pytest.raises(PolicyError, match="twice"):
        import_policy(f"{a.hpkp}; max-age=1; max-age=2".encode(), "hpkp", host="example.com")


def test_curl_value_and_ca_warning() -> None:
    """curl gets sha256//a;sha256//b, a warning for CA pins, an error when every pin is a CA's."""
    leaf, ca = pins(2)
    policy = PinPolicy(
        [rule(["a.example.com"], [leaf, ca], pin_info={ca: PinInfo("intermediate")})]
    )
    result = export(policy, "curl")
    assert result.text == f"{leaf.curl};{ca.curl}\n"
    assert any("leaf key" in str(p) and p.severity == "warning" for p in result.problems)
    only_ca = PinPolicy([rule(["a.example.com"], [ca], pin_info={ca: PinInfo("root")})])
    assert any("every pin" in m for m in refusal(only_ca, "curl"))


def test_import_trustkit_android_defaults_to_report_only() -> None:
    """TrustKit for Android does not enforce without enforcePinning=true; import says so."""
    a, b = pins(2)
    xml = (
        f"<network-security-config><domain-config><domain>a.example.com</domain><pin-set>"
        f'<pin digest="SHA-256">{a.b64}</pin><pin digest="SHA-256">{b.b64}</pin></pin-set>'
        f"</domain-config></network-security-config>"
    )
    imported = import_policy(xml.encode(), "trustkit-android")
    assert imported.policy.rules[0].mode == "report"
    assert any("enforcePinning" in str(p) for p in imported.problems)
    nsc = import_policy(xml.encode(), "android-nsc")
    assert nsc.policy.rules[0].mode == "enforce"


def test_import_android_nested_configs_inherit_pins() -> None:
    """A nested domain-config without its own pin-set inherits its parent's."""
    a, b = pins(2)
    xml = (
        f"<network-security-config><domain-config><domain>example.com</domain>"
        f'<pin-set expiration="2027-01-01"><pin digest="SHA-256">{a.b64}</pin>'
        f'<pin digest="SHA-256">{b.b64}</pin></pin-set>'
        f'<domain-config><domain includeSubdomains="true">api.example.com</domain></domain-config>'
        f"</domain-config></network-security-config>"
    )
    policy = import_policy(xml.encode(), "android-nsc").policy
    assert [[h.text for h in r.hosts] for r in policy.rules] == [
        ["example.com"],
        ["**.api.example.com"],
    ]
    assert all(r.pins == (a, b) and r.expires == dt.date(2026, 12, 31) for r in policy.rules)
    with pytest.raises(ValueError, match="SHA-256"):
        import_policy(xml.replace('digest="SHA-256"', 'digest="SHA-1"', 1).encode(), "android-nsc")


def test_okhttp_expiry_is_a_guard_in_code() -> None:
    """An expiring rule's pins are added only while System.currentTimeMillis() is before the
    midnight (UTC) that ends its expires day; a rule without expires is added always."""
    a, b, c, d = pins(4)
    policy = PinPolicy(
        [rule(["a.example.com"], [a, b], expires="2026-06-01"), rule(["b.example.com"], [c, d])]
    )
    midnight = int(dt.datetime(2026, 6, 2, tzinfo=dt.UTC).timestamp() * 1000)
    java = export(policy, "okhttp-java", ExportOptions(today=TODAY))
    assert java.problems == ()
    assert "static CertificatePinner certificatePinner() {" in java.text
    assert "    long now = System.currentTimeMillis();" in java.text
    guarded, unguarded = java.text.split("// rule #2")
    assert f"if (now < {midnight}L) {{" in guarded
    assert '.add("a.example.com",' in guarded
    assert "if (" not in unguarded
    assert '.add("b.example.com",' in unguarded
    kotlin = run(policy, "okhttp-kotlin")
    assert "fun certificatePinner(): CertificatePinner {" in kotlin
    assert f"if (now < {midnight}L) {{" in kotlin
    assert ";" not in kotlin.replace("; ", "")


@pytest.mark.parametrize(
    ("code", "detail"),
    [
        ('if (BuildConfig.DEBUG) { b.add("a.example.com", "%A", "%B"); }', "only condition"),
        ('if (DEBUG) b.add("a.example.com", "%A", "%B");', "only condition"),
        ('if (now < 1780358400001L) { b.add("a.example.com", "%A", "%B"); }', "end of a day"),
        ('if (now < 259200000000000L) { b.add("a.example.com", "%A", "%B"); }', "not a date"),
        ('if (now < 1780358400000L) { b.add("a.example.com", "%A", "%B");', "not closed"),
        # A condition never closed governs the rest of the file (it was read as governing
        # nothing, and the pins imported as unconditional).
        ('if (DEBUG b.add("a.example.com", "%A", "%B");', "only condition"),
    ],
)
def test_okhttp_import_refuses_pins_under_other_conditions(code: str, detail: str) -> None:
    """Pins under a condition tlspin cannot read are refused, not imported as unconditional."""
    a, b = pins(2)
    source = code.replace("%A", str(a)).replace("%B", str(b))
    with pytest.raises(ValueError, match=detail):
        import_policy(source.encode(), "okhttp-java")
    harmless = f'if (DEBUG) {{ log("x"); }}\nb.add("a.example.com", "{a}", "{b}");'
    assert import_policy(harmless.encode(), "okhttp-java").policy.rules[0].pins == (a, b)


def test_okhttp_import_of_many_ifs_takes_linear_time(tmp_path: Path) -> None:
    """Each ``if`` made the import rescan (and copy) the rest of the file: 32 KB of ``if (``
    took about a minute, and the 16 MiB input cap allowed hours. 1.7 MB of them (closed ones
    before the last pins, and never-closed ones after) import within a generous functional
    bound of 120 s, in a process that the bound kills otherwise (not a benchmark)."""
    a, b, c, d = pins(4)
    source = (
        f'CertificatePinner.Builder().add("a.example.com", "{a}", "{b}")\n'
        + "if (x) y; " * 100_000
        + f'\n.add("b.example.com", "{c}", "{d}").build();\n'
        + "if (" * 200_000
    )
    path = tmp_path / "Pins.java"
    path.write_text(source)
    done = subprocess.run(
        [sys.executable, "-m", "tlspin", "import", "--from", "okhttp-java", str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert '"a.example.com"' in done.stdout
    assert '"b.example.com"' in done.stdout


@pytest.mark.parametrize("fmt", ["okhttp-java", "android-nsc", "trustkit-android", "trustkit-ios"])
def test_exporting_an_expired_rule_warns(fmt: str) -> None:
    """A rule already past its expires exports, with a warning that clients ignore its pins;
    its twin expiring tomorrow exports without one."""
    a, b = pins(2)
    for expires, warned in ((TODAY - dt.timedelta(days=1), True), (TODAY, False)):
        policy = PinPolicy([rule(["a.example.com"], [a, b], expires=expires)])
        problems = export(policy, fmt, ExportOptions(today=TODAY)).problems
        assert any("no longer applies its pins" in str(p) for p in problems) is warned


# Text someone else wrote (an imported configuration, a bundle) that would act on a terminal
# or break out of a comment or string if written raw.
HOSTILE_NOTE = (
    "x\n}\nSystem.exit(1); /* */ --> -- \\u000a \r\u2028\u2029\u0085 \u202e \x9b "
    "\"' $x ${x} <!-- &amp; ]]>"
)
# C0 and C1 controls are refused in a report_uri outright (PinRule); what a URI may hold and
# still must not reach the file raw: a bidi override, a line separator, a zero-width space.
HOSTILE_URI = "https://r.example.com/\u202e\u2028\u200bx"
_UNSAFE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _assert_inert(text: str) -> None:
    import unicodedata

    bad = [c for c in text if c not in "\n\t" and unicodedata.category(c) in _UNSAFE]
    assert bad == [], f"raw control or format characters in the export: {bad!r}"


@pytest.mark.parametrize("fmt", ["trustkit-android", "trustkit-ios"])
def test_xml_exports_write_hostile_report_uris_as_references(fmt: str) -> None:
    """A report URI's bidi override, line separator and zero-width space were
    written raw into the XML and plist exports; they are character references now, which
    read back (the import, twin) as the very same URI."""
    a, b = pins(2)
    policy = PinPolicy([rule(["api.example.com"], [a, b], expires=TODAY + dt.timedelta(days=90),
                             report_uri=HOSTILE_URI)])
    text = run(policy, fmt)
    _assert_inert(text)
    assert "&#x202E;" in text
    assert import_policy(text.encode(), fmt).policy.rules[0].report_uri == HOSTILE_URI


@pytest.mark.parametrize("fmt", ["okhttp-java", "okhttp-kotlin", "android-nsc", "trustkit-android"])
def test_notes_cannot_break_out_of_generated_comments(fmt: str) -> None:
    """A note holding newlines (a Java `//` comment would end there and the rest run as
    code), a Java Unicode escape (`\\u000a` ends the comment before the compiler lexes),
    `*/`, `-->` or `--` stays inside its one-line comment, as inert ASCII; twin: the same export
    with a plain note has as many lines, so the note started none."""
    a, b = pins(2)

    def with_note(note: str) -> str:
        policy = PinPolicy([rule(["api.example.com"], [a, b], expires=TODAY + dt.timedelta(days=90),
                                 pin_info={a: PinInfo("leaf", note)})])
        return run(policy, fmt)

    plain, hostile = with_note("plain note"), with_note(HOSTILE_NOTE)
    _assert_inert(hostile)
    assert hostile.count("\n") == plain.count("\n")
    assert hostile.isascii()
    if fmt.startswith("okhttp"):
        assert "\\" not in hostile
        for line in hostile.splitlines():
            if "System.exit" in line:
                assert line.index("//") < line.index("System.exit"), line
    else:
        parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))
        root = ET.fromstring(hostile, parser=parser)
        comments = [e.text or "" for e in root.iter() if not isinstance(e.tag, str)]
        assert any("System.exit" in c for c in comments)
        assert not any("--" in c for c in comments)
