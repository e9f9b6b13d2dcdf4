"""Every client × every route × every pin case, over real TLS on 127.0.0.1 and ::1.

Passing cases must return the origin's body. Refused cases must raise an error with a
:class:`tlspin.PinVerificationError` somewhere in its chain, and the refused origin must have
received zero application bytes.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

import tlspin
from tlspin.testing.proxies import MitmProxy

from ._drivers import DRIVERS, UNSUPPORTED
from .conftest import BODY, FAMILIES, Origins, Pki, Route
from .helpers import assert_refused, pin_errors

# case -> (origin role, pins for the origin hosts)
CASES: dict[str, tuple[str, Callable[[Pki], list[str]]]] = {
    "leaf-pin": ("good", lambda p: [p.leaf.pin, p.unrelated_pins[0]]),
    "intermediate-pin": ("good", lambda p: [p.unrelated_pins[0], p.intermediate.pin]),
    "root-pin-not-served": ("good", lambda p: [p.root.pin, p.unrelated_pins[1]]),
    "backup-pin-after-rotation": ("rotated", lambda p: [p.leaf.pin, p.backup_pin]),
    "wrong-pins": ("victim", lambda p: list(p.unrelated_pins)),
    "mitm-trusted-ca": ("mitm", lambda p: [p.leaf.pin, p.intermediate.pin, p.root.pin]),
    "pinned-certs-appended": ("appended", lambda p: [p.leaf.pin, p.intermediate.pin, p.root.pin]),
}
PASSING = {"leaf-pin", "intermediate-pin", "root-pin-not-served", "backup-pin-after-rotation"}
ROUTES = ("direct", "connect", "https-proxy")

PARAMS = [
    pytest.param(client, route, case, family, id=f"{client}-{route}-{case}-{family}")
    for client in DRIVERS
    for route in ROUTES
    if (client, route) not in UNSUPPORTED
    for case in CASES
    for family in FAMILIES
]


def _policy(pki: Pki, case: str) -> tlspin.PinPolicy:
    pins = CASES[case][1](pki)
    return tlspin.PinPolicy.from_mapping({"127.0.0.1": pins, "::1": pins})


@pytest.mark.parametrize(("client", "route", "case", "family"), PARAMS)
def test_client_matrix(
    client: str,
    route: str,
    case: str,
    family: str,
    pki: Pki,
    origins: Origins,
    proxies: dict[str, Route],
) -> None:
    """A pinned request passes on a pinned key of the verified chain and is refused otherwise."""
    server = getattr(origins, CASES[case][0])[family]
    ctx = tlspin.create_context(_policy(pki, case), cafile=pki.cafile)
    driver, via = DRIVERS[client], proxies[route]
    tunnels = len(via.proxy.connects) if via.proxy is not None else 0
    if case in PASSING:
        before = len(server.requests)
        assert driver(ctx, family, server.port, via) == BODY
        assert len(server.requests) == before + 1
    else:
        with pytest.raises(Exception) as excinfo:
            driver(ctx, family, server.port, via)
        assert_refused(excinfo.value, server)
    if via.proxy is not None:
        # The request really went through the tunnel to this origin (http.client on 3.11
        # writes "CONNECT ::1:port" without brackets).
        targets = [t.rpartition(":") for t in via.proxy.connects[tunnels:]]
        assert [(h.strip("[]"), int(p)) for h, _, p in targets] == [(family, server.port)]


def test_refusal_servers_never_received_a_byte(origins: Origins) -> None:
    """After the whole matrix, no refused origin has seen a single application byte."""
    for server in origins.refusal_servers():
        server.wait_idle()
        assert server.received == b""
        assert server.requests == []


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "control-unpinned"])
# The intercepting proxy speaks HTTP/1.1 only, so the HTTP/2 driver cannot run through it.
@pytest.mark.parametrize("client", [c for c in DRIVERS if c != "httpx-h2"])
def test_intercepting_proxy(
    client: str,
    pinned: bool,
    pki: Pki,
    origins: Origins,
    intercepting_proxy: Route,
    good_policy: tlspin.PinPolicy,
) -> None:
    """An intercepting proxy with a trusted CA reads requests of unpinned clients only."""
    proxy = intercepting_proxy.proxy
    assert isinstance(proxy, MitmProxy)
    server = origins.good["127.0.0.1"]
    other = tlspin.PinPolicy.from_mapping({"other.test": [pki.leaf.pin, pki.backup_pin]})
    ctx = tlspin.create_context(good_policy if pinned else other, cafile=pki.cafile)
    proxy.reset()
    if not pinned:
        # Control: the CA-trusting client is intercepted, and the request still arrives.
        assert DRIVERS[client](ctx, "127.0.0.1", server.port, intercepting_proxy) == BODY
        assert [line for _, line in proxy.intercepted] == ["GET / HTTP/1.1"]
        return
    with pytest.raises(Exception) as excinfo:
        DRIVERS[client](ctx, "127.0.0.1", server.port, intercepting_proxy)
    assert pin_errors(excinfo.value)
    proxy.wait_idle()
    assert proxy.intercepted == []
    assert proxy.connects == [f"127.0.0.1:{server.port}"]
