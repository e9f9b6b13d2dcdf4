"""Standard library: host-name pins, urllib's error wrapping, asyncio start_tls and tunnels."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import pytest

from tlspin import PinMismatchError, PinPolicy
from tlspin.integrations import stdlib

from .conftest import BODY, Origins, Pki, Route
from .helpers import assert_refused, url_for

REQUEST = b"GET / HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize("good", [True, False], ids=["right-pin", "wrong-pin"])
def test_pins_by_host_name(pki: Pki, origins: Origins, good: bool) -> None:
    """A rule for 'localhost' applies to connections made to that name."""
    pins = [pki.intermediate.pin, pki.backup_pin] if good else list(pki.unrelated_pins)
    policy = PinPolicy.from_mapping({"LocalHost.": pins})
    server = origins.good["127.0.0.1"] if good else origins.victim["127.0.0.1"]
    conn = stdlib.https_connection("localhost", server.port, policy, cafile=pki.cafile, timeout=10)
    try:
        if good:
            conn.request("GET", "/")
            assert conn.getresponse().read() == BODY
            return
        with pytest.raises(PinMismatchError) as excinfo:
            conn.request("GET", "/")
    finally:
        conn.close()
    assert excinfo.value.hostname == "localhost"
    assert_refused(excinfo.value, server)


def test_urllib_wraps_the_pin_error_in_url_error(
    pki: Pki, origins: Origins, bad_policy: PinPolicy
) -> None:
    """urllib.request reports a refused pin as URLError whose reason is the pin error."""
    victim = origins.victim["::1"]
    opener = stdlib.build_opener(bad_policy, urllib.request.ProxyHandler({}), cafile=pki.cafile)
    with pytest.raises(urllib.error.URLError) as excinfo:
        opener.open(url_for("::1", victim.port), timeout=10)
    assert isinstance(excinfo.value.reason, PinMismatchError)
    assert_refused(excinfo.value, victim)


async def _manual_tunnel(
    route: Route, host: str, port: int, policy: PinPolicy, cafile: str
) -> bytes:
    assert route.proxy is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", route.proxy.port)
    try:
        writer.write(f"CONNECT [{host}]:{port} HTTP/1.1\r\n\r\n".encode())
        await writer.drain()
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        await stdlib.start_tls(writer, policy, server_hostname=host, cafile=cafile)
        writer.write(REQUEST)
        data = await reader.read()
    finally:
        writer.close()
    return data.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("good", [True, False], ids=["right-pin", "wrong-pin"])
def test_start_tls_after_manual_connect(
    pki: Pki,
    origins: Origins,
    proxies: dict[str, Route],
    good_policy: PinPolicy,
    bad_policy: PinPolicy,
    good: bool,
) -> None:
    """start_tls() after a hand-written CONNECT pins the origin inside the tunnel."""
    server = origins.good["::1"] if good else origins.victim["::1"]
    policy = good_policy if good else bad_policy
    run = _manual_tunnel(proxies["connect"], "::1", server.port, policy, pki.cafile)
    if good:
        assert asyncio.run(run) == BODY
        return
    with pytest.raises(PinMismatchError) as excinfo:
        asyncio.run(run)
    assert_refused(excinfo.value, server)


def test_open_tunnel_reports_a_refused_connect(
    pki: Pki, good_policy: PinPolicy, proxies: dict[str, Route]
) -> None:
    """A proxy that answers CONNECT with an error status raises ConnectionError naming it."""
    route = proxies["connect"]
    assert route.proxy is not None

    async def run() -> None:
        await stdlib.open_tunnel(
            "localhost", route.proxy.port, "example.invalid", 443, good_policy, cafile=pki.cafile
        )

    with pytest.raises(ConnectionError, match=r"refused CONNECT example\.invalid:443.*403"):
        asyncio.run(run())
    assert "example.invalid:443" in route.proxy.refused
