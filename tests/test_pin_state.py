"""The policy and its remembered-leaf set are one value (issue 13, item 13).

A resumed TLS session has no verified chain; it passes when its leaf passed a full check under
the *same* policy. If a handshake checked under a report-only policy could add its (forged) leaf
to the set of the enforcing policy that replaced it, a resumed session would then pass.

The test forces every interleaving instead of hoping for one: a trace function counts the lines
tlspin runs while it checks the forged handshake, and at line *k* (for every *k*) it switches the
policy source to the enforcing policy and completes a genuine handshake on the same context,
exactly as another thread preempting the check at that line would. Whatever *k*, the forged
session must not resume under the enforcing policy.
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import tlspin
from _engine import HOST, REQUEST, open_socket, read_response, stranger_pins
from tlspin import PinMismatchError, PinningUnavailableError, PinPolicy, PinRule
from tlspin.testing.scenarios import ServerPKI
from tlspin.testing.servers import TLSServer

MakeServer = Callable[..., TLSServer]
_TLSPIN = str(Path(tlspin.__file__).parent)
# Where the policy, its leaf set and the check live (the rest only adds lines to sweep).
_WATCHED = ("context.py", "_state.py", "verify.py", "_guard.py")


class _Source:
    """A policy source whose policy the test switches."""

    def __init__(self, policy: PinPolicy) -> None:
        self.policy = policy

    def current_policy(self) -> PinPolicy:
        return self.policy


class _SwitchAtLine:
    """A trace function that runs *action* once, before the k-th watched line (k from 0)."""

    def __init__(self, k: int, action: Callable[[], object]) -> None:
        self.k = k
        self.lines = 0
        self.action = action

    def __call__(self, frame: FrameType, event: str, arg: Any) -> Any:
        filename = frame.f_code.co_filename
        if not (filename.startswith(_TLSPIN) and filename.endswith(_WATCHED)):
            return None
        if event == "line":
            if self.lines == self.k:
                self.action()  # not traced itself: CPython suspends tracing in a trace function
            self.lines += 1
        return self


def _full(ctx: ssl.SSLContext, server: TLSServer) -> ssl.SSLSession:
    with open_socket(ctx, server) as sock:
        sock.sendall(REQUEST)
        read_response(sock)
        session = sock.session
    assert session is not None
    return session


def _attempt(pki: ServerPKI, genuine: TLSServer, forged: TLSServer, k: int) -> tuple[int, str]:
    """One interleaving; returns (lines traced, what the resumed forged session did)."""
    report = PinPolicy([PinRule(HOST, stranger_pins(), mode="report")])
    enforce = PinPolicy([PinRule(HOST, [pki.root_pin, *stranger_pins()])])
    source = _Source(report)
    ctx = tlspin.create_context(source, cafile=pki.cafile)
    _full(ctx, genuine)  # the report-only policy is in force and has remembered leaves

    def switch() -> None:
        source.policy = enforce
        _full(ctx, genuine)  # a genuine handshake under the enforcing policy

    tracer = _SwitchAtLine(k, switch)
    sys.settrace(tracer)
    try:
        session = _full(ctx, forged)  # allowed by the report-only rule, if it still applies
    except PinMismatchError:
        session = None  # the switch came before the policy was read: refused outright
    finally:
        sys.settrace(None)
    if tracer.lines <= k:
        switch()  # past the end: the switch after the whole check
    if session is None:
        return tracer.lines, "no session"
    forged.wait_idle()
    before = len(forged.received)
    try:
        with open_socket(ctx, forged, session=session) as sock:
            sock.sendall(REQUEST)
            outcome = "RESUMED AND PASSED"
    except PinningUnavailableError as exc:
        outcome = "refused" if exc.reason == "resumption" else f"refused: {exc.reason}"
    forged.wait_idle()
    if outcome == "refused":
        assert len(forged.received) == before
    return tracer.lines, outcome


def test_a_report_only_leaf_never_vouches_under_the_next_policy(
    pki: ServerPKI, make_tls_server: MakeServer
) -> None:
    """At every line of the check, a policy switch leaves the forged session refused."""
    cap = ssl.TLSVersion.TLSv1_2  # the session exists right after the handshake
    genuine = make_tls_server(pki.leaf, tls_max_version=cap)
    forged = make_tls_server(pki.attacker.issue(HOST), tls_max_version=cap)
    total, outcome = _attempt(pki, genuine, forged, k=10**9)
    assert outcome == "refused"
    assert total > 20, "the trace did not see tlspin's check"
    outcomes = {k: _attempt(pki, genuine, forged, k)[1] for k in range(total)}
    passed = sorted(k for k, o in outcomes.items() if o == "RESUMED AND PASSED")
    assert passed == [], f"the forged session resumed after a switch at lines {passed}"
    assert "refused" in outcomes.values()
    assert "no session" in outcomes.values()


def test_a_leaf_checked_under_the_enforcing_policy_resumes(
    pki: ServerPKI, make_tls_server: MakeServer
) -> None:
    """Twin: a genuine leaf that passed the enforcing policy's root pin resumes its session."""
    genuine = make_tls_server(pki.leaf, tls_max_version=ssl.TLSVersion.TLSv1_2)
    ctx = tlspin.create_context(
        _Source(PinPolicy([PinRule(HOST, [pki.root_pin, *stranger_pins()])])),
        cafile=pki.cafile,
    )
    session = _full(ctx, genuine)
    with open_socket(ctx, genuine, session=session) as sock:
        assert sock.session_reused
        sock.sendall(REQUEST)
        assert read_response(sock) == b"ok"


@pytest.fixture(autouse=True)
def _no_trace_left() -> Any:
    """A failing sweep never leaves its trace function behind."""
    yield
    sys.settrace(None)
