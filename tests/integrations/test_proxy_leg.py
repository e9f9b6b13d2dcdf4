"""A policy that pins an HTTPS proxy's host is checked on the TLS leg to that proxy too.

The helpers used to give that leg a plain context (only CA-verified), so a policy pinning
``localhost`` (the proxy here) checked nothing when ``localhost`` was the proxy.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl
from collections.abc import Callable

import aiohttp
import httpx
import pytest

from tlspin import PinConfigurationError, PinPolicy, PinRule, create_context
from tlspin.integrations import aiohttp as tp_aiohttp
from tlspin.integrations import httpx as tp_httpx
from tlspin.integrations import requests as tp_requests
from tlspin.integrations import stdlib as tp_stdlib
from tlspin.integrations import urllib3 as tp_urllib3

from .conftest import BODY, Origins, Pki, Route
from .helpers import pin_errors, url_for

HOST = "127.0.0.1"
Get = Callable[[PinPolicy, Pki, Route, str], bytes]


def _urllib3(policy: PinPolicy, pki: Pki, route: Route, url: str) -> bytes:
    manager = tp_urllib3.proxy_manager(
        route.proxy_url, policy, cafile=pki.cafile, proxy_cafile=pki.cafile, retries=False
    )
    return manager.request("GET", url).data


def _requests(policy: PinPolicy, pki: Pki, route: Route, url: str) -> bytes:
    with tp_requests.session(policy, cafile=pki.cafile, max_retries=0) as s:
        s.trust_env = False
        return s.get(url, proxies={"https": route.proxy_url}, timeout=10).content


def _httpx(policy: PinPolicy, pki: Pki, route: Route, url: str) -> bytes:
    proxy = tp_httpx.proxy(route.proxy_url, policy=policy, cafile=pki.cafile)
    with tp_httpx.client(policy, cafile=pki.cafile, proxy=proxy, trust_env=False) as c:
        return c.get(url).content


def _httpx_async(policy: PinPolicy, pki: Pki, route: Route, url: str) -> bytes:
    async def run() -> bytes:
        proxy = tp_httpx.proxy(route.proxy_url, policy=policy, cafile=pki.cafile)
        async with tp_httpx.async_client(
            policy, cafile=pki.cafile, proxy=proxy, trust_env=False
        ) as c:
            return (await c.get(url)).content

    return asyncio.run(run())


def _aiohttp(policy: PinPolicy, pki: Pki, route: Route, url: str) -> bytes:
    async def run() -> bytes:
        async with (
            tp_aiohttp.session(policy, cafile=pki.cafile, trust_env=False) as s,
            s.get(url, proxy=route.proxy_url) as r,
        ):
            return await r.read()

    return asyncio.run(run())


def _asyncio(policy: PinPolicy, pki: Pki, route: Route, url: str) -> bytes:
    async def run() -> bytes:
        assert route.proxy is not None
        port = int(url.rsplit(":", 1)[1].strip("/"))
        reader, writer = await tp_stdlib.open_tunnel(
            "localhost",
            route.proxy.port,
            HOST,
            port,
            policy,
            cafile=pki.cafile,
            proxy_ssl=create_context(policy, cafile=pki.cafile),
        )
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n")
            return (await reader.read()).partition(b"\r\n\r\n")[2]
        finally:
            writer.close()

    return asyncio.run(run())


CLIENTS: dict[str, Get] = {
    "urllib3": _urllib3,
    "requests": _requests,
    "httpx": _httpx,
    "httpx-async": _httpx_async,
    "aiohttp": _aiohttp,  # the connector's own pinned context verifies the proxy too
    "asyncio": _asyncio,
}


def _policy(pki: Pki, proxy_pins: list[str]) -> PinPolicy:
    origin = [pki.leaf.pin, pki.backup_pin]
    return PinPolicy.from_mapping({HOST: origin, "::1": origin, "localhost": proxy_pins})


@pytest.mark.parametrize("right", [True, False], ids=["right-proxy-pin", "wrong-proxy-pin"])
@pytest.mark.parametrize("client", list(CLIENTS))
def test_pins_for_the_proxy_host_apply_to_its_tls_leg(
    pki: Pki, origins: Origins, proxies: dict[str, Route], client: str, right: bool
) -> None:
    """The policy's pins for the HTTPS proxy's host are checked before any CONNECT is sent."""
    route = proxies["https-proxy"]
    assert route.proxy is not None
    pins = [pki.proxy_ca.pin, pki.backup_pin] if right else [pki.root.pin, pki.backup_pin]
    url = url_for(HOST, origins.good[HOST].port)
    connects = len(route.proxy.connects)
    if right:
        assert CLIENTS[client](_policy(pki, pins), pki, route, url) == BODY
        return
    with pytest.raises(Exception) as excinfo:  # each client wraps the pin error its own way
        CLIENTS[client](_policy(pki, pins), pki, route, url)
    errors = pin_errors(excinfo.value)
    assert errors, excinfo.value
    assert errors[0].hostname == "localhost"
    assert len(route.proxy.connects) == connects  # refused at the proxy's TLS, before CONNECT


@pytest.mark.parametrize("client", ["urllib3", "requests", "httpx", "asyncio"])
def test_a_proxy_context_that_skips_the_proxy_pins_is_refused(
    pki: Pki, origins: Origins, proxies: dict[str, Route], client: str
) -> None:
    """A caller's plain context for a pinned proxy host is refused; for another host it is used."""
    route = proxies["https-proxy"]
    assert route.proxy is not None
    assert route.proxy_ctx is not None
    plain: ssl.SSLContext = route.proxy_ctx
    good = origins.good[HOST]
    url = url_for(HOST, good.port)

    def attempt(policy: PinPolicy) -> bytes:
        if client == "urllib3":
            manager = tp_urllib3.proxy_manager(
                route.proxy_url, policy, cafile=pki.cafile, proxy_ssl_context=plain
            )
            return manager.request("GET", url).data
        if client == "requests":
            with tp_requests.session(policy, cafile=pki.cafile, proxy_ssl_context=plain) as s:
                s.trust_env = False
                return s.get(url, proxies={"https": route.proxy_url}, timeout=10).content
        if client == "httpx":
            proxy = httpx.Proxy(route.proxy_url, ssl_context=plain)
            with tp_httpx.client(policy, cafile=pki.cafile, proxy=proxy, trust_env=False) as c:
                return c.get(url).content

        async def tunnel() -> bytes:
            assert route.proxy is not None
            reader, writer = await tp_stdlib.open_tunnel(
                "localhost", route.proxy.port, HOST, good.port, policy,
                cafile=pki.cafile, proxy_ssl=plain,
            )  # fmt: skip
            try:
                writer.write(b"GET / HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n")
                return (await reader.read()).partition(b"\r\n\r\n")[2]
            finally:
                writer.close()

        return asyncio.run(tunnel())

    connects = len(route.proxy.connects)
    with pytest.raises(PinConfigurationError, match="pins the proxy host localhost"):
        attempt(_policy(pki, [pki.proxy_ca.pin, pki.backup_pin]))
    assert len(route.proxy.connects) == connects
    # Twin: a policy that does not pin the proxy's host takes the caller's context as it is.
    origin = [pki.leaf.pin, pki.backup_pin]
    assert attempt(PinPolicy.from_mapping({HOST: origin})) == BODY



# -- aiohttp: a per-request ssl= is used for the TLS to the proxy as well ------------------------

PROXY_AUTH = {"Proxy-Authorization": "Basic " + base64.b64encode(b"corp-user:corp-secret").decode()}


def _aiohttp_via(
    policy: PinPolicy, pki: Pki, route: Route, url: str, **kw: object
) -> bytes:
    async def run() -> bytes:
        async with (
            tp_aiohttp.session(policy, cafile=pki.cafile, trust_env=False) as s,
            s.get(url, proxy=route.proxy_url, proxy_headers=PROXY_AUTH, **kw) as r,  # type: ignore[arg-type]
        ):
            return await r.read()

    return asyncio.run(run())


@pytest.mark.parametrize("override", ["false", "fingerprint", "origin-only-context"])
def test_aiohttp_per_request_ssl_cannot_skip_a_pinned_proxys_pins(
    pki: Pki, origins: Origins, proxies: dict[str, Route], override: str
) -> None:
    """The proxy's host is pinned, and the proxy is an impostor (its key is not pinned). A
    request to an origin no rule covers, with a per-request ssl= that would not check the
    proxy's pins, is refused before the CONNECT (it carried Proxy-Authorization to the
    impostor)."""
    route = proxies["https-proxy"]
    assert route.proxy is not None
    policy = PinPolicy.from_mapping({"localhost": [pki.root.pin, pki.backup_pin]})
    value: object = {
        "false": False,
        "fingerprint": aiohttp.Fingerprint(hashlib.sha256(pki.leaf.cert_der).digest()),
        "origin-only-context": create_context(
            PinPolicy.from_mapping({HOST: [pki.leaf.pin, pki.backup_pin]}), cafile=pki.cafile
        ),
    }[override]
    connects = len(route.proxy.connects)
    url = url_for(HOST, origins.good[HOST].port)
    with pytest.raises(aiohttp.ClientConnectorCertificateError) as excinfo:
        _aiohttp_via(policy, pki, route, url, ssl=value)
    (error,) = pin_errors(excinfo.value)
    assert error.hostname == "localhost"
    assert len(route.proxy.connects) == connects


def test_aiohttp_per_request_ssl_through_a_proxy_that_is_not_pinned_still_works(
    pki: Pki, origins: Origins, proxies: dict[str, Route]
) -> None:
    """Twin: ssl=False through an HTTPS proxy no rule covers goes through as before, and the
    default ssl through the pinned, genuine proxy too."""
    route = proxies["https-proxy"]
    url = url_for(HOST, origins.good[HOST].port)
    unpinned_proxy = PinPolicy.from_mapping({"::1": [pki.leaf.pin, pki.backup_pin]})
    assert _aiohttp_via(unpinned_proxy, pki, route, url, ssl=False) == BODY
    genuine = PinPolicy.from_mapping({"localhost": [pki.proxy_ca.pin, pki.backup_pin]})
    assert _aiohttp_via(genuine, pki, route, url) == BODY


# -- a proxy context pinned to a rule that only reports is no proof ------------------------------


def test_a_report_only_proxy_context_cannot_stand_in_for_enforced_proxy_pins(
    pki: Pki, origins: Origins, proxies: dict[str, Route]
) -> None:
    """urllib3's proxy_manager with a proxy context pinned report-only for the proxy host that
    the policy enforces: refused before any CONNECT. Twin: with the policy's own pins it works."""
    route = proxies["https-proxy"]
    assert route.proxy is not None
    policy = _policy(pki, [pki.proxy_ca.pin, pki.backup_pin])
    report_only = PinPolicy([PinRule("localhost", [pki.root.pin, pki.backup_pin], mode="report")])
    weak = create_context(report_only, cafile=pki.cafile)
    url = url_for(HOST, origins.good[HOST].port)
    connects = len(route.proxy.connects)
    with pytest.raises(PinConfigurationError, match="does not enforce the pins"):
        tp_urllib3.proxy_manager(route.proxy_url, policy, cafile=pki.cafile, proxy_ssl_context=weak)
    assert len(route.proxy.connects) == connects
    strong = create_context(policy, cafile=pki.cafile)
    manager = tp_urllib3.proxy_manager(
        route.proxy_url, policy, cafile=pki.cafile, proxy_ssl_context=strong, retries=False
    )
    assert manager.request("GET", url).data == BODY
