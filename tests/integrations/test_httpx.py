"""httpx: refused options, pinned transports, proxy contexts, truststore, error mapping."""

from __future__ import annotations

import ssl

import httpx
import pytest
import truststore

from tlspin import PinConfigurationError, PinPolicy, pin_context
from tlspin.integrations import find_pin_error
from tlspin.integrations import httpx as tp_httpx

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
