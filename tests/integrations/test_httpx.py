"""httpx: refused options, pinned transports, proxy contexts, truststore, error mapping."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator

import httpx
import pytest
import truststore

from tlspin import (
    PinConfigurationError,
    PinMismatchError,
    PinningUnavailableError,
    PinPolicy,
    pin_context,
)
from tlspin.integrations import find_pin_error
from tlspin.integrations import httpx as tp_httpx
from tlspin.testing.pki import client_trust_context
from tlspin.testing.proxies import ConnectProxy

from .conftest import BODY, Origins, Pki, Route
from .helpers import assert_refused, pin_errors, url_for

HOST = "127.0.0.1"


def test_verify_argument_is_refused(pki: Pki, good_policy: PinPolicy) -> None:
    """verify= would replace the pinned context, so the helpers refuse it."""
    with pytest.raises(PinConfigurationError, match="verify="):
        tp_httpx.client(good_policy, cafile=pki.cafile, verify=False)
    with pytest.raises(PinConfigurationError, match="verify="):
        tp_httpx.async_client(good_policy, verify=True)
    with pytest.raises(PinConfigurationError, match="verify="):
        tp_httpx.transport(good_policy, verify=False)


def test_foreign_transports_are_refused(pki: Pki, good_policy: PinPolicy) -> None:
    """A transport or mount not built by tlspin would bypass the pins and is refused."""
    with pytest.raises(PinConfigurationError, match="custom transport"):
        tp_httpx.client(good_policy, cafile=pki.cafile, transport=httpx.HTTPTransport())
    with pytest.raises(PinConfigurationError, match="custom transport"):
        tp_httpx.client(good_policy, cafile=pki.cafile, mounts={"https://": httpx.HTTPTransport()})


@pytest.mark.parametrize("good", [True, False], ids=["right-pin", "wrong-pin"])
def test_pinned_transport_is_accepted_and_checks_pins(
    pki: Pki, origins: Origins, good_policy: PinPolicy, bad_policy: PinPolicy, good: bool
) -> None:
    """A transport from tlspin.integrations.httpx.transport() is accepted and pinned."""
    server = origins.good[HOST] if good else origins.victim[HOST]
    policy = good_policy if good else bad_policy
    transport = tp_httpx.transport(policy, cafile=pki.cafile, retries=2)
    with tp_httpx.client(good_policy, cafile=pki.cafile, mounts={"https://": transport}) as c:
        if good:
            assert c.get(url_for(HOST, server.port)).content == BODY
            return
        with pytest.raises(httpx.ConnectError) as excinfo:
            c.get(url_for(HOST, server.port))
    assert_refused(excinfo.value, server)
    assert find_pin_error(excinfo.value) is pin_errors(excinfo.value)[0]


def test_proxy_helper_with_cafile(
    pki: Pki, origins: Origins, good_policy: PinPolicy, proxies: dict[str, Route]
) -> None:
    """proxy(url, cafile=) trusts that file for the HTTPS proxy's own TLS leg."""
    route = proxies["https-proxy"]
    proxy = tp_httpx.proxy(route.proxy_url, cafile=pki.cafile)
    with tp_httpx.client(good_policy, cafile=pki.cafile, proxy=proxy, trust_env=False) as c:
        assert c.get(url_for("::1", origins.good["::1"].port)).content == BODY
    with pytest.raises(PinConfigurationError, match="not both"):
        tp_httpx.proxy(route.proxy_url, cafile=pki.cafile, ssl_context=ssl.create_default_context())


def test_proxy_without_context_falls_back_to_certifi(
    pki: Pki, origins: Origins, good_policy: PinPolicy, proxies: dict[str, Route]
) -> None:
    """A plain https:// proxy URL makes httpx trust certifi for the proxy: the test CA fails."""
    route = proxies["https-proxy"]
    with (
        tp_httpx.client(
            good_policy, cafile=pki.cafile, proxy=route.proxy_url, trust_env=False
        ) as c,
        pytest.raises(httpx.ConnectError) as excinfo,
    ):
        c.get(url_for(HOST, origins.good[HOST].port))
    assert not pin_errors(excinfo.value)


@pytest.mark.parametrize("good", [True, False], ids=["right-pin", "wrong-pin"])
def test_truststore_context_through_httpx(
    pki: Pki, origins: Origins, good_policy: PinPolicy, bad_policy: PinPolicy, good: bool
) -> None:
    """A pinned truststore.SSLContext checks pins for httpx requests too."""
    ctx = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.cafile)
    pin_context(ctx, good_policy if good else bad_policy)
    server = origins.good[HOST] if good else origins.victim[HOST]
    with tp_httpx.client(ssl_context=ctx, trust_env=False) as c:
        if good:
            assert c.get(url_for(HOST, server.port)).content == BODY
            return
        with pytest.raises(httpx.ConnectError) as excinfo:
            c.get(url_for(HOST, server.port))
    assert_refused(excinfo.value, server)


def test_h2_refusal_happens_before_the_preface(
    pki: Pki, origins: Origins, bad_policy: PinPolicy
) -> None:
    """With http2=True a refused pin stops the connection before the HTTP/2 preface."""
    mitm = origins.mitm["::1"]
    with (
        tp_httpx.client(bad_policy, cafile=pki.cafile, http2=True) as c,
        pytest.raises(httpx.ConnectError) as excinfo,
    ):
        c.get(url_for("::1", mitm.port))
    assert_refused(excinfo.value, mitm)


SNI_CASES = [
    pytest.param(is_async, http2, route, id=f"{'async' if is_async else 'sync'}-{v}-{route}")
    for is_async in (False, True)
    for http2, v in ((False, "h1"), (True, "h2"))
    for route in ("direct", "connect", "https-proxy")
]


async def _two_requests(
    client: httpx.Client | httpx.AsyncClient, url: str, sni: str
) -> list[BaseException | httpx.Response]:
    """Send one request with *sni* as its TLS server name, then one without; keep both outcomes."""
    outcomes: list[BaseException | httpx.Response] = []
    for extensions in ({"sni_hostname": sni}, {}):
        try:
            if isinstance(client, httpx.AsyncClient):
                outcomes.append(await client.get(url, extensions=extensions))
            else:
                outcomes.append(client.get(url, extensions=extensions))
        except httpx.HTTPError as exc:
            outcomes.append(exc)
    return outcomes


def _pinned_client(
    policy: PinPolicy, pki: Pki, route: Route, *, is_async: bool, http2: bool
) -> httpx.Client | httpx.AsyncClient:
    proxy = None
    if route.proxy is not None:
        proxy = tp_httpx.proxy(route.proxy_url, ssl_context=route.proxy_ctx)
    make = tp_httpx.async_client if is_async else tp_httpx.client
    return make(policy, cafile=pki.cafile, http2=http2, proxy=proxy, trust_env=False)


def _run(client: httpx.Client | httpx.AsyncClient, url: str, sni: str) -> list[object]:
    async def run() -> list[object]:
        if isinstance(client, httpx.AsyncClient):
            async with client:
                return list(await _two_requests(client, url, sni))
        with client:
            return list(await _two_requests(client, url, sni))

    return asyncio.run(run())


@pytest.mark.parametrize(("is_async", "http2", "route"), SNI_CASES)
def test_sni_override_cannot_smuggle_a_connection_to_a_pinned_origin(
    pki: Pki,
    origins: Origins,
    proxies: dict[str, Route],
    good_policy: PinPolicy,
    is_async: bool,
    http2: bool,
    route: str,
) -> None:
    """A connection opened under an unpinned SNI is never used for the pinned URL host.

    The attack: a request with extensions={"sni_hostname": "localhost"} (unpinned) to the
    pinned https://127.0.0.1 passes the CA check with a forged leaf; httpcore pools the
    connection by URL origin, so the next plain request to 127.0.0.1 reused it unchecked.
    """
    mitm = origins.mitm[HOST]
    client = _pinned_client(good_policy, pki, proxies[route], is_async=is_async, http2=http2)
    first, second = _run(client, url_for(HOST, mitm.port), "localhost")
    mitm.wait_idle()
    assert mitm.received == b""
    assert isinstance(first, httpx.ConnectError), first
    (error,) = pin_errors(first)
    assert isinstance(error, PinningUnavailableError)
    assert error.reason == "server-name-mismatch"
    assert isinstance(second, httpx.ConnectError), second  # a fresh, checked connection
    assert isinstance(pin_errors(second)[0], PinMismatchError)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_transport_helper_refuses_another_sni_on_its_own(
    pki: Pki, origins: Origins, good_policy: PinPolicy, is_async: bool
) -> None:
    """A transport() mounted in a plain httpx client refuses the SNI mix-up by itself."""
    victim = origins.victim[HOST]
    connections = victim.connections
    url, extensions = url_for(HOST, victim.port), {"sni_hostname": "localhost"}

    async def run() -> None:
        if is_async:
            async with httpx.AsyncClient(
                transport=tp_httpx.async_transport(good_policy, cafile=pki.cafile)
            ) as c:
                await c.get(url, extensions=extensions)
        else:
            with httpx.Client(transport=tp_httpx.transport(good_policy, cafile=pki.cafile)) as c:
                c.get(url, extensions=extensions)

    with pytest.raises(httpx.ConnectError, match="sni_hostname='localhost'") as excinfo:
        asyncio.run(run())
    assert pin_errors(excinfo.value)[0].reason == "server-name-mismatch"
    assert victim.connections == connections


@pytest.fixture(scope="module")
def proxy_named_like_the_origin(pki: Pki) -> Iterator[Route]:
    """An HTTPS proxy whose certificate also names 127.0.0.1.

    httpcore sends sni_hostname to an HTTPS proxy's TLS leg (the origin's leg inside the tunnel
    uses the URL host), so the proxy must answer to that name too.
    """
    proxy = ConnectProxy(tls_leaf=pki.proxy_ca.issue("localhost", HOST)).start()
    try:
        yield Route("https-proxy", proxy, client_trust_context(pki.proxy_ca))
    finally:
        proxy.stop()


@pytest.mark.parametrize(("is_async", "http2", "route"), SNI_CASES)
def test_sni_override_naming_the_url_host_still_works(
    pki: Pki,
    origins: Origins,
    proxies: dict[str, Route],
    proxy_named_like_the_origin: Route,
    good_policy: PinPolicy,
    is_async: bool,
    http2: bool,
    route: str,
) -> None:
    """Twin: an SNI naming the URL host passes; elsewhere, an unpinned URL host may take any."""
    good = origins.good[HOST]
    via = proxy_named_like_the_origin if route == "https-proxy" else proxies[route]
    client = _pinned_client(good_policy, pki, via, is_async=is_async, http2=http2)
    for response in _run(client, url_for(HOST, good.port), HOST):
        assert isinstance(response, httpx.Response), response
        assert response.content == BODY
    if route != "direct":
        return  # through a proxy the SNI does not reach the origin at all
    # An unpinned URL host reached under a pinned name: that name's pins are checked.
    client = _pinned_client(good_policy, pki, via, is_async=is_async, http2=http2)
    for response in _run(client, f"https://localhost:{good.port}/", HOST):
        assert isinstance(response, httpx.Response), response
        assert response.content == BODY
