"""An IPv6 zone ID in the host name does not take the address out from under its pins.

The stdlib hands ``::1%1`` to OpenSSL as the server name, which checks it as a DNS name: a
certificate naming ``::1%1`` passes the CA check. Pins for ``::1`` must apply all the same.
"""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tlspin import PinMismatchError, PinPolicy, create_context
from tlspin.testing.pki import CA, Leaf, generate_key
from tlspin.testing.servers import TLSServer

from ._drivers import DRIVERS
from .conftest import BODY, Pki, Route
from .helpers import pin_errors

LOOPBACK_INDEX = socket.if_nametoindex("lo")
# The zone as a socket takes it, and as RFC 6874 URLs spell it ("%25" is an escaped "%").
SPELLINGS = (f"::1%{LOOPBACK_INDEX}", f"::1%25{LOOPBACK_INDEX}")
# urllib3 drops the zone itself (it verifies ::1), and requests refuses such URLs.
CLIENTS = ("http.client", "urllib", "asyncio", "httpx", "httpx-async", "aiohttp")


def _leaf_for_names(issuer: CA, names: tuple[str, ...]) -> Leaf:
    """A server leaf whose SAN lists *names* as DNS names, as OpenSSL checks a zoned name."""
    key = generate_key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        # Python 3.13's default context verifies with X509_STRICT, which wants both.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            False,
        )
        .sign(issuer.key, hashes.SHA256())
    )
    return Leaf(cert, key, issuer.chain)


@pytest.fixture(scope="module")
def zoned(pki: Pki) -> Iterator[dict[str, TLSServer]]:
    """Servers on ::1 whose leaves name the zoned spellings: forged, and the pinned key's."""
    forged = _leaf_for_names(pki.attacker, SPELLINGS)
    legit = _leaf_for_names(pki.intermediate, SPELLINGS)
    servers = {
        "forged": TLSServer(forged, host="::1", response_body=BODY).start(),
        "legit": TLSServer(legit, host="::1", response_body=BODY).start(),
    }
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.mark.parametrize("spelling", SPELLINGS, ids=["zone", "zone-pct25"])
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("forged", [True, False], ids=["forged", "pinned-key"])
def test_zone_id_does_not_escape_the_address_pins(
    pki: Pki, zoned: dict[str, TLSServer], client: str, spelling: str, forged: bool
) -> None:
    """A forged leaf for '::1%1' is refused by ::1's pins; a leaf on the pinned key passes."""
    server = zoned["forged" if forged else "legit"]
    pins = [pki.intermediate.pin, pki.backup_pin]
    ctx = create_context(PinPolicy.from_mapping({"::1": pins}), cafile=pki.cafile)
    before = len(server.received)
    if not forged:
        assert DRIVERS[client](ctx, spelling, server.port, Route("direct")) == BODY
        return
    with pytest.raises(Exception) as excinfo:  # each client wraps the pin error its own way
        DRIVERS[client](ctx, spelling, server.port, Route("direct"))
    errors = pin_errors(excinfo.value)
    assert errors, excinfo.value
    assert isinstance(errors[0], PinMismatchError)
    assert errors[0].hostname == "::1"
    server.wait_idle()
    assert server.received[before:] == b""
