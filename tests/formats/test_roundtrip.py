"""Export then import gives the same policy, for every format that can express it."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cli.world import rule
from tlspin.formats import ExportOptions, canonical, export, import_policy
from tlspin.pins import Pin
from tlspin.policy import PinInfo, PinPolicy

from .conftest import pins

TODAY = dt.date(2026, 3, 1)


def strip_info(policy: PinPolicy) -> PinPolicy:
    """The policy without per-pin metadata (role, note, not_after), which most formats lack."""
    return policy.with_rules(
        rule(
            [h.text for h in r.hosts],
            list(r.pins),
            include_subdomains=r.include_subdomains,
            expires=r.expires,
            mode=r.mode,
            deny=r.deny,
            report_uri=r.report_uri,
        )
        for r in policy.rules
    )


def round_trip(policy: PinPolicy, fmt: str, **options: object) -> PinPolicy:
    """Export with *fmt* and import the text again."""
    text = export(policy, fmt, ExportOptions(today=TODAY, **options)).text  # type: ignore[arg-type]
    host = options.get("host") or ("example.com" if fmt == "hpkp" else None)
    return import_policy(text.encode(), fmt, host=host, today=TODAY).policy  # type: ignore[arg-type]


def test_json_keeps_everything() -> None:
    """JSON round-trips deny lists, roles, notes, dates, modes and report URIs exactly."""
    a, b, c = pins(3)
    policy = PinPolicy(
        [
            rule(
                ["api.example.com", "**.cdn.example.com"],
                [a, b],
                expires="2027-01-01",
                deny=[c],
                mode="report",
                report_uri="https://r.example.com/",
                pin_info={a: PinInfo("leaf", "n", dt.date(2026, 5, 1))},
            ),
            rule(["*.example.org"], [b, c], include_subdomains=True),
        ],
        on_expiry="enforce",
    )
    assert round_trip(policy, "json") == policy


def test_android_nsc() -> None:
    """Android NSC keeps hosts, includeSubdomains, pins and expiry (as expires + 1 day)."""
    a, b, c, d = pins(4)
    policy = PinPolicy(
        [
            rule(["api.example.com", "**.cdn.example.com"], [a, b], expires="2027-01-01"),
            rule(["example.org"], [c, d], include_subdomains=True),
            rule(["127.0.0.1"], [a, d]),
        ]
    )
    assert round_trip(policy, "android-nsc") == canonical(policy)


def test_trustkit_android() -> None:
    """TrustKit for Android keeps report-only mode and report URIs, one domain per config."""
    a, b, c, d = pins(4)
    policy = PinPolicy(
        [
            rule(
                ["api.example.com", "**.example.net"],
                [a, b],
                expires="2027-01-01",
                mode="report",
                report_uri="https://r.example.com/report",
            ),
            rule(["example.org"], [c, d]),
        ]
    )
    assert round_trip(policy, "trustkit-android") == policy


def test_trustkit_ios() -> None:
    """TrustKit for iOS keeps hosts, pins, enforce/report, expiry and report URIs."""
    a, b, c, d = pins(4)
    policy = PinPolicy(
        [
            rule(
                ["api.example.com"],
                [a, b],
                expires="2026-12-31",
                report_uri="https://r.example.com/x",
            ),
            rule(["**.example.org", "shop.example.net"], [c, d], mode="report"),
        ]
    )
    assert round_trip(policy, "trustkit-ios") == policy


def test_hpkp() -> None:
    """An HPKP header keeps pins, includeSubDomains, report-only, report-uri and expiry (up to
    the 60 days browsers honour a max-age for)."""
    a, b, c = pins(3)
    policy = PinPolicy(
        [
            rule(
                ["**.example.com"],
                [a, b, c],
                expires=TODAY + dt.timedelta(days=59),
                mode="report",
                report_uri="https://r.example.com/a;b?c=d",
            )
        ]
    )
    assert round_trip(policy, "hpkp", host="example.com", report_only=True) == policy
    enforced = PinPolicy([rule(["example.com"], [a, b], expires=TODAY)])
    assert round_trip(enforced, "hpkp") == enforced


def test_hpkp_longer_than_browsers_honour() -> None:
    """A rule expiring in more than 60 days comes back expiring in 60: its header's max-age is
    longer than Chromium and Firefox honoured. The export says so, and so does the import."""
    a, b = pins(2)
    policy = PinPolicy([rule(["example.com"], [a, b], expires=TODAY + dt.timedelta(days=200))])
    exported = export(policy, "hpkp", ExportOptions(today=TODAY))
    assert any("60 days" in str(p) for p in exported.problems)
    imported = import_policy(exported.text.encode(), "hpkp", host="example.com", today=TODAY)
    assert imported.policy.rules[0].expires == TODAY + dt.timedelta(days=59)
    assert any("60 days" in str(p) for p in imported.problems)


def test_okhttp_java() -> None:
    """okhttp-java keeps every pattern kind and multi-host rules."""
    a, b, c, d = pins(4)
    policy = PinPolicy(
        [
            rule(["api.example.com", "*.example.com"], [a, b]),
            rule(["**.example.org"], [c, d, a]),
            rule(["single.example.net"], [d]),
        ]
    )
    assert round_trip(policy, "okhttp-java") == policy


@pytest.mark.parametrize("fmt", ["okhttp-java", "okhttp-kotlin"])
def test_okhttp_keeps_expiry(fmt: str) -> None:
    """The expiry the OkHttp code carries comes back on import, rule by rule (the Kotlin form
    is read by the same importer)."""
    a, b, c, d = pins(4)
    policy = PinPolicy(
        [
            rule(["api.example.com", "*.example.com"], [a, b], expires="2026-06-30"),
            rule(["**.example.org"], [c, d]),
            rule(["old.example.net"], [a, d], expires="2026-01-31"),
        ]
    )
    text = export(policy, fmt, ExportOptions(today=TODAY)).text
    imported = import_policy(text.encode(), "okhttp-java", today=TODAY)
    assert imported.policy == policy
    assert [str(p) for p in imported.problems] == [
        "OkHttp has no expiry of its own: 1 imported rule(s) have no 'expires' (no tlspin "
        "expiry guard around them); add one"
    ]


def test_round_trip_detects_a_lost_pin() -> None:
    """The comparison the round trips rely on fails when a pin goes missing."""
    a, b = pins(2)
    policy = PinPolicy([rule(["api.example.com"], [a, b])])
    text = export(policy, "okhttp-java").text.replace(f',\n        "{b}"', "")
    assert import_policy(text.encode(), "okhttp-java").policy != policy


_BASES = ["example.com", "example.org", "example.net", "tlspin.test", "example.co.uk"]


@st.composite
def xml_policies(draw: st.DrawFn) -> PinPolicy:
    bases = draw(st.lists(st.sampled_from(_BASES), min_size=1, max_size=4, unique=True))
    counts = [draw(st.integers(2, 4)) for _ in bases]
    # Pins unique across rules: rules with equal settings would merge (an equivalent policy).
    digests = draw(
        st.lists(
            st.binary(min_size=32, max_size=32),
            min_size=sum(counts),
            max_size=sum(counts),
            unique=True,
        )
    )
    rules = []
    for base, n in zip(bases, counts, strict=True):
        mine, digests = digests[:n], digests[n:]
        host = draw(st.sampled_from([base, f"**.{base}"]))
        rules.append(
            rule(
                [host],
                [Pin(d) for d in mine],
                expires=draw(st.none() | st.dates(dt.date(2020, 1, 1), dt.date(2099, 1, 1))),
                mode=draw(st.sampled_from(["enforce", "report"])),
                report_uri=draw(st.none() | st.just(f"https://r.{base}/r")),
            )
        )
    return PinPolicy(rules)


@settings(max_examples=40, deadline=None)
@given(policy=xml_policies(), fmt=st.sampled_from(["trustkit-android", "trustkit-ios"]))
def test_trustkit_round_trip_property(policy: PinPolicy, fmt: str) -> None:
    """Any non-overlapping policy with two or more pins per rule round-trips through TrustKit."""
    assert round_trip(policy, fmt) == policy


@settings(max_examples=40, deadline=None)
@given(policy=xml_policies())
def test_android_nsc_round_trip_property(policy: PinPolicy) -> None:
    """Enforced policies without report URIs round-trip through Android's NSC."""
    enforced = policy.with_rules(
        rule([h.text for h in r.hosts], list(r.pins), expires=r.expires) for r in policy.rules
    )
    assert round_trip(enforced, "android-nsc") == enforced


@pytest.mark.parametrize(
    "fmt", ["android-nsc", "trustkit-android", "trustkit-ios", "okhttp-java", "hpkp"]
)
def test_metadata_is_not_carried(fmt: str) -> None:
    """Formats without pin metadata import the same policy minus roles and notes."""
    a, b = pins(2)
    policy = PinPolicy(
        [
            rule(
                ["example.com"],
                [a, b],
                pin_info={a: PinInfo("leaf", "note")},
                expires=TODAY + dt.timedelta(days=30) if fmt != "okhttp-java" else None,
            )
        ]
    )
    back = round_trip(policy, fmt)
    assert back != policy
    assert back == strip_info(policy)
