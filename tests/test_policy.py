"""Pin rules and policies: union, deny, report mode, observers, expiry, files, errors."""

from __future__ import annotations

import datetime as dt
import json
import logging
import pickle
import threading
import warnings
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tlspin import (
    CertificatePin,
    Pin,
    PinMismatchError,
    PinPolicy,
    PinPolicyExpiredWarning,
    PinRule,
    PolicyError,
    SinglePinWarning,
    Violation,
)
from tlspin.testing.pki import CA, Leaf

HOST = "api.example.com"
NOW = dt.datetime(2030, 6, 1, 12, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Chain:
    """A verified chain (DER, leaf first) and the pins of its certificates."""

    root: CA
    intermediate: CA
    leaf: Leaf
    der: list[bytes]
    other: CA  # a CA whose keys are in no chain


@pytest.fixture(scope="module")
def chain() -> Chain:
    """root → intermediate → leaf for api.example.com."""
    root = CA.root("tlspin policy root")
    intermediate = root.intermediate("tlspin policy intermediate")
    leaf = intermediate.issue(HOST, "www.example.com")
    der = [leaf.cert_der, intermediate.cert_der, root.cert_der]
    return Chain(root, intermediate, leaf, der, CA.root("tlspin policy other"))


def _unrelated() -> str:
    return CA.root("unrelated").pin


def test_union_of_matching_rules(chain: Chain) -> None:
    """A host covered by several rules accepts any pin of any of them."""
    wildcard = PinRule(["*.example.com"], [chain.root.pin, _unrelated()])
    exact = PinRule([HOST], [chain.other.pin, _unrelated()])
    policy = PinPolicy([wildcard, exact])
    assert policy.pins_for(HOST) == frozenset(wildcard.pins) | frozenset(exact.pins)
    assert policy.check(HOST, chain.der).pinned
    # Only the exact rule's pins: still refused, because none is in the chain.
    with pytest.raises(PinMismatchError):
        PinPolicy([exact]).check(HOST, chain.der)


def test_unpinned_host_has_no_pins_and_passes(chain: Chain) -> None:
    """pins_for is empty for a host no rule covers, and its check passes unpinned."""
    policy = PinPolicy([PinRule([HOST], [chain.other.pin, _unrelated()])])
    assert policy.pins_for("other.example.net") == frozenset()
    verdict = policy.check("other.example.net", chain.der)
    assert not verdict.pinned
    assert verdict.ok


def test_check_refuses_mismatch_and_accepts_any_depth(chain: Chain) -> None:
    """Leaf, intermediate or root pins pass; a chain without any pinned key is refused."""
    for cert in (chain.leaf, chain.intermediate, chain.root):
        verdict = PinPolicy([PinRule([HOST], [cert.pin, _unrelated()])]).check(HOST, chain.der)
        assert verdict.pinned
        assert verdict.ok
        assert [str(p) for _, p in verdict.matched()] == [cert.pin]
    with pytest.raises(PinMismatchError):
        PinPolicy([PinRule([HOST], [chain.other.pin, _unrelated()])]).check(HOST, chain.der)


def test_certificate_pins_are_checked_on_whole_certificates(chain: Chain) -> None:
    """A CertificatePin matches the whole leaf certificate, not its key."""
    cert_pin = CertificatePin.from_certificate(chain.leaf.cert_der)
    assert PinPolicy([PinRule([HOST], [cert_pin, _unrelated()])]).check(HOST, chain.der).ok
    renewed = chain.intermediate.reissue(chain.leaf)
    with pytest.raises(PinMismatchError):
        PinPolicy([PinRule([HOST], [cert_pin, _unrelated()])]).check(
            HOST, [renewed.cert_der, *chain.der[1:]]
        )


def test_denied_intermediate_refuses_even_when_a_pin_matches(chain: Chain) -> None:
    """A deny pin in the verified chain refuses the connection although the root pin matches."""
    rule = PinRule([HOST], [chain.root.pin, _unrelated()], deny=[chain.intermediate.pin])
    with pytest.raises(PinMismatchError) as excinfo:
        PinPolicy([rule]).check(HOST, chain.der)
    assert excinfo.value.reason == "denied"
    assert "denied key" in str(excinfo.value)
    # Without the deny pin the same chain passes.
    assert PinPolicy([PinRule([HOST], [chain.root.pin, _unrelated()])]).check(HOST, chain.der).ok


def test_report_mode_reports_without_raising(
    chain: Chain, caplog: pytest.LogCaptureFixture
) -> None:
    """A report-only failure returns normally, calls the observer once and logs a warning."""
    seen: list[Violation] = []
    rule = PinRule([HOST], [chain.other.pin], mode="report")  # report rules need no backup
    policy = PinPolicy([rule], observers=[seen.append])
    with caplog.at_level(logging.WARNING, logger="tlspin"):
        verdict = policy.check(HOST, chain.der, port=8443)
    assert verdict.pinned
    assert not verdict.ok
    assert seen == list(verdict.violations)
    assert [v.mode for v in seen] == ["report"]
    assert "connection allowed" in caplog.text
    assert HOST in caplog.text


def test_enforce_mode_notifies_observer_then_raises(chain: Chain) -> None:
    """An enforced failure reaches the observer, then raises."""
    seen: list[Violation] = []
    policy = PinPolicy([PinRule([HOST], [chain.other.pin, _unrelated()])], observers=[seen.append])
    with pytest.raises(PinMismatchError):
        policy.check(HOST, chain.der)
    assert [v.mode for v in seen] == ["enforce"]


@pytest.mark.parametrize("mode", ["enforce", "report"])
def test_raising_observer_never_affects_the_connection(
    chain: Chain, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    """An observer that raises is logged and ignored: the outcome is the policy's alone."""

    def broken(_: Violation) -> None:
        raise RuntimeError("observer bug")

    pins = [chain.other.pin, _unrelated()]
    policy = PinPolicy([PinRule([HOST], pins, mode=mode)], observers=[broken])  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="tlspin"):
        if mode == "enforce":
            with pytest.raises(PinMismatchError):
                policy.check(HOST, chain.der)
        else:
            assert not policy.check(HOST, chain.der).ok
    assert "observer raised" in caplog.text
    # A passing chain never calls the observer at all.
    good = PinPolicy([PinRule([HOST], [chain.root.pin, _unrelated()])], observers=[broken])
    assert good.check(HOST, chain.der).ok


def test_expired_rule_fails_open_and_warns_once(chain: Chain) -> None:
    """After its expiry date a rule is not enforced, and the warning comes once per rule."""
    rule = PinRule([HOST], [chain.other.pin, _unrelated()], expires="2030-01-01")
    policy = PinPolicy([rule])
    with pytest.warns(PinPolicyExpiredWarning, match="no longer enforced") as record:
        verdict = policy.check(HOST, chain.der, now=NOW)
    assert verdict.ok
    assert len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise here
        assert policy.check(HOST, chain.der, now=NOW).ok
    # Before the expiry date the same rule is enforced.
    with pytest.raises(PinMismatchError):
        PinPolicy([rule]).check(HOST, chain.der, now=dt.datetime(2029, 12, 31, tzinfo=dt.UTC))


def test_expired_rule_still_enforced_with_on_expiry_enforce(chain: Chain) -> None:
    """on_expiry='enforce' keeps refusing after the date, and still warns."""
    rule = PinRule([HOST], [chain.other.pin, _unrelated()], expires=dt.date(2030, 1, 1))
    policy = PinPolicy([rule], on_expiry="enforce")
    with (
        pytest.warns(PinPolicyExpiredWarning, match="still enforced"),
        pytest.raises(PinMismatchError),
    ):
        policy.check(HOST, chain.der, now=NOW)


def test_single_pin_rule_warns() -> None:
    """An enforced rule with one pin warns about bricking; two pins or report mode do not."""
    pin = CA.root("single").pin
    with pytest.warns(SinglePinWarning, match="backup pin"):
        PinRule([HOST], [pin])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PinRule([HOST], [pin, _unrelated()])
        PinRule([HOST], [pin], mode="report")


def test_rule_validation_errors() -> None:
    """Bad modes, empty pins, empty hosts and bad report URIs raise PolicyError."""
    pins = [_unrelated(), _unrelated()]
    with pytest.raises(PolicyError, match="mode"):
        PinRule([HOST], pins, mode="audit")  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match="no pins"):
        PinRule([HOST], [])
    with pytest.raises(PolicyError, match="at least one host"):
        PinRule([], pins)
    with pytest.raises(PolicyError, match="report_uri"):
        PinRule([HOST], pins, report_uri="ftp://x")
    for raw in ("https://r.example/\x7f", "https://r.example/a\r\nX-Evil: 1", "https://r e/"):
        with pytest.raises(PolicyError, match="control characters"):
            PinRule([HOST], pins, report_uri=raw)
    assert PinRule([HOST], pins, report_uri="https://r.example/%7F%20").report_uri  # twin
    with pytest.raises(PolicyError, match="on_expiry"):
        PinPolicy([], on_expiry="never")  # type: ignore[arg-type]
    for ports in ([0], [65536], [True], ["443"], "443"):
        with pytest.raises(PolicyError, match="port"):
            PinRule([HOST], pins, ports=ports)  # type: ignore[arg-type]


def test_ports_are_kept_and_do_not_change_the_check(chain: Chain) -> None:
    """A rule's ports are where tools connect; the pin check is the same with or without them."""
    pins = [chain.intermediate.pin, _unrelated()]
    rule = PinRule([HOST], pins, ports=[8443, 8443, 9443])
    assert rule.ports == (8443, 9443)
    assert PinRule([HOST], pins, ports=8443).ports == (8443,)
    assert rule != PinRule([HOST], pins)  # part of the rule: it round-trips through files
    for policy in (PinPolicy([rule]), PinPolicy([PinRule([HOST], pins)])):
        assert policy.check(HOST, chain.der, now=NOW).ok
        with pytest.raises(PinMismatchError):
            policy.check(HOST, [chain.other.issue(HOST).cert_der], now=NOW)


# -- policy files ------------------------------------------------------------------------------


def _toml(pins: list[str]) -> str:
    return (
        'on_expiry = "fail-open"\n'
        "\n"
        "[[rule]]\n"
        'hosts = ["api.example.com"]\n'
        f'pins = ["{pins[0]}", "{pins[1]}"]\n'
        "\n"
        "[[rule]]\n"
        'hosts = ["**.cdn.example.com"]\n'
        f'pins = [{{ pin = "{pins[0]}", role = "backup", note = "offline" }}, "{pins[1]}"]\n'
        "expires = 2031-01-01\n"
        'mode = "report"\n'
    )


def test_toml_policy_loads() -> None:
    """A valid TOML document gives rules with hosts, pins, metadata, expiry and mode."""
    pins = [_unrelated(), _unrelated()]
    policy = PinPolicy.loads(_toml(pins))
    assert [r.hosts[0].text for r in policy.rules] == ["api.example.com", "**.cdn.example.com"]
    second = policy.rules[1]
    assert second.mode == "report"
    assert second.expires == dt.date(2031, 1, 1)
    info = second.info(Pin.parse(pins[0]))
    assert info is not None
    assert info.role == "backup"


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda t: t.replace('pins = ["', 'pins = ["sha1/', 1), "line 5, rule #1, key 'pins'"),
        (lambda t: t.replace('mode = "report"', 'mode = "audit"'), "line 11, rule #2, key 'mode'"),
        (
            lambda t: t.replace("expires = 2031-01-01", 'expires = "soon"'),
            "line 10, rule #2, key 'expires'",
        ),
        (
            lambda t: t.replace('hosts = ["**.cdn', 'hosts = ["*.*.cdn', 1),
            "line 8, rule #2, key 'hosts'",
        ),
        (lambda t: t + "colour = 3\n", "key 'colour'"),
        (lambda t: t + "ports = [70000]\n", "line 12, rule #2, key 'ports'"),
        (lambda t: t + 'ports = "8443"\n', "line 12, rule #2, key 'ports'"),
        (
            lambda t: t.replace('hosts = ["api.example.com"]\n', ""),
            "line 3, rule #1: the rule has no 'hosts'",
        ),
    ],
)
def test_toml_errors_name_line_and_key(edit: object, where: str) -> None:
    """Every schema error in a TOML policy says which line, rule and key is wrong."""
    text = edit(_toml([_unrelated(), _unrelated()]))  # type: ignore[operator]
    with pytest.raises(PolicyError) as excinfo:
        PinPolicy.loads(text)
    assert where in str(excinfo.value)


def test_invalid_toml_syntax_is_a_policy_error() -> None:
    """A TOML syntax error is reported as PolicyError with the parser's position."""
    with pytest.raises(PolicyError, match=r"invalid TOML.*line 2"):
        PinPolicy.loads("[[rule]]\nhosts = = 1\n")


# -- errors and events --------------------------------------------------------------------------


def test_mismatch_message_lists_chain_and_expected_pins(chain: Chain) -> None:
    """The error reads like OkHttp's: the chain's pins and subjects, then the expected pins."""
    expected = [chain.other.pin, _unrelated()]
    with pytest.raises(PinMismatchError) as excinfo:
        PinPolicy([PinRule([HOST], expected)]).check(HOST, chain.der)
    err = excinfo.value
    message = str(err)
    assert message.startswith("Certificate pinning failure!")
    for cert in (chain.leaf, chain.intermediate, chain.root):
        assert cert.pin in message
    assert "CN=api.example.com" in message
    assert "CN=tlspin policy intermediate" in message
    assert f"Pinned certificates for {HOST}:" in message
    for pin in expected:
        assert pin in message
    assert err.hostname == HOST
    assert list(err.expected) == expected
    assert [pin for _, pin in err.chain] == [chain.leaf.pin, chain.intermediate.pin, chain.root.pin]
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is PinMismatchError
    assert (str(clone), clone.hostname, clone.chain, clone.expected, clone.reason) == (
        message,
        err.hostname,
        err.chain,
        err.expected,
        err.reason,
    )


def test_violation_fields(chain: Chain) -> None:
    """A Violation carries host, port, time, both chains, expected pins, mode, rules, reason."""
    seen: list[Violation] = []
    rule = PinRule(["**.example.com"], [chain.other.pin, _unrelated()], expires="2031-01-01")
    served = [chain.leaf.cert_der, chain.intermediate.cert_der, b"extra"]
    with pytest.raises(PinMismatchError):
        PinPolicy([rule], observers=[seen.append]).check(
            HOST, chain.der, port=443, served_chain=lambda: served, now=NOW
        )
    (v,) = seen
    assert (v.hostname, v.port, v.time, v.mode, v.reason) == (HOST, 443, NOW, "enforce", "mismatch")
    assert v.served_chain == tuple(served)
    assert v.verified_chain == tuple(chain.der)
    assert v.expected == rule.pins
    assert v.rules == (rule,)
    assert v.noted_hostname == "example.com"
    assert v.include_subdomains
    assert v.expires == dt.date(2031, 1, 1)
    assert "Certificate pinning failure!" in v.message()


# -- hostile policy documents -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fmt", "detail"),
    [
        ("[" * 100_000, "json", "nested too deeply"),
        ('{"rule": ' + "[" * 50_000 + "]" * 50_000 + "}", "json", "nested too deeply"),
        ("x = " + "[" * 100_000, "toml", "nested too deeply"),
        ("x = " + "{a = " * 50_000 + "1" + "}" * 50_000, "toml", "nested too deeply"),
        ('{"on_expiry": ' + "9" * 5000 + "}", "json", "cannot be read"),
        ("on_expiry = " + "9" * 5000, "toml", "cannot be read"),
    ],
)
def test_hostile_documents_raise_policy_error(text: str, fmt: str, detail: str) -> None:
    """Deep nesting and giant integers raise PolicyError, not RecursionError or ValueError."""
    with pytest.raises(PolicyError, match=detail) as excinfo:
        PinPolicy.loads(text, format=fmt)  # type: ignore[arg-type]
    assert type(excinfo.value) is PolicyError
    assert "set_int_max_str_digits" not in str(excinfo.value)


def test_hostile_documents_twin_shallow_json_loads() -> None:
    """The same shapes, shallow and with short numbers, parse or fail on the schema only."""
    pins = [_unrelated(), _unrelated()]
    doc = json.dumps({"rule": [{"hosts": ["api.example.com"], "pins": pins}]})
    assert len(PinPolicy.loads(doc, format="json").rules) == 1
    with pytest.raises(PolicyError, match="on_expiry must be"):
        PinPolicy.loads('{"on_expiry": 9}', format="json")


_KEYS = st.sampled_from(
    [
        "rule",
        "on_expiry",
        "hosts",
        "pins",
        "pin",
        "role",
        "note",
        "not_after",
        "mode",
        "deny",
        "expires",
        "ports",
        "include_subdomains",
        "report_uri",
        "x",
    ]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(
        [
            "sha256/" + "A" * 43 + "=",
            "**.co.uk",
            "*.example.com",
            "report",
            "enforce",
            "2030-01-01",
            "fail-open",
            "127.0.0.01",
            "backup",
        ]
    ),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(_KEYS, kids, max_size=6)),
    max_leaves=20,
)


@given(st.dictionaries(_KEYS, _VALUES, max_size=4))
def test_arbitrary_json_documents_raise_only_policy_error(data: dict[str, object]) -> None:
    """Schema-shaped random JSON yields a policy or PolicyError, never another exception."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinglePinWarning)
        try:
            PinPolicy.loads(json.dumps(data), format="json")
        except PolicyError:
            pass


@given(st.text(alphabet='[]{}=",.\n #a1-_:"\'rulehostpins', max_size=60))
def test_arbitrary_toml_and_json_text_raise_only_policy_error(text: str) -> None:
    """Any text, read as TOML or as JSON, yields a policy or PolicyError only."""
    for fmt in ("toml", "json"):
        try:
            PinPolicy.loads(text, format=fmt)  # type: ignore[arg-type]
        except PolicyError:
            pass


# -- host spellings, caches, threads -------------------------------------------------------------


def test_events_and_errors_name_the_canonical_host(chain: Chain) -> None:
    """Verdicts, violations and errors name 'api.example.com', however the host was spelt."""
    seen: list[Violation] = []
    report = PinRule(["**.example.com"], [chain.other.pin], mode="report")
    policy = PinPolicy([report], observers=[seen.append])
    verdict = policy.check("API.Example.COM.", chain.der)
    assert verdict.hostname == HOST
    (violation,) = seen
    assert violation.hostname == HOST
    assert violation.noted_hostname == "example.com"
    enforce = PinPolicy([PinRule([HOST], [chain.other.pin, _unrelated()])])
    with pytest.raises(PinMismatchError) as excinfo:
        enforce.check("API.example.com.", chain.der)
    assert excinfo.value.hostname == HOST
    assert f"Pinned certificates for {HOST}:" in str(excinfo.value)
    assert PinPolicy([report]).check("Unpinned.Example.ORG.", chain.der).hostname == (
        "unpinned.example.org"
    )


def test_plan_cache_keeps_each_spelling_right(chain: Chain) -> None:
    """Spellings of one host share its outcome; a cached spelling never leaks to another host."""
    policy = PinPolicy(
        [
            PinRule([HOST], [chain.root.pin, _unrelated()]),
            PinRule(["www.example.com"], [chain.other.pin, _unrelated()]),
        ]
    )
    bad = [CA.root("x").issue(HOST).cert_der]
    for _ in range(2):  # the second round runs on cached plans
        for spelling in (HOST, "API.example.com.", "api.EXAMPLE.com"):
            assert policy.check(spelling, chain.der).pinned
            with pytest.raises(PinMismatchError):
                policy.check(spelling, bad)
        for spelling in ("www.example.com", "WWW.example.com."):
            with pytest.raises(PinMismatchError):
                policy.check(spelling, chain.der)
        assert not policy.check("example.com", chain.der).pinned
    assert set(policy._plans) >= {HOST, "API.example.com.", "www.example.com", "example.com"}


def test_plan_cache_is_bounded(chain: Chain) -> None:
    """Asking for thousands of distinct names keeps the per-host caches bounded and correct."""
    policy = PinPolicy([PinRule(["**.example.com"], [chain.root.pin, _unrelated()])])
    for i in range(10_050):
        assert policy.check(f"h{i}.example.com", chain.der).pinned
    assert len(policy._plans) <= 10_001
    assert len(policy._lookup) <= 10_001
    with pytest.raises(PinMismatchError):
        policy.check("h1.example.com", [chain.other.cert_der])


def test_concurrent_checks_agree_with_serial_ones(chain: Chain) -> None:
    """8 threads checking spellings, chains and expiring rules at once get the serial answers."""
    expiring = PinRule(["*.example.com"], [chain.other.pin, _unrelated()], expires="2030-01-01")
    policy = PinPolicy([PinRule([HOST], [chain.root.pin, _unrelated()]), expiring])
    bad = [CA.root("y").issue(HOST).cert_der]
    cases = [
        (host, der, now)
        for host in (HOST, "API.example.com.", "www.example.com", "WWW.Example.com", "other.org")
        for der in (chain.der, bad)
        for now in (NOW, dt.datetime(2029, 1, 1, tzinfo=dt.UTC))
    ]

    def outcome(host: str, der: list[bytes], now: dt.datetime) -> str:
        try:
            verdict = policy.check(host, der, now=now)
        except PinMismatchError as exc:
            return f"refused {exc.hostname}"
        return f"{verdict.hostname} pinned={verdict.pinned} ok={verdict.ok}"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PinPolicyExpiredWarning)
        serial = [outcome(*case) for case in cases]
        assert "refused api.example.com" in serial
        assert "www.example.com pinned=True ok=True" in serial  # expired: fail open
        results: list[list[str]] = []
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                mine = []
                for _ in range(25):
                    policy._plans.clear()  # keep rebuilding plans while others read them
                    mine.append([outcome(*case) for case in cases])
                results.extend(mine)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert len(results) == 8 * 25
    assert all(r == serial for r in results)


# -- deny pins and observers --------------------------------------------------------------------


def test_deny_hit_message_names_the_denied_key(chain: Chain) -> None:
    """A deny-list refusal says so, names the denied key, and still lists the accepted pins."""
    accepted = [chain.leaf.pin, _unrelated()]
    seen: list[Violation] = []
    rule = PinRule([HOST], accepted, deny=[chain.intermediate.pin, _unrelated()])
    with pytest.raises(PinMismatchError) as excinfo:
        PinPolicy([rule], observers=[seen.append]).check(HOST, chain.der)
    err = excinfo.value
    message = str(err)
    assert err.reason == "denied"
    assert err.hostname == HOST
    assert list(err.expected) == accepted
    assert "A denied key is in the verified chain." in message
    denied_block = message.split("Denied keys found:")[1].split(
        "Peer certificate chain", maxsplit=1
    )[0]
    assert denied_block.split() == [chain.intermediate.pin]
    assert seen[0].denied() == (Pin.parse(chain.intermediate.pin),)
    # Twin: a plain mismatch names no denied key.
    with pytest.raises(PinMismatchError) as mismatch:
        PinPolicy([PinRule([HOST], [chain.other.pin, _unrelated()])]).check(HOST, chain.der)
    assert mismatch.value.reason == "mismatch"
    assert "Denied keys" not in str(mismatch.value)


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])
def test_observer_stopping_the_program_propagates(chain: Chain, stop: type) -> None:
    """KeyboardInterrupt or SystemExit from an observer is not swallowed like an Exception."""

    def observer(_: Violation) -> None:
        raise stop

    report = PinPolicy([PinRule([HOST], [chain.other.pin], mode="report")], observers=[observer])
    with pytest.raises(stop):
        report.check(HOST, chain.der)
    # Twin: a passing chain never calls the observer.
    ok = PinPolicy([PinRule([HOST], [chain.root.pin], mode="report")], observers=[observer])
    assert ok.check(HOST, chain.der).ok
