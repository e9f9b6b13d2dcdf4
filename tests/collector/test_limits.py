"""Slow and greedy clients against a live collector, with real slow-drip sockets: the body
deadline (408), the request-head deadline, and the cap on connections per client IP."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tlspin.collector.models import Report

from .conftest import LiveServer
from .proc import Collector, free_port

_HEAD = b"POST /reports HTTP/1.1\r\nHost: collector\r\nContent-Type: application/json\r\n"


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """Client sockets opened by the test; all closed afterwards."""
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def _connect(port: int, opened: list[socket.socket]) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    opened.append(sock)
    return sock


def _answered(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def _drip_until_answered(sock: socket.socket, *, budget: int, interval: float = 0.1) -> bool:
    """Send one byte every *interval* seconds until the server answers (True) or *budget*
    bytes went out unanswered (False). The body never completes: its length is larger."""
    for _ in range(budget):
        if _answered(sock):
            return True
        try:
            sock.send(b"x")
        except OSError:  # closed by the server: its answer, if any, is in the buffer
            return True
        time.sleep(interval)
    return _answered(sock)


def _read_to_end(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or 10 s of silence)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data + b"<reset>"
        except TimeoutError:
            return data + b"<still open>"
        if not chunk:
            return data + b"<closed>"
        data += chunk


def _status(sock: socket.socket) -> bytes:
    """The status line of the next response on *sock*, read whole (head and body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head.split(b"\r\n", 1)[0]


def _report(make_report: Any) -> bytes:
    return json.dumps(make_report()).encode()


def test_slow_body_gets_408_and_the_connection_closes(
    serve: Callable[..., LiveServer], sqlite_url: str
) -> None:
    """A body dripped a byte at a time gets 408 once the body deadline passes, though bytes
    keep arriving, and the connection is closed; nothing is stored."""
    server = serve(db_url=sqlite_url, body_timeout=1.0)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(_HEAD + b"Content-Length: 60000\r\n\r\n{")
        assert _drip_until_answered(sock, budget=150), "no answer while the body dripped"
        answer = _read_to_end(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert answer.endswith(b"<closed>"), answer[-200:]
    assert b"did not arrive within 1 seconds" in answer
    assert server.count(Report) == 0
    with server.client() as client:
        assert 'tlspin_reports_rejected_total{reason="slow-body"} 1.0' in client.get(
            "/metrics").text


def test_slow_body_within_the_deadline_is_stored(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any
) -> None:
    """Twin: a body that arrives in slow pieces, complete before the body deadline and after
    the (shorter) head deadline, is stored: the head deadline stops once the head is in."""
    server = serve(db_url=sqlite_url, body_timeout=60.0, header_timeout=1.0)
    body = _report(make_report)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(_HEAD + f"Content-Length: {len(body)}\r\n\r\n".encode())
        pieces = [body[i : i + len(body) // 12 + 1] for i in range(0, len(body),
                                                                   len(body) // 12 + 1)]
        for piece in pieces:  # about 2.4 s in all: longer than the head deadline
            time.sleep(0.2)
            sock.sendall(piece)
        assert _status(sock) == b"HTTP/1.1 201 Created"
    assert server.count(Report) == 1


def test_slow_head_is_closed(serve: Callable[..., LiveServer], sqlite_url: str) -> None:
    """A request head dripped a byte at a time is cut off at the head deadline."""
    server = serve(db_url=sqlite_url, header_timeout=1.0)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /reports HTTP/1.1\r\n")
        assert _drip_until_answered(sock, budget=150), "the dripping head was never cut off"
        assert _read_to_end(sock) in (b"<closed>", b"<reset>")
    with server.client() as client:
        metrics = client.get("/metrics").text
    assert 'tlspin_connections_refused_total{reason="slow-head"} 1.0' in metrics


def test_keep_alive_requests_each_get_a_fresh_head_deadline(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any
) -> None:
    """Twin: requests on one keep-alive connection, spread over more than the head deadline
    in all, are each served."""
    server = serve(db_url=sqlite_url, header_timeout=1.0)
    body = _report(make_report)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        statuses = []
        for _ in range(4):
            time.sleep(0.4)
            sock.sendall(_HEAD + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            statuses.append(_status(sock))
    assert statuses == [b"HTTP/1.1 201 Created"] * 4


def test_connections_per_ip_are_capped(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any,
    sockets: list[socket.socket],
) -> None:
    """Past the cap, an IP's new connections get 429 and are closed at once, even while its
    held ones drip; once some close, it may connect again."""
    server = serve(db_url=sqlite_url, max_connections_per_ip=4)
    held = []
    for _ in range(4):
        sock = _connect(server.port, sockets)
        sock.sendall(_HEAD + b"Content-Length: 60000\r\n\r\n{")
        held.append(sock)
    guard = server.state.connections
    _wait_for(lambda: guard.open_connections("127.0.0.1") == 4)
    refused = [_read_to_end(_connect(server.port, sockets)) for _ in range(6)]
    assert all(r.startswith(b"HTTP/1.1 429 ") and r.endswith(b"<closed>") for r in refused), (
        refused)
    assert not any(_answered(sock) for sock in held)  # the held ones are untouched
    for sock in held[:2]:
        sock.close()
    _wait_for(lambda: guard.open_connections("127.0.0.1") == 2)
    with server.client() as client:
        assert client.post("/reports", content=_report(make_report)).status_code == 201
        metrics = client.get("/metrics").text
    assert 'tlspin_connections_refused_total{reason="too-many-connections"} 6.0' in metrics


def test_forwarded_for_turns_the_connection_cap_off(
    serve: Callable[..., LiveServer], sqlite_url: str, sockets: list[socket.socket]
) -> None:
    """Twin: behind a proxy (trust_forwarded_for) every connection comes from the proxy, so
    the per-IP connection cap does not apply."""
    server = serve(db_url=sqlite_url, max_connections_per_ip=2, trust_forwarded_for=True)
    for _ in range(5):
        _connect(server.port, sockets).sendall(_HEAD + b"Content-Length: 10\r\n\r\n{")
    _wait_for(lambda: server.state.connections.open_connections("127.0.0.1") == 5)
    with server.client() as client:
        assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("peer", "key"),
    [("127.0.0.1", "127.0.0.1"), ("::ffff:192.0.2.7", "192.0.2.7"),
     ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"), ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
     ("2001:db8:1:3::1", "2001:db8:1:3::/64")],
)
def test_ipv6_peers_count_by_their_64(peer: str, key: str) -> None:
    """Connections count per IPv4 address and per IPv6 /64: one subscriber's /64 holds more
    addresses than any cap, so single IPv6 addresses would cap nothing."""
    from tlspin.collector.limits import peer_key

    assert peer_key(peer) == key


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the collector never reached the expected state"
        time.sleep(0.01)


def test_serve_bounds_a_slow_drip_attack(
    tmp_path: Any, make_report: Any, collectors: list[Collector],
    sockets: list[socket.socket],
) -> None:
    """The attack on ``tlspin serve``: one IP opens many slow-drip report connections. Past
    --max-connections-per-ip they get 429 at once; the held ones get 408 at --body-timeout,
    and the IP can send reports again."""
    collector = Collector(
        f"sqlite:///{tmp_path}/c.db", free_port(),
        args=["--max-connections-per-ip", "4", "--body-timeout", "1"],
    )
    collectors.append(collector)
    opened = []
    for _ in range(12):
        sock = _connect(collector.port, sockets)
        try:
            sock.sendall(_HEAD + b"Content-Length: 60000\r\n\r\n{")
        except OSError:
            pass  # already refused and closed
        opened.append(sock)
    for sock in opened:
        _drip_until_answered(sock, budget=150)
    answers = [_read_to_end(sock).split(b"\r\n", 1)[0] for sock in opened]
    assert sorted(answers) == [b"HTTP/1.1 408 Request Timeout"] * 4 + [
        b"HTTP/1.1 429 Too Many Requests"] * 8, answers
    conn = socket.create_connection(("127.0.0.1", collector.port), timeout=10)
    sockets.append(conn)
    body = _report(make_report)
    conn.sendall(_HEAD + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    assert _status(conn) == b"HTTP/1.1 201 Created"
