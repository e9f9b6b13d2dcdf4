"""Shared integration plumbing: choosing the pinned context, and finding pin errors."""

from __future__ import annotations

import ssl

import pytest

from tlspin import PinConfigurationError, PinMismatchError, PinPolicy, create_context, policy_of
from tlspin.integrations import find_pin_error
from tlspin.integrations._common import is_pinned_host, pinned_context, policy_source

from .conftest import Pki


def test_pinned_context_from_policy_or_context(pki: Pki, good_policy: PinPolicy) -> None:
    """A policy builds a new pinned context; a pinned context is used as it is."""
    built = pinned_context(good_policy, ssl_context=None, cafile=pki.cafile)
    assert policy_of(built) is good_policy
    assert pinned_context(None, ssl_context=built) is built
    assert policy_source(built) is good_policy


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "found neither"),
        ({"policy": "POLICY", "ssl_context": "PINNED"}, "not both"),
        ({"ssl_context": "PINNED", "cafile": "x.pem"}, "cafile/capath/cadata apply only"),
        ({"ssl_context": "PLAIN"}, "not pinned"),
        ({"ssl_context": "NOT-A-CONTEXT"}, "must be an ssl.SSLContext"),
    ],
)
def test_pinned_context_refuses_ambiguous_arguments(
    pki: Pki, good_policy: PinPolicy, kwargs: dict[str, object], message: str
) -> None:
    """Both, neither, CA options with a context, or an unpinned context are refused."""
    values = {
        "POLICY": good_policy,
        "PINNED": create_context(good_policy, cafile=pki.cafile),
        "PLAIN": ssl.create_default_context(),
        "NOT-A-CONTEXT": object(),
    }
    resolved = {k: values.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}
    resolved.setdefault("policy", None)
    resolved.setdefault("ssl_context", None)
    with pytest.raises(PinConfigurationError, match=message):
        pinned_context(**resolved)  # type: ignore[arg-type]


def test_find_pin_error_walks_every_link() -> None:
    """The pin error is found through causes, contexts, .reason, args and groups, cycles or not."""
    pin = PinMismatchError("refused", hostname="h")

    class Wrapper(Exception):
        def __init__(self, reason: BaseException) -> None:
            super().__init__("wrapped")
            self.reason = reason

    try:
        try:
            raise pin
        except PinMismatchError as exc:
            raise RuntimeError("outer") from exc
    except RuntimeError as outer:
        by_cause = outer
    by_context = ValueError("x")
    by_context.__context__ = by_cause
    cyclic = OSError("cycle")
    cyclic.__context__ = OSError("back", cyclic)
    for exc in (
        by_cause,
        by_context,
        Wrapper(pin),
        OSError("wrapped in args", pin),
        ExceptionGroup("group", [ValueError("a"), Wrapper(pin)]),
    ):
        assert find_pin_error(exc) is pin
    assert find_pin_error(cyclic) is None
    assert find_pin_error(ssl.SSLCertVerificationError(1, "not a pin error")) is None


def test_is_pinned_host(good_policy: PinPolicy, pki: Pki) -> None:
    """Bracketed IPv6, pinned and unpinned names, and junk are classified correctly."""
    ctx = create_context(good_policy, cafile=pki.cafile)
    assert is_pinned_host(ctx, "[::1]")
    assert is_pinned_host(ctx, "127.0.0.1")
    assert not is_pinned_host(ctx, "localhost")
    assert not is_pinned_host(ctx, None)
    assert not is_pinned_host(ssl.create_default_context(), "127.0.0.1")
    # A name the policy cannot canonicalise cannot be shown unpinned: pinned, as in a handshake.
    assert is_pinned_host(ctx, "not a host!")
    assert is_pinned_host(ctx, "127.0.0.01")
    assert not is_pinned_host(create_context(PinPolicy(), cafile=pki.cafile), "127.0.0.01")
