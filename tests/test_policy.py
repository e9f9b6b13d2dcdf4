"""Pin rules and policies: union, deny, report mode, observers, expiry, files, errors."""

from __future__ import annotations

import datetime as dt
import logging
import pickle
import warnings
from dataclasses import dataclass

import pytest

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
    with pytest.raises(PolicyError, match="on_expiry"):
        PinPolicy([], on_expiry="never")  # type: ignore[arg-type]


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
