"""The violation reporter: real pin failures, never blocking, queue bound, dedup, backoff, TLS."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import tlspin
from _httpd import JSONSink
from tlspin.exceptions import SinglePinWarning
from tlspin.reporting import Reporter, build_report, post_json
from tlspin.testing.pki import CA, Leaf, client_trust_context
from tlspin.testing.servers import TLSServer

HOST = "api.tlspin.test"


@dataclass
class PKI:
    """A trusted chain for localhost and HOST, plus keys that are not in it."""

    root: CA
    intermediate: CA
    leaf: Leaf
    other: CA
    backup: CA


@pytest.fixture(scope="module")
def pki() -> PKI:
    """EC keys only, made once for the module."""
    root = CA.root("reporting root")
    intermediate = root.intermediate("reporting issuing CA")
    return PKI(root, intermediate, intermediate.issue("localhost", HOST),
               CA.root("some other key"), CA.root("backup key"))


def _rule(host: str, pins: list[str], **options: Any) -> tlspin.PinRule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinglePinWarning)
        return tlspin.PinRule(host, pins, **options)


def _violations(
    pki: PKI, count: int, *, host: str = HOST, pattern: str | None = None, **rule: Any
) -> list[tlspin.Violation]:
    """*count* distinct real violations (same wrong pins, different ports) from the pin check."""
    seen: list[tlspin.Violation] = []
    policy = tlspin.PinPolicy([_rule(pattern or host, [pki.other.pin, pki.backup.pin],
                                     mode="report", **rule)], observers=[seen.append])
    for port in range(count):
        policy.check(host, [*pki.leaf.chain_der, pki.root.cert_der], port=1000 + port)
    return seen


class Collector(JSONSink):
    """A loopback HTTP endpoint recording JSON bodies, with scripted statuses and a gate."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        super().__init__(statuses, path="/reports")


@pytest.fixture
def collector() -> Iterator[type[Collector]]:
    """Make recording collectors; all are closed after the test."""
    made: list[Collector] = []

    class Made(Collector):
        def __init__(self, statuses: list[int] | None = None) -> None:
            super().__init__(statuses)
            made.append(self)

    yield Made
    for c in made:
        c.close()


class Blackhole:
    """A loopback port that accepts connections and never answers (a hung collector)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/reports"
        self.accepted = threading.Event()
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(conn)
            self.accepted.set()

    def close(self) -> None:
        """Close everything."""
        self.listener.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    """A collector that hangs forever."""
    hole = Blackhole()
    yield hole
    hole.close()


@pytest.fixture(scope="module")
def origin(pki: PKI) -> Iterator[TLSServer]:
    """An HTTPS origin on 127.0.0.1 serving the trusted chain."""
    with TLSServer(pki.leaf) as server:
        yield server


def _pinned_get(origin: TLSServer, policy: tlspin.PinPolicy, pki: PKI) -> None:
    ctx = tlspin.create_context(policy, cadata=pki.root.cert_pem.decode())
    conn = http.client.HTTPSConnection("localhost", origin.port, context=ctx, timeout=10)
    try:
        conn.request("GET", "/")
        conn.getresponse().read()
    finally:
        conn.close()


def _pem_der(pem: str) -> bytes:
    return base64.b64decode("".join(pem.strip().splitlines()[1:-1]))


def test_real_pin_failure_is_reported(pki: PKI, origin: TLSServer, collector: Any) -> None:
    """A refused pinned request produces one report with the RFC 7469 and tlspin fields."""
    sink = collector()
    reporter = Reporter(sink.url, app_id="com.example.app", app_version="2.1")
    policy = reporter.attach(tlspin.PinPolicy([_rule(
        "localhost", [pki.other.pin, pki.backup.pin], expires="2999-01-01")]))
    with pytest.raises(ssl.SSLCertVerificationError):
        _pinned_get(origin, policy, pki)
    assert reporter.flush(10)
    reporter.close()
    assert sink.wait(1)
    assert len(sink.bodies) == 1
    report = sink.bodies[0]
    assert (report["hostname"], report["port"], report["noted-hostname"]) == (
        "localhost", origin.port, "localhost")
    assert [_pem_der(p) for p in report["served-certificate-chain"]] == pki.leaf.chain_der
    assert [_pem_der(p) for p in report["validated-certificate-chain"]] == [
        *pki.leaf.chain_der, pki.root.cert_der]
    assert sorted(report["known-pins"]) == sorted(
        f'pin-sha256="{p[7:]}"' for p in (pki.other.pin, pki.backup.pin))
    assert (report["mode"], report["reason"], report["rule"]) == ("enforce", "mismatch",
                                                                  ["localhost"])
    assert (report["app-id"], report["app-version"]) == ("com.example.app", "2.1")
    assert report["tlspin-version"] == tlspin.__version__
    assert report["effective-expiration-date"] == "2999-01-01T00:00:00Z"
    assert report["include-subdomains"] is False
    assert time.strptime(report["date-time"], "%Y-%m-%dT%H:%M:%SZ")
    assert reporter.stats.sent == 1


def test_matching_pins_send_nothing(pki: PKI, origin: TLSServer, collector: Any) -> None:
    """A pinned request that passes produces no report at all."""
    sink = collector()
    reporter = Reporter(sink.url)
    policy = reporter.attach(tlspin.PinPolicy([_rule(
        "localhost", [pki.intermediate.pin, pki.backup.pin])]))
    _pinned_get(origin, policy, pki)
    assert reporter.flush(5)
    assert (reporter.stats.queued, sink.bodies) == (0, [])


def test_async_client_reports_without_blocking(
    pki: PKI, origin: TLSServer, collector: Any
) -> None:
    """An asyncio client's report-only failure goes ahead and is reported by the thread."""
    sink = collector()
    reporter = Reporter(sink.url)
    policy = reporter.attach(tlspin.PinPolicy([_rule(
        "localhost", [pki.other.pin, pki.backup.pin], mode="report")]))
    ctx = tlspin.create_context(policy, cadata=pki.root.cert_pem.decode())

    async def fetch() -> bytes:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", origin.port, ssl=ctx, server_hostname="localhost")
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = await reader.read()
        writer.close()
        await writer.wait_closed()
        return data

    assert b"200" in asyncio.run(fetch()).split(b"\r\n")[0]
    assert sink.wait(1)
    assert sink.bodies[0]["mode"] == "report"
    reporter.close()


def test_blackholed_collector_never_delays_the_request(
    pki: PKI, origin: TLSServer, blackhole: Blackhole
) -> None:
    """With the collector hung, a failing pinned request returns far before the report timeout."""
    timeout = 10.0
    reporter = Reporter(blackhole.url, timeout=timeout)
    policy = reporter.attach(
        tlspin.PinPolicy([_rule("localhost", [pki.other.pin, pki.backup.pin])]))
    started = time.monotonic()
    for _ in range(3):
        with pytest.raises(ssl.SSLCertVerificationError):
            _pinned_get(origin, policy, pki)
    elapsed = time.monotonic() - started
    assert blackhole.accepted.wait(5)  # the report really is stuck in the hung collector
    assert reporter.stats.sent == 0
    assert reporter.stats.pending >= 1
    assert elapsed < timeout / 5, f"three refused requests took {elapsed:.2f}s"
    reporter.close(timeout=0)


def test_a_synchronous_sender_would_be_delayed(
    pki: PKI, origin: TLSServer, blackhole: Blackhole
) -> None:
    """Control for the test above: posting inline to the hung collector stalls the request."""
    timeout = 1.0

    def inline(violation: tlspin.Violation) -> None:
        body = json.dumps(build_report(violation)).encode()
        try:
            post_json(blackhole.url, body, timeout=timeout)
        except OSError:
            pass

    policy = tlspin.PinPolicy([_rule("localhost", [pki.other.pin, pki.backup.pin])],
                              observers=[inline])
    started = time.monotonic()
    with pytest.raises(ssl.SSLCertVerificationError):
        _pinned_get(origin, policy, pki)
    assert time.monotonic() - started >= timeout


def test_full_queue_drops_the_oldest(pki: PKI, collector: Any) -> None:
    """With the sender stuck, a bounded queue keeps the newest reports and counts the drops."""
    sink = collector()
    sink.gate.clear()  # hold the first delivery inside the collector
    reporter = Reporter(sink.url, queue_size=3, rate_limit=(1000, 1.0))
    first, *rest = _violations(pki, 10)
    reporter(first)
    assert sink.arrived.wait(5)
    for violation in rest:
        reporter(violation)
    stats = reporter.stats
    assert (stats.queued, stats.dropped, stats.pending) == (10, 6, 4)
    sink.gate.set()
    assert reporter.flush(10)
    assert sorted(b["port"] for b in sink.bodies) == [1000, 1007, 1008, 1009]
    reporter.close()


def test_identical_reports_are_sent_once_per_window(pki: PKI, collector: Any) -> None:
    """The same violation twice is one report; after the window it is reported again."""
    sink = collector()
    reporter = Reporter(sink.url, dedup_window=0.5)
    same, other = _violations(pki, 2)
    reporter(same)
    reporter(same)
    reporter(other)
    assert reporter.flush(10)
    assert (len(sink.bodies), reporter.stats.deduplicated) == (2, 1)
    time.sleep(0.6)
    reporter(same)
    assert reporter.flush(10)
    assert len(sink.bodies) == 3
    reporter.close()


def test_overall_rate_limit(pki: PKI, collector: Any) -> None:
    """Past the rate limit reports are skipped and counted, not queued."""
    sink = collector()
    reporter = Reporter(sink.url, rate_limit=(2, 3600.0))
    for violation in _violations(pki, 5):
        reporter(violation)
    assert reporter.flush(10)
    assert (len(sink.bodies), reporter.stats.rate_limited) == (2, 3)
    reporter.close()


def test_transient_failures_back_off_exponentially(pki: PKI, collector: Any) -> None:
    """503 and 500 are retried after growing delays until the collector accepts."""
    sink = collector(statuses=[503, 500])
    reporter = Reporter(sink.url, backoff=0.2, jitter=False)
    reporter(_violations(pki, 1)[0])
    assert sink.wait(3)
    assert reporter.flush(10)
    gaps = [b - a for a, b in zip(sink.times, sink.times[1:], strict=False)]
    assert gaps[0] >= 0.2
    assert gaps[1] >= 0.4
    stats = reporter.stats
    assert (stats.sent, stats.retried, stats.failed) == (1, 2, 0)
    reporter.close()


def test_permanent_failures_are_not_retried(pki: PKI, collector: Any) -> None:
    """A 400 is final, and a report still failing after max_attempts is given up."""
    refused = collector(statuses=[400])
    failing = collector(statuses=[500, 500, 500])
    one = Reporter(refused.url, backoff=0.01)
    two = Reporter(failing.url, backoff=0.01, max_attempts=3)
    one(_violations(pki, 1)[0])
    two(_violations(pki, 1)[0])
    assert one.flush(10)
    assert two.flush(10)
    assert (len(refused.bodies), one.stats.failed) == (1, 1)
    assert (len(failing.bodies), two.stats.failed, two.stats.retried) == (3, 1, 2)
    one.close()
    two.close()


def test_report_never_goes_to_the_failing_host(pki: PKI, collector: Any) -> None:
    """A report URI on the host whose pins failed is refused and counted (loop rule)."""
    sink = collector()
    port = sink.url.split(":")[2].split("/")[0]
    looping = Reporter(f"http://localhost:{port}/reports")
    looping(_violations(pki, 1, host="localhost")[0])
    # The failing rule covers the report host: refused before any connection is attempted.
    covered = Reporter("https://collector.tlspin.test/reports")
    covered(_violations(pki, 1, pattern="**.tlspin.test")[0])
    fine = Reporter(f"http://localhost:{port}/reports")
    fine(_violations(pki, 1)[0])
    assert fine.flush(10)
    assert looping.flush(1)
    assert covered.flush(1)
    assert (looping.stats.refused, covered.stats.refused, fine.stats.refused) == (1, 1, 0)
    assert [b["hostname"] for b in sink.bodies] == [HOST]
    for r in (looping, covered, fine):
        r.close()


def test_rule_report_uri_is_used(pki: PKI, collector: Any) -> None:
    """Without a default URI, a rule's own report_uri receives its violations; others none.
    (The collector is on loopback, which a rule's URI may reach only when allowed.)"""
    sink = collector()
    reporter = Reporter(allow_private_report_uris=True)
    with_uri = _violations(pki, 1, report_uri=sink.url)[0]
    without = _violations(pki, 1, host="other.tlspin.test")[0]
    reporter(with_uri)
    reporter(without)
    assert reporter.flush(10)
    assert [b["hostname"] for b in sink.bodies] == [HOST]
    reporter.close()


def test_report_endpoint_tls_is_verified_and_can_be_pinned(pki: PKI) -> None:
    """HTTPS reports go only to an endpoint the context trusts, and only if its pin matches."""
    endpoint_leaf = pki.intermediate.issue("localhost")
    trusted = client_trust_context(pki.root)
    right = tlspin.create_context(tlspin.PinPolicy([_rule(
        "localhost", [pki.intermediate.pin, pki.backup.pin])]),
        cadata=pki.root.cert_pem.decode())
    wrong = tlspin.create_context(tlspin.PinPolicy([_rule(
        "localhost", [pki.other.pin, pki.backup.pin])]),
        cadata=pki.root.cert_pem.decode())
    outcomes = {}
    with TLSServer(endpoint_leaf) as endpoint:
        uri = f"https://localhost:{endpoint.port}/reports"
        for name, ctx in (("trusted", trusted), ("system", None), ("pinned", right),
                          ("wrong-pin", wrong)):
            endpoint.reset()
            reporter = Reporter(uri, ssl_context=ctx, max_attempts=1)
            reporter(_violations(pki, 1)[0])
            assert reporter.flush(10)
            outcomes[name] = (reporter.stats.sent, len(endpoint.requests))
            reporter.close()
    assert outcomes == {"trusted": (1, 1), "system": (0, 0), "pinned": (1, 1),
                        "wrong-pin": (0, 0)}


def test_observer_never_raises_and_options_are_checked(pki: PKI, collector: Any) -> None:
    """After close, violations are ignored quietly; bad options fail at construction."""
    sink = collector()
    reporter = Reporter(sink.url)
    reporter.close()
    reporter(_violations(pki, 1)[0])
    assert (reporter.stats.dropped, sink.bodies) == (1, [])
    with pytest.raises(ValueError, match="https"):
        Reporter("http://collector.example.com/reports")
    with pytest.raises(ValueError, match="queue_size"):
        Reporter(sink.url, queue_size=0)
    with pytest.raises(ValueError, match="http"):
        Reporter("ftp://127.0.0.1/")


def _policy_pinning_the_collector(pki: PKI) -> tlspin.PinPolicy:
    """Rules for the failing host (wrong pins) and for the collector's host (right pins)."""
    return tlspin.PinPolicy([
        _rule(HOST, [pki.other.pin, pki.backup.pin]),
        _rule("localhost", [pki.intermediate.pin, pki.backup.pin]),
    ])


@pytest.mark.parametrize("collector_kind", ["mitm", "genuine"])
def test_report_connection_is_pinned_by_the_attached_policy(
    pki: PKI, tmp_path: Any, collector_kind: str
) -> None:
    """The report host is pinned by the policy the reporter is attached to: a MITM whose CA the
    client trusts gets nothing (not one byte of the report); the genuine collector gets it."""
    mitm_ca = CA.root("report MITM, trusted by the device")
    cafile = tmp_path / "trusted.pem"
    cafile.write_bytes(pki.root.cert_pem + mitm_ca.cert_pem)
    leaf = mitm_ca.issue("localhost") if collector_kind == "mitm" else (
        pki.intermediate.issue("localhost"))
    with TLSServer(leaf) as endpoint:
        reporter = Reporter(f"https://localhost:{endpoint.port}/reports", cafile=str(cafile),
                            max_attempts=1)
        reporter.attach(_policy_pinning_the_collector(pki))
        reporter(_violations(pki, 1)[0])
        assert reporter.flush(10)
        reporter.close()
        if collector_kind == "mitm":
            assert (reporter.stats.sent, reporter.stats.failed) == (0, 1)
            assert endpoint.received == b"", "the MITM must not read a byte of the report"
        else:
            assert reporter.stats.sent == 1
            assert len(endpoint.requests) == 1
            assert b'"hostname":"api.tlspin.test"' in endpoint.received


def test_report_host_outside_the_policy_is_verified_by_the_cas_only(
    pki: PKI, tmp_path: Any
) -> None:
    """Twin: a report host the policy does not cover is not pinned, only CA-verified: a server
    with a certificate from a trusted CA receives the report; with no CA trusted, none does."""
    cafile = tmp_path / "root.pem"
    cafile.write_bytes(pki.root.cert_pem)
    policy = tlspin.PinPolicy([_rule(HOST, [pki.other.pin, pki.backup.pin])])
    with TLSServer(pki.intermediate.issue("localhost")) as endpoint:
        for trusted, sent in ((str(cafile), 1), (None, 0)):
            endpoint.reset()
            reporter = Reporter(f"https://localhost:{endpoint.port}/reports", cafile=trusted,
                                max_attempts=1)
            reporter.attach(policy)
            reporter(_violations(pki, 1)[0])
            assert reporter.flush(10)
            reporter.close()
            assert (reporter.stats.sent, len(endpoint.requests)) == (sent, sent)


def test_a_dripping_collector_cannot_hold_the_sender(pki: PKI) -> None:
    """timeout bounds a whole delivery, not each read: a collector that drips its answer one
    byte at a time fails the attempt within timeout (plus a generous 5 s), and the next report
    is delivered. The bound is functional, not a benchmark."""
    from _httpd import DripServer

    timeout = 1.0
    dripper = DripServer(b"HTTP/1.1 200 OK\r\n", b"X-Slow: " + b"a" * 64)
    try:
        reporter = Reporter(f"http://127.0.0.1:{dripper.port}/reports", timeout=timeout,
                            max_attempts=1, dedup_window=0)
        first, second = _violations(pki, 2)
        reporter(first)
        assert reporter.flush(timeout + 5), "the sender is still stuck in the dripping response"
        assert (reporter.stats.sent, reporter.stats.failed) == (0, 1)
        assert dripper.dripped > 0
        dripper.full = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
        reporter(second)
        assert reporter.flush(10)
        assert reporter.stats.sent == 1
        reporter.close()
    finally:
        dripper.close()


def test_reporter_headers_go_to_its_own_uri_only(pki: PKI, collector: Any) -> None:
    """``headers`` (an API key) go with reports to the reporter's own URI; a rule's report_uri
    (named by the policy: a bundle, an imported header) gets the report without them."""
    own, third = collector(), collector()
    reporter = Reporter(own.url, headers={"Authorization": "Bearer API-KEY"},
                        allow_private_report_uris=True)
    reporter(_violations(pki, 1, report_uri=third.url)[0])
    reporter(_violations(pki, 1, host="other.tlspin.test")[0])
    assert reporter.flush(10)
    reporter.close()
    assert [b["hostname"] for b in third.bodies] == [HOST]
    assert "authorization" not in third.headers[0]
    assert [b["hostname"] for b in own.bodies] == ["other.tlspin.test"]
    assert own.headers[0]["authorization"] == "Bearer API-KEY"


@pytest.mark.parametrize(
    "uri", ["http://127.0.0.1:{port}/r", "http://localhost:{port}/r", "https://127.1:{port}/r"]
)
def test_rule_report_uri_cannot_reach_the_local_network(
    pki: PKI, blackhole: Blackhole, uri: str
) -> None:
    """A rule's report_uri naming a loopback service (as an imported HPKP header can:
    ``report-uri="http://127.0.0.1:6379/"``) gets no connection by default, checked on the
    resolved address (``127.1`` is 127.0.0.1 to the resolver); with
    ``allow_private_report_uris=True`` (twin) the reporter connects."""
    target = uri.format(port=blackhole.listener.getsockname()[1])
    violation = _violations(pki, 1, report_uri=target)[0]
    reporter = Reporter("https://reports.tlspin.test/r", max_attempts=1)
    reporter(violation)
    assert reporter.flush(10)
    reporter.close()
    assert (reporter.stats.sent, reporter.stats.failed) == (0, 1)
    assert not blackhole.accepted.is_set()
    allowed = Reporter(max_attempts=1, timeout=30, allow_private_report_uris=True)
    allowed(violation)
    assert blackhole.accepted.wait(10)
    allowed.close(timeout=0)


def test_reporter_own_local_uri_is_allowed(pki: PKI, collector: Any) -> None:
    """Twin: the reporter's own URI is the application's choice and may be on loopback."""
    sink = collector()
    reporter = Reporter(sink.url)
    reporter(_violations(pki, 1)[0])
    assert reporter.flush(10)
    reporter.close()
    assert reporter.stats.sent == 1


@pytest.mark.parametrize(
    ("address", "public"),
    [("127.0.0.1", False), ("10.1.2.3", False), ("169.254.169.254", False), ("::1", False),
     ("fe80::1%eth0", False), ("::ffff:127.0.0.1", False), ("100.64.0.1", False),
     ("0.0.0.0", False), ("224.0.0.1", False), ("93.184.216.34", True),
     ("2606:4700::1111", True), ("not an address", False)],
)
def test_is_public_address(address: str, public: bool) -> None:
    """Only global unicast addresses are public; IPv4-mapped IPv6 is judged as IPv4."""
    from tlspin.reporting import is_public_address

    assert is_public_address(address) is public


def test_a_malformed_content_length_from_the_collector_is_retried(pki: PKI) -> None:
    """A collector answering ``Content-Length: ²`` (passes str.isdigit(), int() refuses it)
    gave a ValueError, read as "the URI is unusable": the report was dropped at once. It is a
    malformed response now, retried like any other."""
    from _httpd import DripServer

    dripper = DripServer(b"", b" ")
    dripper.full = b"HTTP/1.1 201 Created\r\nContent-Length: \xb2\r\n\r\n"
    try:
        reporter = Reporter(f"http://127.0.0.1:{dripper.port}/reports", max_attempts=2,
                            backoff=0.01, jitter=False)
        reporter(_violations(pki, 1)[0])
        assert reporter.flush(10)
        assert (reporter.stats.retried, reporter.stats.failed) == (1, 1)
        dripper.full = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"  # twin
        reporter(_violations(pki, 2)[1])
        assert reporter.flush(10)
        assert reporter.stats.sent == 1
        reporter.close()
    finally:
        dripper.close()
