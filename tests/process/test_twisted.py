"""The Twisted integration (treq and Agent) against real TLS servers on loopback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import treq
from OpenSSL import SSL
from twisted.internet.ssl import CertificateOptions, optionsForClientTLS
from twisted.web.client import Agent, HostnameCachingHTTPSPolicy, ResponseNeverReceived
from zope.interface import implementer

import tlspin
from _ber import ber_server
from tlspin import PinMismatchError, PinningUnavailableError, PinPolicy, PinRule, Violation
from tlspin.integrations import _twisted_core, find_pin_error
from tlspin.integrations.twisted import PinnedPolicyForHTTPS, agent, pin_creator, trust_root
from tlspin.testing.scenarios import ServerPKI
from tlspin.testing.servers import TLSServer

from . import _reactor


def _get(client: Agent, url: str) -> bytes:
    """GET *url* through *client* from the test thread; return the body."""

    def run() -> Any:
        d = treq.get(url, agent=client)
        d.addCallback(treq.content)
        return d

    body: bytes = _reactor.call(run)
    return body


def _agent(pki: ServerPKI, policy: Any, **options: Any) -> Agent:
    return agent(_reactor.reactor(), policy, cafile=pki.cafile, **options)


def test_treq_reaches_the_pinned_server(pki: ServerPKI, tls_server: TLSServer,
                                        assert_accepted: Callable[..., Any]) -> None:
    """A treq request through the pinned agent reaches the server with the pinned key."""
    body = assert_accepted(lambda: _get(_agent(pki, pki.policy("localhost")), tls_server.url))
    assert body == b"ok"


def test_treq_refuses_a_forged_leaf_with_zero_bytes(
    pki: ServerPKI, tls_server: TLSServer, rogue_ca_issues: Callable[..., Any],
    assert_refused: Callable[..., Any],
) -> None:
    """A leaf from a CA the client trusts, but not pinned, is refused before any request byte."""
    rogue_ca_issues()
    client = _agent(pki, pki.policy("localhost"))
    error = assert_refused(lambda: _get(client, tls_server.url))
    assert isinstance(error, PinMismatchError)
    assert error.hostname == "localhost"


def test_unpinned_agent_accepts_the_forged_leaf(
    pki: ServerPKI, tls_server: TLSServer, rogue_ca_issues: Callable[..., Any]
) -> None:
    """The failure twin's premise: without pins the client trusts the attacker's leaf."""
    rogue_ca_issues()
    client = Agent(_reactor.reactor(), contextFactory=_unpinned(pki))
    assert _get(client, tls_server.url) == b"ok"


def _unpinned(pki: ServerPKI) -> Any:
    from twisted.web.client import BrowserLikePolicyForHTTPS

    return BrowserLikePolicyForHTTPS(trust_root(pki.cafile))


def test_ca_check_is_kept(pki: ServerPKI, make_tls_server: Callable[..., TLSServer],
                          assert_refused: Callable[..., Any]) -> None:
    """A pinned key under a CA the client does not trust is still refused by the CA check."""
    from tlspin.testing.pki import CA

    stranger = CA.root("untrusted root").issue("localhost", key=pki.leaf.key)
    server = make_tls_server(stranger)
    client = _agent(pki, pki.policy("localhost"))
    with pytest.raises(ResponseNeverReceived) as caught:
        _get(client, server.url)
    assert find_pin_error(caught.value) is None
    assert "certificate verify failed" in str(caught.value.reasons[0].value)
    assert server.received == b""


def test_host_name_check_is_kept(pki: ServerPKI, make_tls_server: Callable[..., TLSServer]) -> None:
    """A trusted certificate with the pinned key but another name is refused by the name check."""
    other = pki.intermediate.issue("elsewhere.test", key=pki.leaf.key)
    server = make_tls_server(other)
    client = _agent(pki, pki.policy("localhost"))
    with pytest.raises(ResponseNeverReceived) as caught:
        _get(client, server.url)
    assert find_pin_error(caught.value) is None
    assert server.received == b""


def test_deny_pin_refuses_even_when_a_pin_matches(pki: ServerPKI, tls_server: TLSServer,
                                                  assert_refused: Callable[..., Any]) -> None:
    """A denied intermediate in the verified chain refuses a chain whose leaf is pinned."""
    rule = PinRule(["localhost"], pki.pins(), deny=[pki.intermediate_pin])
    error = assert_refused(lambda: _get(_agent(pki, PinPolicy([rule])), tls_server.url))
    assert error.reason == "denied"


def test_report_only_lets_the_request_through_and_reports(
    pki: ServerPKI, tls_server: TLSServer, rogue_ca_issues: Callable[..., Any],
    assert_accepted: Callable[..., Any],
) -> None:
    """A report-only rule passes a forged chain and hands the Violation to the observers."""
    seen: list[Violation] = []
    policy = pki.policy("localhost", mode="report", observers=[seen.append])
    rogue_ca_issues()
    assert_accepted(lambda: _get(_agent(pki, policy), tls_server.url))
    assert [(v.hostname, v.mode, v.reason) for v in seen] == [("localhost", "report", "mismatch")]
    assert seen[0].port == tls_server.address[1]


def test_policy_source_is_read_for_each_connection(
    pki: ServerPKI, tls_server: TLSServer, assert_refused: Callable[..., Any],
    assert_accepted: Callable[..., Any],
) -> None:
    """New connections follow the policy a source (a BundleUpdater, say) holds now."""

    class Source:
        policy = pki.policy("localhost")

        def current_policy(self) -> PinPolicy:
            return self.policy

    source = Source()
    client = _agent(pki, source)
    assert_accepted(lambda: _get(client, tls_server.url))
    source.policy = PinPolicy.from_mapping({"localhost": [pki.root_pin, pki.backup_pin]})
    assert_accepted(lambda: _get(client, tls_server.url))
    source.policy = PinPolicy.from_mapping({"localhost": [pki.backup_pin, pki.attacker.pin]})
    assert_refused(lambda: _get(client, tls_server.url))


def test_a_broken_source_refuses(pki: ServerPKI, tls_server: TLSServer,
                                 assert_refused: Callable[..., Any]) -> None:
    """A source that returns no policy refuses the connection instead of passing it."""

    class Broken:
        def current_policy(self) -> Any:
            return None

    error = assert_refused(lambda: _get(_agent(pki, Broken()), tls_server.url))
    assert isinstance(error, PinningUnavailableError)


def test_observer_raising_base_exception_still_refuses(
    pki: ServerPKI, tls_server: TLSServer, rogue_ca_issues: Callable[..., Any],
    assert_refused: Callable[..., Any],
) -> None:
    """An exception escaping the check is never raised into pyOpenSSL (which would ignore it)."""

    def observer(_v: Violation) -> None:
        raise KeyboardInterrupt

    rogue_ca_issues()
    policy = pki.policy("localhost", mode="report", observers=[observer])
    error = assert_refused(lambda: _get(_agent(pki, policy), tls_server.url))
    assert error.reason == "check-failed"
    assert isinstance(error.__cause__, KeyboardInterrupt)


def test_unpinned_host_is_untouched(pki: ServerPKI, tls_server: TLSServer,
                                    rogue_ca_issues: Callable[..., Any]) -> None:
    """Hosts the policy does not cover pass whatever chain they serve."""
    rogue_ca_issues()
    policy = PinPolicy.from_mapping({"api.example.com": [pki.leaf_pin, pki.backup_pin]})
    assert _get(_agent(pki, policy), tls_server.url) == b"ok"


@pytest.mark.parametrize("forged", [True, False], ids=["forged-leaf", "genuine-leaf"])
def test_explicit_agent_leaves_other_hosts_to_the_injected_policy(
    pki: ServerPKI, tls_server: TLSServer, rogue_ca_issues: Callable[..., Any],
    assert_refused: Callable[..., Any], forged: bool,
) -> None:
    """An agent pinned for its vendor's host, used for a host the injected policy pins, gets
    the injected pins there: a forged leaf is refused (0 bytes), the genuine one passes."""
    if forged:
        rogue_ca_issues()
    vendor = PinPolicy.from_mapping({"api.example.com": [pki.leaf_pin, pki.backup_pin]})
    client = _agent(pki, vendor)
    with tlspin.injected(pki.policy("localhost")):
        if forged:
            error = assert_refused(lambda: _get(client, tls_server.url))
            assert isinstance(error, PinMismatchError)
        else:
            assert _get(client, tls_server.url) == b"ok"


def test_unreadable_certificate_is_refused_and_reported(
    pki: ServerPKI, make_tls_server: Callable[..., TLSServer], assert_refused: Callable[..., Any]
) -> None:
    """A leaf OpenSSL verifies but cryptography cannot parse (BER from a trusted CA) is a pin
    refusal reported to the observers (it was a "check-failed" refusal with no report)."""
    leaf = pki.attacker.issue("localhost")
    server, _ = ber_server(make_tls_server, leaf, pki.attacker, "indefinite")
    seen: list[Violation] = []
    rule = PinRule("localhost", [pki.leaf_pin, pki.backup_pin])
    client = _agent(pki, PinPolicy([rule], observers=[seen.append]))
    error = assert_refused(lambda: _get(client, server.url))
    assert isinstance(error, PinningUnavailableError)
    assert error.reason == "unreadable-certificate"
    assert [v.reason for v in seen] == ["unreadable-certificate"]


def test_caching_inner_policy_reuses_a_context(pki: ServerPKI, tls_server: TLSServer,
                                               rogue_ca_issues: Callable[..., Any]) -> None:
    """A cached creator (one Context for many connections) is pinned on every connection."""
    inner = HostnameCachingHTTPSPolicy(_unpinned(pki))
    client = Agent(
        _reactor.reactor(),
        contextFactory=PinnedPolicyForHTTPS(pki.policy("localhost"), inner=inner),
    )
    assert _get(client, tls_server.url) == b"ok"
    assert _get(client, tls_server.url) == b"ok"
    rogue_ca_issues()
    with pytest.raises(ResponseNeverReceived) as caught:
        _get(client, tls_server.url)
    assert isinstance(find_pin_error(caught.value), PinMismatchError)


def test_context_info_callback_is_chained(pki: ServerPKI, tls_server: TLSServer) -> None:
    """A context's info callback (Twisted < 26.4 checks host names there) still runs."""
    events: list[int] = []

    @implementer(_iweb_policy())
    class Recording:
        def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
            creator = optionsForClientTLS(hostname.decode(), trustRoot=trust_root(pki.cafile))
            ctx = creator._createConnection.__self__.getContext()
            ctx.set_info_callback(lambda _c, where, _r: events.append(where))
            return creator

    client = Agent(
        _reactor.reactor(),
        contextFactory=PinnedPolicyForHTTPS(pki.policy("localhost"), inner=Recording()),
    )
    assert _get(client, tls_server.url) == b"ok"
    assert any(w & SSL.SSL_CB_HANDSHAKE_START for w in events)
    assert any(w & SSL.SSL_CB_HANDSHAKE_DONE for w in events)


def _iweb_policy() -> Any:
    from twisted.web.iweb import IPolicyForHTTPS

    return IPolicyForHTTPS


class _Resuming:
    """A creator wrapper that offers a saved session (a client resuming its last session)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.session: SSL.Session | None = None
        self.connections: list[SSL.Connection] = []

    def clientConnectionForTLS(self, protocol: Any) -> SSL.Connection:
        conn: SSL.Connection = self.inner.clientConnectionForTLS(protocol)
        if self.session is not None:
            conn.set_session(self.session)
        self.connections.append(conn)
        return conn


def _resuming_agent(creator: _Resuming) -> Agent:
    from twisted.internet.interfaces import IOpenSSLClientConnectionCreator

    implementer(IOpenSSLClientConnectionCreator)(_Resuming)

    @implementer(_iweb_policy())
    class Fixed:
        def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
            return creator

    return Agent(_reactor.reactor(), contextFactory=Fixed())


def _resume_setup(pki: ServerPKI, tls_server: TLSServer, first: Any, second: Any) -> None:
    """First GET through *first*; then a GET through *second* resuming the first's session."""
    resuming = _Resuming(first)
    client = _resuming_agent(resuming)
    assert _get(client, tls_server.url) == b"ok"
    resuming.session = resuming.connections[-1].get_session()
    resuming.inner = second
    _get(client, tls_server.url)


@pytest.mark.parametrize("pinned_first", [True, False], ids=["checked-leaf", "unchecked-leaf"])
def test_resumed_session_needs_a_checked_leaf(pki: ServerPKI, tls_server: TLSServer,
                                              pinned_first: bool) -> None:
    """A resumed session passes only if its leaf passed a full check before (fail closed)."""
    options = CertificateOptions(trustRoot=trust_root(pki.cafile))
    plain = _twisted_core.ClientTLSOptions(options._makeTLSConnection, "localhost")
    policy = pki.policy("localhost", level="intermediate")
    pinned = pin_creator(plain, policy, hostname="localhost")
    if pinned_first:
        _resume_setup(pki, tls_server, pinned, pinned)
        assert tls_server.resumed >= 1
        return
    with pytest.raises(ResponseNeverReceived) as caught:
        _resume_setup(pki, tls_server, plain, pinned)
    error = find_pin_error(caught.value)
    assert isinstance(error, PinningUnavailableError)
    assert error.reason == "resumption"
