"""A policy that pins an HTTPS proxy's host is checked on the TLS leg to that proxy too.

The helpers used to give that leg a plain context (only CA-verified), so a policy pinning
``localhost`` (the proxy here) checked nothing when ``localhost`` was the proxy.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

import httpx
import pytest

from tlspin import PinConfigurationError, PinPolicy, create_context
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

