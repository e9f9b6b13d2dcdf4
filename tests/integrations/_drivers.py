"""One GET per client library through tlspin's integrations: direct or through a proxy.

Every driver takes a pinned context, the origin's IP and port and a route, performs one
``GET /`` and returns the response body; it raises whatever the library raises.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from collections.abc import Callable

import aiohttp
import httpx

from tlspin.integrations import aiohttp as tp_aiohttp
from tlspin.integrations import httpx as tp_httpx
from tlspin.integrations import requests as tp_requests
from tlspin.integrations import stdlib as tp_stdlib
from tlspin.integrations import urllib3 as tp_urllib3

from .conftest import Route
from .helpers import url_for

TIMEOUT = 10.0
Driver = Callable[[ssl.SSLContext, str, int, Route], bytes]


def http_client(ctx: ssl.SSLContext, host: str, port: int, route: Route) -> bytes:
    """http.client.HTTPSConnection (CONNECT via set_tunnel)."""
    tunnel = ("localhost", route.proxy.port) if route.proxy is not None else None
    conn = tp_stdlib.https_connection(
        host, port, ssl_context=ctx, timeout=TIMEOUT, tunnel_via=tunnel
    )
    try:
        conn.request("GET", "/")
        return conn.getresponse().read()
    finally:
        conn.close()


def urllib_request(ctx: ssl.SSLContext, host: str, port: int, route: Route) -> bytes:
    """urllib.request opener (CONNECT via ProxyHandler)."""
    proxies = {"https": route.proxy_url} if route.proxy is not None else {}
    opener = tp_stdlib.build_opener(None, urllib.request.ProxyHandler(proxies), ssl_context=ctx)
    with opener.open(url_for(host, port), timeout=TIMEOUT) as response:
        body: bytes = response.read()
        return body


async def _asyncio(ctx: ssl.SSLContext, host: str, port: int, route: Route) -> bytes:
    if route.proxy is None:
        reader, writer = await tp_stdlib.open_connection(host, port, ssl_context=ctx)
    else:
        reader, writer = await tp_stdlib.open_tunnel(
            "localhost", route.proxy.port, host, port, ssl_context=ctx, proxy_ssl=route.proxy_ctx
        )
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()
    return data.partition(b"\r\n\r\n")[2]


def asyncio_streams(ctx: ssl.SSLContext, host: str, port: int, route: Route) -> bytes:
    """asyncio open_connection, or a manual CONNECT + start_tls (TLS-in-TLS for HTTPS proxies)."""
    return asyncio.run(_asyncio(ctx, host, port, route))


def urllib3_pool(ctx: ssl.SSLContext, host: str, port: int, route: Route) -> bytes:
    """urllib3 PoolManager / ProxyManager."""
    if route.proxy is None:
        manager = tp_urllib3.pool_manager(ssl_context=ctx)
    else:
        manager = tp_urllib3.proxy_manager(
            route.proxy_url, ssl_context=ctx, proxy_ssl_context=route.proxy_ctx
        )
    try:
        return manager.request("GET", url_for(host, port), timeout=TIMEOUT).data
    finally:
        manager.clear()


def requests_session(ctx: ssl.SSLContext, host: str, port: int, route: Route) -> bytes:
    """requests Session with the PinningAdapter."""
    session = tp_requests.session(ssl_context=ctx, proxy_ssl_context=route.proxy_ctx)
    session.trust_env = False
    proxies = {"https": route.proxy_url} if route.proxy is not None else None
    with session:
        return session.get(url_for(host, port), proxies=proxies, timeout=TIMEOUT).content


def _httpx_proxy(route: Route) -> httpx.Proxy | None:
    if route.proxy is None:
        return None
    return tp_httpx.proxy(route.proxy_url, ssl_context=route.proxy_ctx)


def _httpx(ctx: ssl.SSLContext, host: str, port: int, route: Route, *, http2: bool) -> bytes:
    with tp_httpx.client(
        ssl_context=ctx, proxy=_httpx_proxy(route), http2=http2, trust_env=False, timeout=TIMEOUT
    ) as client:
        response = client.get(url_for(host, port))
        assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        return response.content


def httpx_sync(ctx: ssl.SSLContext, host: str, port: int, route: Route) -> bytes:
    """httpx.Client over HTTP/1.1."""
    return _httpx(ctx, host, port, route, http2=False)


def httpx_h2(ctx: ssl.SSLContext, host: str, port: int, route: Route) -> bytes:
    """httpx.Client over HTTP/2."""
    return _httpx(ctx, host, port, route, http2=True)


async def _httpx_async(ctx: ssl.SSLContext, host: str, port: int, route: Route) -> bytes:
    async with tp_httpx.async_client(
        ssl_context=ctx, proxy=_httpx_proxy(route), trust_env=False, timeout=TIMEOUT
    ) as client:
        response = await client.get(url_for(host, port))
        return response.content


def httpx_async(ctx: ssl.SSLContext, host: str, port: int, route: Route) -> bytes:
    """httpx.AsyncClient (anyio on asyncio, memory BIOs)."""
    return asyncio.run(_httpx_async(ctx, host, port, route))


async def _aiohttp(ctx: ssl.SSLContext, host: str, port: int, route: Route) -> bytes:
    proxy = route.proxy_url if route.proxy is not None else None
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with tp_aiohttp.session(ssl_context=ctx, trust_env=False, timeout=timeout) as session:
        async with session.get(url_for(host, port), proxy=proxy) as response:
            return await response.read()


def aiohttp_session(ctx: ssl.SSLContext, host: str, port: int, route: Route) -> bytes:
    """aiohttp ClientSession on the pinned connector."""
    return asyncio.run(_aiohttp(ctx, host, port, route))


DRIVERS: dict[str, Driver] = {
    "http.client": http_client,
    "urllib": urllib_request,
    "asyncio": asyncio_streams,
    "urllib3": urllib3_pool,
    "requests": requests_session,
    "httpx": httpx_sync,
    "httpx-async": httpx_async,
    "httpx-h2": httpx_h2,
    "aiohttp": aiohttp_session,
}

# http.client and urllib.request cannot speak TLS to a proxy.
UNSUPPORTED = {("http.client", "https-proxy"), ("urllib", "https-proxy")}
