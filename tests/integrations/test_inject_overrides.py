"""Under ``tlspin.inject``: what urllib3 and httpx let decide a connection besides its TLS name.

The explicit helpers refuse these options; a program pinned by ``inject`` (or ``tlspin run``)
uses the libraries as they are, so the process-wide hooks must hold the same line:

* urllib3 ``assert_hostname`` connects by IP and matches the certificate against a name: that
  name's pins apply;
* httpx ``sni_hostname`` opens a connection under another name, which httpcore pools for the URL
  host: refused for a pinned URL host;
* urllib3's HTTPS forwarding proxy mode hands the whole request to the proxy: refused for a
  pinned origin.

Each attack runs against a forging server or proxy on loopback that counts every byte.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator

import httpx
import pytest
import urllib3

import tlspin
from tlspin import PinPolicy
from tlspin.integrations import find_pin_error
from tlspin.testing.proxies import ConnectProxy

from .conftest import BODY, Origins, Pki, Route

ROUTES = ("direct", "https-proxy")


@pytest.fixture(autouse=True)
def _extracted() -> Iterator[None]:
    yield
    tlspin.extract()


def _refused(exc: BaseException, reason: str | None = None) -> tlspin.PinVerificationError:
    error = find_pin_error(exc)
    assert error is not None, repr(exc)
    if reason is not None:
        assert error.reason == reason
    return error


# -- urllib3 assert_hostname ---------------------------------------------------------------------


def _assert_hostname_get(pki: Pki, route: Route, port: int) -> bytes:
    """GET https://[::1]:port/ as requests_toolbelt's HostHeaderSSLAdapter does: by address,
    with the certificate matched against the name 127.0.0.1."""
    options: dict[str, object] = {
        "ca_certs": pki.cafile, "assert_hostname": "127.0.0.1", "retries": False,
    }  # fmt: skip
    manager: urllib3.PoolManager
    if route.proxy is None:
        manager = urllib3.PoolManager(**options)  # type: ignore[arg-type]
    else:
        manager = urllib3.ProxyManager(
            route.proxy_url, proxy_ssl_context=route.proxy_ctx, **options  # type: ignore[arg-type]
        )
    with manager:
        response = manager.request(
            "POST", f"https://[::1]:{port}/login", body=b"password=hunter2",
            headers={"Host": "127.0.0.1"},
        )  # fmt: skip
        return response.data


@pytest.mark.parametrize("route", ROUTES)
def test_urllib3_assert_hostname_gets_the_pins_of_the_name_it_matches(
    pki: Pki, origins: Origins, proxies: dict[str, Route], route: str
) -> None:
    """A forged certificate for the pinned name 127.0.0.1, reached by address ::1 (which no rule
    covers) with assert_hostname="127.0.0.1", is refused; the server gets 0 bytes."""
    forged = origins.mitm["::1"]
    before = len(forged.received)
    tlspin.inject(PinPolicy.from_mapping({"127.0.0.1": [pki.leaf.pin, pki.backup_pin]}))
    with pytest.raises(urllib3.exceptions.HTTPError) as excinfo:
        _assert_hostname_get(pki, proxies[route], forged.port)
    _refused(excinfo.value)
    forged.wait_idle()
    assert len(forged.received) == before


@pytest.mark.parametrize("route", ROUTES)
def test_urllib3_assert_hostname_reaches_the_genuine_server(
    pki: Pki, origins: Origins, proxies: dict[str, Route], route: str
) -> None:
    """Twin: the genuine certificate passes the pins of the name urllib3 matches."""
    tlspin.inject(PinPolicy.from_mapping({"127.0.0.1": [pki.leaf.pin, pki.backup_pin]}))
    assert _assert_hostname_get(pki, proxies[route], origins.good["::1"].port) == BODY


# -- httpx / httpcore sni_hostname ---------------------------------------------------------------


def _httpx(ctx: ssl.SSLContext, urls: list[tuple[str, str | None]], asynchronous: bool) -> bytes:
    """GET each (url, sni_hostname) in turn on one client; return the last body."""

    def extensions(sni: str | None) -> dict[str, str]:
        return {} if sni is None else {"sni_hostname": sni}

    if not asynchronous:
        with httpx.Client(verify=ctx, trust_env=False) as client:
            return [client.get(url, extensions=extensions(sni)).content for url, sni in urls][-1]

    async def run() -> bytes:
        async with httpx.AsyncClient(verify=ctx, trust_env=False) as client:
            bodies = [(await client.get(u, extensions=extensions(s))).content for u, s in urls]
            return bodies[-1]

    return asyncio.run(run())


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_httpx_sni_hostname_cannot_open_a_pooled_connection_for_a_pinned_host(
    pki: Pki, origins: Origins, good_policy: PinPolicy, asynchronous: bool
) -> None:
    """A request to the pinned 127.0.0.1 with sni_hostname="localhost" (unpinned; the forged
    leaf names it) is refused before connecting, so no unchecked connection is pooled for the
    plain POST that follows; the forging server gets no connection and 0 bytes."""
    forged = origins.mitm["127.0.0.1"]
    connections, received = forged.connections, len(forged.received)
    tlspin.inject(good_policy)
    ctx = ssl.create_default_context(cafile=pki.cafile)
    url = f"https://127.0.0.1:{forged.port}/"
    with pytest.raises(httpx.ConnectError) as excinfo:
        _httpx(ctx, [(url, "localhost"), (url, None)], asynchronous)
    _refused(excinfo.value, "server-name-mismatch")
    forged.wait_idle()
    assert (forged.connections, len(forged.received)) == (connections, received)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_httpx_sni_hostname_still_works_where_no_pin_is_skipped(
    pki: Pki, origins: Origins, good_policy: PinPolicy, asynchronous: bool
) -> None:
    """Twin: the URL host as sni_hostname, or an unpinned URL host reached under a pinned
    server name (whose pins are then checked), work as before."""
    good = origins.good["127.0.0.1"]
    tlspin.inject(good_policy)
    ctx = ssl.create_default_context(cafile=pki.cafile)
    urls: list[tuple[str, str | None]] = [
        (f"https://127.0.0.1:{good.port}/", "127.0.0.1"),
        (f"https://localhost:{good.port}/", "127.0.0.1"),
    ]
    assert _httpx(ctx, urls, asynchronous) == BODY


# -- urllib3 forwarding proxies ------------------------------------------------------------------


def _forwarding_get(
    pki: Pki, route: Route, url: str, *, forwarding: bool
) -> urllib3.BaseHTTPResponse:
    manager = urllib3.ProxyManager(
        route.proxy_url, use_forwarding_for_https=forwarding, ca_certs=pki.cafile,
        proxy_ssl_context=route.proxy_ctx, retries=False,
    )  # fmt: skip
    with manager:
        return manager.request("GET", url, headers={"Authorization": "Bearer s3cr3t"})


def test_urllib3_forwarding_mode_is_refused_for_a_pinned_origin(
    pki: Pki, origins: Origins, proxies: dict[str, Route], good_policy: PinPolicy
) -> None:
    """use_forwarding_for_https=True would send the request for the pinned origin, with its
    Authorization header, to the proxy in clear: refused; the proxy sees nothing."""
    route = proxies["https-proxy"]
    assert isinstance(route.proxy, ConnectProxy)
    forwarded = list(route.proxy.forwarded)
    tlspin.inject(good_policy)
    with pytest.raises(urllib3.exceptions.HTTPError) as excinfo:
        _forwarding_get(pki, route, f"https://127.0.0.1:{origins.good['127.0.0.1'].port}/",
                        forwarding=True)  # fmt: skip
    _refused(excinfo.value, "proxy-forwarding")
    assert route.proxy.forwarded == forwarded


def test_urllib3_tunnel_mode_and_unpinned_forwarding_still_work(
    pki: Pki, origins: Origins, proxies: dict[str, Route], good_policy: PinPolicy
) -> None:
    """Twin: the default CONNECT tunnel reaches the pinned origin; forwarding mode for a host no
    rule covers still reaches the proxy (which answers forwarded requests itself)."""
    route = proxies["https-proxy"]
    assert isinstance(route.proxy, ConnectProxy)
    tlspin.inject(good_policy)
    port = origins.good["127.0.0.1"].port
    tunnel = _forwarding_get(pki, route, f"https://127.0.0.1:{port}/", forwarding=False)
    assert tunnel.data == BODY
    forwarded = _forwarding_get(pki, route, f"https://localhost:{port}/", forwarding=True)
    assert forwarded.status == 502
    assert route.proxy.forwarded[-1] == f"GET https://localhost:{port}/ HTTP/1.1"
