"""`RecordWatch`, the control run's key-less view of a TLS connection, on real TLS streams.

Each test runs a real handshake between two OpenSSL endpoints (the stdlib's `ssl.SSLObject` over
memory BIOs) and shows every byte to a `RecordWatch` on its way, as the audit proxy does: the
client's bytes before the server gets them, the server's before the client gets them, and only
what the watch lets through reaches the client. What the watch counts is then compared with what
the endpoints really wrote.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

import pytest

from tlspin.audit._tls_records import RecordWatch
from tlspin.testing.pki import CA, server_context

HOST = "api.records.test"
VERSIONS = {"tls12": ssl.TLSVersion.TLSv1_2, "tls13": ssl.TLSVersion.TLSv1_3}


@dataclass
class Pair:
    """A client and a server joined through a `RecordWatch`."""

    client: ssl.SSLObject
    server: ssl.SSLObject
    watch: RecordWatch
    bios: tuple[ssl.MemoryBIO, ssl.MemoryBIO, ssl.MemoryBIO, ssl.MemoryBIO]
    delivered: bytearray = field(default_factory=bytearray)  # server bytes the client got

    def pump(self) -> None:
        """Move bytes both ways until neither side has anything to send."""
        client_in, client_out, server_in, server_out = self.bios
        while True:
            moved = False
            if data := client_out.read():
                released = self.watch.from_client(data)
                server_in.write(data)
                client_in.write(released)
                self.delivered += released
                moved = True
            if data := server_out.read():
                allowed = self.watch.from_server(data)
                client_in.write(allowed)
                self.delivered += allowed
                moved = True
            if not moved:
                return

    def handshake(self) -> None:
        """Run both handshakes to completion."""
        done = {"client": False, "server": False}
        for _ in range(20):
            for name, side in (("client", self.client), ("server", self.server)):
                if not done[name]:
                    try:
                        side.do_handshake()
                        done[name] = True
                    except ssl.SSLWantReadError:
                        pass
            self.pump()
            if all(done.values()):
                return
        raise AssertionError(f"the handshake did not finish: {done}")

    def client_sends(self, data: bytes) -> bytes:
        """The client writes *data*; return what the server reads of it."""
        self.client.write(data)
        self.pump()
        return self.server.read(65536)


def make_pair(version: str, *, alpn: list[str] | None = None, server_curve: str | None = None,
              server_name: str = HOST) -> Pair:
    """A client and server limited to *version*, the server holding a leaf for HOST."""
    ca = CA.root("records root")
    sctx = server_context(ca.issue(HOST), alpn=None)
    sctx.maximum_version = VERSIONS[version]
    if server_curve:
        sctx.set_ecdh_curve(server_curve)  # a group the client has no key share for: HRR
    cctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
    cctx.check_hostname = False  # the SNI under test may differ from the certificate's name
    cctx.maximum_version = VERSIONS[version]
    if alpn:
        cctx.set_alpn_protocols(alpn)
    bios = (ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO())
    client = cctx.wrap_bio(bios[0], bios[1], server_hostname=server_name)
    server = sctx.wrap_bio(bios[2], bios[3], server_side=True)
    return Pair(client, server, RecordWatch(), bios)


@pytest.mark.parametrize("version", ["tls12", "tls13"])
def test_counts_the_clients_application_records(version: str) -> None:
    """Each write after the handshake is one application-data record; the handshake, with the
    client's Finished, is never counted; the SNI, ALPN offer and version are read."""
    pair = make_pair(version, alpn=["http/1.1", "h2"])
    pair.handshake()
    assert (pair.watch.records, pair.watch.sent) == (0, 0)
    assert pair.watch.handshake_done
    assert pair.watch.version == ("TLSv1.2" if version == "tls12" else "TLSv1.3")
    assert (pair.watch.server_name, pair.watch.alpn) == (HOST, ("http/1.1", "h2"))
    assert pair.client_sends(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == (
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert pair.client_sends(b"PING me") == b"PING me"
    assert pair.watch.records == 2
    assert pair.watch.sent > len(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" b"PING me")
    assert pair.watch.problem is None
    assert "sent" in pair.watch.describe()
    assert "2 record(s)" in pair.watch.describe()


@pytest.mark.parametrize("version", ["tls12", "tls13"])
def test_a_close_notify_after_the_handshake_is_not_data(version: str) -> None:
    """Twin: a client that completes the handshake and closes with a close_notify alert sent
    no application data."""
    pair = make_pair(version)
    pair.handshake()
    with pytest.raises(ssl.SSLWantReadError):
        pair.client.unwrap()  # sends close_notify, then waits for the server's
    pair.pump()
    assert pair.watch.records == 0
    assert pair.watch.describe().endswith("the handshake completed, then the program sent no "
                                          "application data")


class _Seen(RecordWatch):
    """A watch that also keeps what the server sent (to check the test's premise)."""

    def __init__(self) -> None:
        super().__init__()
        self.server_bytes = bytearray()

    def from_server(self, data: bytes) -> bytes:
        self.server_bytes += data
        return super().from_server(data)


def test_hello_retry_request_is_followed() -> None:
    """TLS 1.3 with a HelloRetryRequest (the server wants a group the client did not send a
    key share for): the second ClientHello and the real ServerHello are followed."""
    pair = make_pair("tls13", server_curve="secp384r1")
    pair.watch = seen = _Seen()
    pair.handshake()
    hrr = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
    assert hrr in seen.server_bytes, "the premise: the server sent a HelloRetryRequest"
    assert pair.watch.version == "TLSv1.3"
    assert pair.watch.records == 0
    assert pair.client_sends(b"after a retry") == b"after a retry"
    assert pair.watch.records == 1


@pytest.mark.parametrize("version", ["tls12", "tls13"])
def test_what_the_server_says_first_waits_for_the_client(version: str) -> None:
    """A server that speaks first after the handshake (an SMTP greeting) is held until the
    client sends a record, as the forging proxy would: the client cannot read it before."""
    pair = make_pair(version)
    pair.handshake()
    pair.server.write(b"220 greetings\r\n")
    pair.pump()
    with pytest.raises(ssl.SSLWantReadError):
        pair.client.read(100)
    assert pair.watch.held
    assert pair.client_sends(b"EHLO client\r\n") == b"EHLO client\r\n"
    assert pair.client.read(100) == b"220 greetings\r\n"
    assert not pair.watch.held
    pair.server.write(b"250 ok\r\n")
    pair.pump()
    assert pair.client.read(100) == b"250 ok\r\n"


def test_the_sni_is_what_the_client_sent() -> None:
    """The server name is the client's own SNI, whatever host the proxy was asked for."""
    pair = make_pair("tls13", server_name="other.records.test")
    pair.handshake()
    assert pair.watch.server_name == "other.records.test"


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # plaintext instead of TLS
        b"\x17\x03\x03\x00\x20" + b"\x00" * 32,  # application data with no handshake
        b"\x16\x03\x01\x00\x08\x01\x00\x00\x04\x03\x03\x00\x00",  # a ClientHello cut short
        b"\x16\x03\x01\x00\x04\x01\xff\xff\xff",  # a ClientHello that claims 16 MiB
        b"\x16\x03\x01\x00\x04\x02\x00\x00\x00",  # a ServerHello from the client
        b"\x16\x03\x01\xff\xff",  # a record longer than TLS allows
    ],
)
def test_bytes_that_are_not_a_client_handshake_count_nothing(garbage: bytes) -> None:
    """Whatever a hostile program sends instead of a handshake is never counted as data, never
    raises, and the watch says it could not follow the connection."""
    watch = RecordWatch()
    watch.from_client(garbage)
    watch.from_client(b"\x17\x03\x03\x00\x40" + b"\x01" * 64)
    assert (watch.records, watch.sent) == (0, 0)
    assert not watch.handshake_done
    assert watch.problem is not None or not watch.hello


def test_a_server_that_is_not_tls_is_relayed_and_nothing_counted() -> None:
    """Twin on the server's side: bytes that are not TLS are passed on as they are, unheld."""
    pair = make_pair("tls13")
    with pytest.raises(ssl.SSLWantReadError):
        pair.client.do_handshake()
    hello = pair.bios[1].read()
    pair.watch.from_client(hello)
    assert pair.watch.hello
    assert pair.watch.from_server(b"HTTP/1.1 400 Bad Request\r\n\r\n") == (
        b"HTTP/1.1 400 Bad Request\r\n\r\n")
    assert pair.watch.problem is not None
    assert pair.watch.from_client(b"\x17\x03\x03\x00\x40" + b"\x01" * 64) == b""
    assert pair.watch.records == 0
