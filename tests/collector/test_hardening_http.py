"""The red-team review of the collector, HTTP side: each attack performed on loopback against
a live collector, with the legitimate path beside it.

Auth before any body, chunked bodies refused before parsing, X-Forwarded-For and IPv6 keying,
the connection cap and head deadline before the TLS handshake, clients that never read, the
validation error that echoed its input, cookies, caching and HSTS.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tlspin.testing.pki import CA, client_trust_context

from .conftest import TOKEN, LiveServer, unique_host
from .proc import Collector, free_port


def _exchange(port: int, request: bytes, *, wait: float = 15.0) -> bytes:
    """Send *request* on a fresh connection; everything the server sends until it closes or
    *wait* seconds pass (a deadline for a failing run, not a measurement)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request)
        sock.settimeout(wait)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            pass
        return answer


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


# -- 1: no body is read before the token -------------------------------------------------------

def test_monitor_runs_answer_401_before_reading_a_huge_body(
    serve: Callable[..., LiveServer], sqlite_url: str
) -> None:
    """Attack: a monitor-run body without a token. The collector answers 401 on the head
    alone, reading none of the body (it used to read and parse all of it first: 200 MB took
    5.3 GB of memory). Any body over the cap gets 413 unread, token or not."""
    server = serve(db_url=sqlite_url, body_timeout=60)
    head = (b"POST /api/monitor-runs HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n")
    under_cap = head % (15 * 1024 * 1024)
    unauthenticated = _exchange(server.port, under_cap + b"\r\n[{},{},", wait=20)
    assert _status(unauthenticated) == 401, unauthenticated[:200]
    for auth in (b"", f"authorization: Bearer {TOKEN}\r\n".encode()):
        huge = _exchange(server.port, head % 209715200 + auth + b"\r\n[{},{},")
        assert _status(huge) == 413, huge[:200]


def test_monitor_runs_take_a_run_with_the_token(
    serve: Callable[..., LiveServer], sqlite_url: str
) -> None:
    """Twin: a run with the token is stored; a malformed one gets 400 naming the field."""
    server = serve(db_url=sqlite_url)
    run = {"run": {"started_at": "2024-05-01T00:00:00Z"}, "results": [
        {"endpoint": "a.test:443", "host": "a.test", "port": 443, "status": "green"}]}
    with server.client() as client:
        stored = client.post("/api/monitor-runs", json=run)
        bad = client.post("/api/monitor-runs", json={"run": {"started_at": "yesterday"},
                                                     "results": []})
    with server.client(token=None) as client:
        anonymous = client.post("/api/monitor-runs", json=run)
    assert stored.status_code == 201, stored.text
    assert stored.json()["results"] == 1
    assert bad.status_code == 400
    assert "run.started_at" in bad.json()["detail"]
    assert anonymous.status_code == 401


# -- 14: validation errors never echo input (a lone surrogate made them 500) -------------------

def test_validation_errors_never_echo_input_or_fail(
    serve: Callable[..., LiveServer], sqlite_url: str
) -> None:
    """Attack: a lone surrogate where the API expects a number or a date. FastAPI's own
    handler echoed the input and failed to encode it (500); now 400/422 without the input."""
    server = serve(db_url=sqlite_url)
    with server.client() as client:
        monitor = client.post("/api/monitor-runs", content=b'{"run":{"started_at":"\\ud800"},'
                              b'"results":[{"port":"\\ud800"}]}')
        query = client.get("/api/reports", params={"since": "x" * 50, "limit": "\u202e1"})
    assert monitor.status_code == 400, monitor.text
    assert query.status_code == 422, query.text
    assert "x" * 50 not in query.text
    assert "\\u202e" not in query.text
    assert [e["loc"] for e in query.json()["detail"]] == [["query", "since"], ["query", "limit"]]


# -- 3: chunked bodies are refused before the parser sees them ---------------------------------

def test_one_byte_chunks_are_refused_before_parsing(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any
) -> None:
    """Attack: a 60 KB report in one-byte chunks (the pure-Python HTTP parser spent about
    0.75 s of the event loop on each, 429 or not). The connection is answered 411 and
    closed by the protocol, before uvicorn parses a chunk; the refusal is counted."""
    server = serve(db_url=sqlite_url)
    body = json.dumps(make_report(hostname=unique_host(), padding="A" * 60_000)).encode()
    head = b"POST /reports HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunks = [b"1\r\n" + body[i : i + 1] + b"\r\n" for i in range(len(body))]
    # The first chunks only: the answer comes before the body would be complete.
    answer = _exchange(server.port, head + b"".join(chunks[:200]))
    assert _status(answer) == 411, answer[:200]
    assert b"Content-Length" in answer
    refused = server.state.metrics.connections_refused.labels(reason="chunked")
    assert refused._value.get() == 1
    # The whole dripped report: the connection is cut (the client may see a reset, its
    # unread chunks discarded), and nothing is stored.
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        try:
            sock.sendall(head + b"".join(chunks) + b"0\r\n\r\n")
            sock.settimeout(15)
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
    assert refused._value.get() == 2
    assert server.state.metrics.received._value.get() == 0
    # Upper case, and split across two writes: refused all the same.
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /reports HTTP/1.1\r\nHost: x\r\nTRANSFER-ENC")
        time.sleep(0.2)
        sock.sendall(b"ODING: chunked\r\n\r\n1\r\n{\r\n")
        sock.settimeout(15)
        assert _status(sock.recv(4096)) == 411


def _drip(port: int, pieces: list[bytes]) -> bytes:
    """Send each piece in its own write, a moment apart (so that the server reads them one by
    one); the first answer."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(15)
        try:
            for piece in pieces[:-1]:
                sock.sendall(piece)
                time.sleep(0.05)
            sock.sendall(pieces[-1])
        except (BrokenPipeError, ConnectionResetError):  # refused before the last piece
            pass
        try:
            return sock.recv(4096)
        except ConnectionResetError:
            return b""


_BARE_LF_HEAD = b"POST /reports HTTP/1.1\nHost: x\ncontent-type: application/json\n"


def test_chunked_heads_in_bare_lf_or_dripped_are_refused_before_parsing(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any
) -> None:
    """Attack: the one-byte chunks above, with the head's lines ended by a bare LF (which
    h11 accepts), or the head dripped a few bytes a write: the protocol's search for the header
    missed both, and uvicorn parsed every chunk (0.2 s of the event loop a request) before the
    app answered 411. Both are refused by the protocol now, and counted."""
    server = serve(db_url=sqlite_url)
    body = json.dumps(make_report(hostname=unique_host(), padding="A" * 6_000)).encode()
    # The first chunks only: the answer comes before the body would be complete.
    chunks = b"".join(b"1\r\n" + body[i : i + 1] + b"\r\n" for i in range(200))
    refused = server.state.metrics.connections_refused.labels(reason="chunked")
    answer = _exchange(server.port, _BARE_LF_HEAD + b"Transfer-Encoding: chunked\n\n" + chunks)
    assert _status(answer) == 411, answer[:200]
    assert refused._value.get() == 1
    head = b"POST /reports HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    pieces = [head[i : i + 3] for i in range(0, len(head), 3)]
    _drip(server.port, [*pieces, b"\r\n" + chunks])
    assert refused._value.get() == 2
    assert server.state.metrics.received._value.get() == 0


def test_bare_lf_and_dripped_heads_with_content_length_are_stored(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any
) -> None:
    """Twin: the same report with Content-Length, under a bare-LF head or a dripped one (a
    header named like Transfer-Encoding in a value does not count), is stored."""
    server = serve(db_url=sqlite_url)
    body = json.dumps(make_report(hostname=unique_host(), padding="A" * 6_000)).encode()
    length = b"Content-Length: %d" % len(body)
    answer = _exchange(server.port, _BARE_LF_HEAD + b"Connection: close\n" + length + b"\n\n"
                       + body)
    assert _status(answer) == 201, answer[:300]
    head = (b"POST /reports HTTP/1.1\r\nHost: x\r\nX-Note: not Transfer-Encoding: chunked\r\n"
            + length + b"\r\n")
    pieces = [head[i : i + 3] for i in range(0, len(head), 3)]
    assert _status(_drip(server.port, [*pieces, b"\r\n" + body])) == 201
    assert server.state.metrics.connections_refused.labels(reason="chunked")._value.get() == 0


def test_the_same_report_with_content_length_is_stored(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any
) -> None:
    """Twin: the same 60 KB report with Content-Length is stored."""
    server = serve(db_url=sqlite_url)
    body = json.dumps(make_report(hostname=unique_host(), padding="A" * 60_000)).encode()
    answer = _exchange(server.port, b"POST /reports HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                       b"content-length: %d\r\n\r\n" % len(body) + body)
    assert _status(answer) == 201, answer[:300]


# -- 5 and 6: X-Forwarded-For's last entry, IPv6 by /64 ----------------------------------------

def test_forwarded_for_takes_the_entry_the_proxy_wrote(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any
) -> None:
    """Attack: a sender behind the proxy puts a fresh first X-Forwarded-For entry on each
    report to escape the per-IP limit and to forge its stored address. The last entry (the
    one the proxy appended) counts: the third report gets 429, and the proxy's view of the
    address is what is stored."""
    server = serve(db_url=sqlite_url, trust_forwarded_for=True, ip_rate_limit=(2, 3600.0))
    with server.client(token=None) as client:
        answers = [
            client.post("/reports", json=make_report(hostname=unique_host()),
                        headers={"X-Forwarded-For": f"10.9.9.{n}, 127.0.0.7"})
            for n in range(3)
        ]
        # Another client of the proxy is not limited with it, and a last entry that is no
        # address leaves the TCP peer's.
        other = client.post("/reports", json=make_report(hostname=unique_host()),
                            headers={"X-Forwarded-For": "127.0.0.7, 127.0.0.8"})
        junk = client.post("/reports", json=make_report(hostname=unique_host()),
                           headers={"X-Forwarded-For": "127.0.0.9, <script>"})
    assert [a.status_code for a in answers] == [201, 201, 429]
    assert (other.status_code, junk.status_code) == (201, 201)
    with server.client() as client:
        ips = {r["id"]: r["client_ip"] for r in client.get("/api/reports").json()["items"]}
    assert ips[answers[0].json()["id"]] == "127.0.0.7"
    assert ips[other.json()["id"]] == "127.0.0.8"
    assert ips[junk.json()["id"]] == "127.0.0.1", (ips, junk.json())


@pytest.mark.parametrize(
    ("attacker", "admin"),
    [("127.0.0.31:{port}", "127.0.0.32:5555"),
     ("[2001:db8:31::1]:{port}", "[2001:db8:32::1]:5555")],
    ids=["ipv4-port", "ipv6-port"],
)
def test_forwarded_for_entries_with_a_port_key_each_client(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any, attacker: str,
    admin: str,
) -> None:
    """Attack: behind a proxy that writes the client's port too (Azure Application Gateway:
    ``1.2.3.4:5678``), every entry was refused as no address and the proxy's own address
    counted, one key for all its clients: ten wrong logins from anyone locked the operator
    out (429). Each client now counts under its own address, whatever its port: the attacker
    stays limited, the operator logs in, and the address is what is stored."""
    server = serve(db_url=sqlite_url, trust_forwarded_for=True)
    with server.client(token=None) as client:
        logins = [
            client.post("/login", data={"token": "wrong-token-xxxxxxxx", "next": "/"},
                        headers={"X-Forwarded-For": "10.0.0.1, " + attacker.format(port=n)})
            for n in range(40000, 40012)
        ]
        operator = client.post("/login", data={"token": TOKEN, "next": "/dashboard"},
                               headers={"X-Forwarded-For": admin})
        report = client.post("/reports", json=make_report(hostname=unique_host()),
                             headers={"X-Forwarded-For": admin})
    assert [r.status_code for r in logins] == [401] * 10 + [429] * 2
    assert operator.status_code == 303
    with server.client() as client:
        ips = {r["id"]: r["client_ip"] for r in client.get("/api/reports").json()["items"]}
    assert ips[report.json()["id"]] == admin.rsplit(":", 1)[0].strip("[]")


def test_forwarded_for_entries_that_are_no_address_count_as_the_peer(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any
) -> None:
    """Twin: an entry with a port that is no port, or an IPv4 address in brackets with a
    port, is no address: the TCP peer's counts, as for any other junk."""
    server = serve(db_url=sqlite_url, trust_forwarded_for=True)
    with server.client(token=None) as client:
        answers = [
            client.post("/reports", json=make_report(hostname=unique_host()),
                        headers={"X-Forwarded-For": entry})
            for entry in ("127.0.0.33:", "127.0.0.33:http", "[127.0.0.33]:80", "127.0.0.33:1:2")
        ]
    with server.client() as client:
        ips = {r["id"]: r["client_ip"] for r in client.get("/api/reports").json()["items"]}
    assert [ips[a.json()["id"]] for a in answers] == ["127.0.0.1"] * 4


def test_forwarded_hops_skip_the_entries_of_inner_proxies(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any
) -> None:
    """With two proxies (forwarded_hops=2) the client is the entry the outer proxy wrote,
    second from the end; a list too short to hold it (the outer proxy bypassed) counts as
    the TCP peer's."""
    server = serve(db_url=sqlite_url, trust_forwarded_for=True, forwarded_hops=2)
    with server.client(token=None) as client:
        two = client.post("/reports", json=make_report(hostname=unique_host()), headers={
            "X-Forwarded-For": "10.1.1.1, 127.0.0.21, 127.0.0.22"})
        short = client.post("/reports", json=make_report(hostname=unique_host()), headers={
            "X-Forwarded-For": "127.0.0.23"})
    with server.client() as client:
        ips = {r["id"]: r["client_ip"] for r in client.get("/api/reports").json()["items"]}
    assert (ips[two.json()["id"]], ips[short.json()["id"]]) == ("127.0.0.21", "127.0.0.1")


def test_ipv6_senders_are_limited_by_their_64(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any
) -> None:
    """Attack: an IPv6 sender takes a new address of its /64 for each report (and each login
    attempt). Reports and logins are limited per /64; another /64 is not affected."""
    server = serve(db_url=sqlite_url, trust_forwarded_for=True, ip_rate_limit=(2, 3600.0))
    with server.client(token=None) as client:
        reports = [
            client.post("/reports", json=make_report(hostname=unique_host()),
                        headers={"X-Forwarded-For": f"2001:db8:1:2::{n:x}"})
            for n in range(1, 4)
        ]
        elsewhere = client.post("/reports", json=make_report(hostname=unique_host()),
                                headers={"X-Forwarded-For": "2001:db8:1:3::1"})
        logins = [
            client.post("/login", data={"token": "wrong-token-xxxxxxxx", "next": "/"},
                        headers={"X-Forwarded-For": f"2001:db8:1:2::{n:x}"})
            for n in range(1, 13)
        ]
    assert [r.status_code for r in reports] == [201, 201, 429]
    assert elsewhere.status_code == 201
    assert [r.status_code for r in logins] == [401] * 10 + [429] * 2


# -- 8: the cap and the deadline before the TLS handshake ----------------------------------------

@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[CA, Path, Path]:
    ca = CA.root("collector test CA")
    cert, key = ca.issue("127.0.0.1").write(tmp_path_factory.mktemp("tls"))
    return ca, cert, key


def test_idle_connections_before_the_handshake_count_and_expire(
    collectors: list[Collector], tmp_path: Path, tls_files: tuple[CA, Path, Path]
) -> None:
    """Attack: TCP connections that never send a ClientHello, against `tlspin serve
    --certfile`. They count against the per-IP cap from the accept (the one over it is closed
    at once) and are closed at the head deadline (they used to stay 60 s, uncounted)."""
    ca, cert, key = tls_files
    port = free_port()
    collector = Collector(
        f"sqlite:///{tmp_path}/c.db", port, ssl_context=client_trust_context(ca),
        args=["--certfile", str(cert), "--keyfile", str(key), "--max-connections-per-ip", "4",
              "--header-timeout", "2"])
    collectors.append(collector)
    time.sleep(0.5)  # the health check's connection is closed and released
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    try:
        with socket.create_connection(("127.0.0.1", port)) as fifth:
            fifth.settimeout(15)
            assert fifth.recv(1) == b""  # closed at once: over the cap
        for sock in idle:
            sock.settimeout(15)
            assert sock.recv(1) == b""  # closed at the head deadline, no ClientHello seen
    finally:
        for sock in idle:
            sock.close()


def test_https_collector_serves_with_hsts(
    collectors: list[Collector], tmp_path: Path, tls_files: tuple[CA, Path, Path],
    make_report: Any,
) -> None:
    """Twin: a real TLS client gets its report stored over HTTPS, several at once within the
    cap, and the answers carry HSTS."""
    ca, cert, key = tls_files
    port = free_port()
    context = client_trust_context(ca)
    collectors.append(Collector(
        f"sqlite:///{tmp_path}/c.db", port, ssl_context=context,
        args=["--certfile", str(cert), "--keyfile", str(key), "--max-connections-per-ip", "4"]))
    with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=context) as client:
        answers = [client.post("/reports", json=make_report(hostname=unique_host()))
                   for _ in range(3)]
        health = client.get("/healthz")
    assert [a.status_code for a in answers] == [201] * 3
    assert health.headers["strict-transport-security"] == "max-age=31536000"
    with pytest.raises(ssl.SSLError):  # and plain TLS rules: an untrusted client is refused
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                client_trust_context().wrap_socket(raw, server_hostname="127.0.0.1"):
            pass


# -- 12: a client that never reads its responses ----------------------------------------------

def test_a_client_that_never_reads_is_closed(
    serve: Callable[..., LiveServer], sqlite_url: str
) -> None:
    """Attack: pipelined requests for a 20 KB document, never read (a tiny receive window).
    The response cannot drain, so the connection used to stay open for good; now the client
    has the head deadline to take what it is sent, and the connection is closed."""
    server = serve(db_url=sqlite_url, header_timeout=1, body_timeout=1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    try:
        sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 300)
        guard = server.state.connections
        slow_read = server.state.metrics.connections_refused.labels(reason="slow-read")
        deadline = time.monotonic() + 20
        while not slow_read._value.get() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert slow_read._value.get() == 1
        while guard.open_connections("127.0.0.1") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert guard.open_connections("127.0.0.1") == 0
    finally:
        sock.close()


def test_a_client_that_reads_gets_every_pipelined_answer(
    serve: Callable[..., LiveServer], sqlite_url: str
) -> None:
    """Twin: the same pipelined requests, read, are all answered on one connection."""
    server = serve(db_url=sqlite_url, header_timeout=1)
    answer = _exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 20
                       + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.count(b"HTTP/1.1 200 OK") == 21


# -- 16: cookies, logout, caching ---------------------------------------------------------------

def _login(client: httpx.Client) -> str:
    answer = client.post("/login", data={"token": TOKEN, "next": "/dashboard"})
    assert answer.status_code == 303
    return answer.headers["set-cookie"]


def test_logout_revokes_the_session_everywhere(
    serve: Callable[..., LiveServer], sqlite_url: str
) -> None:
    """Attack: a copy of a session cookie (taken before the logout) replayed after it, on the
    same collector and on another process sharing the database. It is refused on both."""
    first = serve(db_url=sqlite_url)
    second = serve(db_url=sqlite_url)
    with first.client(token=None) as client:
        _login(client)
        cookie = client.cookies["tlspin_session"]
        assert client.get("/api/incidents").status_code == 200
        page = client.get("/dashboard").text
        csrf = page.split('name="csrf" value="')[1].split('"')[0]
        assert client.post("/logout", data={"csrf": csrf}).status_code == 303
    for server in (first, second):
        with server.client(token=None) as replay:
            replay.cookies.set("tlspin_session", cookie)
            assert replay.get("/api/incidents").status_code == 401
            assert replay.get("/dashboard").status_code == 303  # to the login form


def test_a_session_works_until_logout_on_every_process(
    serve: Callable[..., LiveServer], sqlite_url: str
) -> None:
    """Twin: a session opens the API and the dashboard on both processes; a fresh login
    after a logout works."""
    first = serve(db_url=sqlite_url)
    second = serve(db_url=sqlite_url)
    with first.client(token=None) as client:
        _login(client)
        cookie = client.cookies["tlspin_session"]
    for server in (first, second):
        with server.client(token=None) as other:
            other.cookies.set("tlspin_session", cookie)
            assert other.get("/api/incidents").status_code == 200
            assert other.get("/dashboard").status_code == 200


def test_secure_cookies_and_no_store(
    serve: Callable[..., LiveServer], sqlite_url: str
) -> None:
    """Behind a TLS-terminating proxy the app sees plain HTTP: ``secure_cookies`` marks the
    cookie Secure all the same (without it, plain HTTP gets no Secure flag). The API, the
    exports and /metrics are never cached."""
    proxied = serve(db_url=sqlite_url, secure_cookies=True)
    plain = serve(db_url=sqlite_url)
    with proxied.client(token=None) as client:
        assert "secure" in _login(client).lower().split("; ")
    with plain.client(token=None) as client:
        assert "secure" not in _login(client).lower().split("; ")
    with plain.client() as client:
        for path in ("/api/reports", "/api/incidents.csv", "/api/reports.csv", "/metrics",
                     "/api/monitor/latest"):
            assert client.get(path).headers["cache-control"] == "no-store", path
