"""aiohttp: per-request ssl= overrides on pinned hosts, refused options, error mapping."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ssl

import aiohttp
import pytest

from tlspin import (
    PinConfigurationError,
    PinMismatchError,
    PinningUnavailableError,
    PinPolicy,
    PinRule,
    create_context,
)
from tlspin.integrations import aiohttp as tp_aiohttp

from .conftest import BODY, Origins, Pki, Route
from .helpers import assert_refused, pin_errors, url_for

HOST = "127.0.0.1"


async def _get(policy: PinPolicy, cafile: str, url: str, **kw: object) -> bytes:
    async with tp_aiohttp.session(policy, cafile=cafile) as s, s.get(url, **kw) as r:  # type: ignore[arg-type]
        return await r.read()


@pytest.mark.parametrize(
    "override",
    ["false", "fingerprint", "plain-context", "empty-policy-context", "other-host-context"],
)
def test_unpinned_override_refused_for_pinned_host(
    pki: Pki, origins: Origins, good_policy: PinPolicy, override: str
) -> None:
    """ssl=False, a Fingerprint or a context that pins nothing here is refused for a pinned host."""
    victim = origins.victim[HOST]
    other = PinPolicy.from_mapping({"other.test": list(pki.unrelated_pins)})
    value: object = {
        "false": False,
        "fingerprint": aiohttp.Fingerprint(hashlib.sha256(pki.leaf.cert_der).digest()),
        "plain-context": ssl.create_default_context(cafile=pki.cafile),
        # Contexts made by tlspin, but whose policies do not pin this host: they check nothing.
        "empty-policy-context": create_context(PinPolicy(), cafile=pki.cafile),
        "other-host-context": create_context(other, cafile=pki.cafile),
    }[override]
    connections = victim.connections
    with pytest.raises(aiohttp.ClientConnectorCertificateError) as excinfo:
        asyncio.run(_get(good_policy, pki.cafile, url_for(HOST, victim.port), ssl=value))
    (error,) = pin_errors(excinfo.value)
    assert isinstance(error, PinningUnavailableError)
    assert victim.connections == connections
    assert victim.received == b""


def test_ssl_false_allowed_for_unpinned_host(
    pki: Pki, origins: Origins, good_policy: PinPolicy
) -> None:
    """ssl=False keeps working for a host the policy does not pin."""
    good = origins.good[HOST]
    body = asyncio.run(_get(good_policy, pki.cafile, f"https://localhost:{good.port}/", ssl=False))
    assert body == BODY


@pytest.mark.parametrize("good", [True, False], ids=["right-pin", "wrong-pin"])
def test_pinned_per_request_context_is_used(
    pki: Pki, origins: Origins, good_policy: PinPolicy, bad_policy: PinPolicy, good: bool
) -> None:
    """A per-request context made by tlspin is accepted, and its own pins apply."""
    server = origins.good[HOST] if good else origins.victim[HOST]
    ctx = create_context(good_policy if good else bad_policy, cafile=pki.cafile)
    url = url_for(HOST, server.port)
    if good:
        assert asyncio.run(_get(bad_policy, pki.cafile, url, ssl=ctx)) == BODY
        return
    with pytest.raises(aiohttp.ClientConnectorCertificateError) as excinfo:
        asyncio.run(_get(good_policy, pki.cafile, url, ssl=ctx))
    assert_refused(excinfo.value, server)


def test_ssl_options_are_refused(good_policy: PinPolicy) -> None:
    """connector(ssl=...) and session(connector=...) would replace the pinned context."""

    async def build() -> None:
        for key in ("ssl", "ssl_context", "verify_ssl", "fingerprint"):
            with pytest.raises(PinConfigurationError, match=key):
                tp_aiohttp.connector(good_policy, **{key: False})
        with pytest.raises(PinConfigurationError, match="connector="):
            tp_aiohttp.session(good_policy, connector=aiohttp.TCPConnector())
        conn = tp_aiohttp.connector(good_policy, limit=3)
        assert isinstance(conn, tp_aiohttp.PinnedTCPConnector)
        assert conn.limit == 3
        await conn.close()

    asyncio.run(build())


ROUTES = ("direct", "connect", "https-proxy")


async def _get_via(policy: PinPolicy, cafile: str, url: str, route: Route, **kw: object) -> bytes:
    proxy = route.proxy_url if route.proxy is not None else None
    async with (
        tp_aiohttp.session(policy, cafile=cafile, trust_env=False) as s,
        s.get(url, proxy=proxy, **kw) as r,  # type: ignore[arg-type]
    ):
        return await r.read()


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "overrides",
    [{"ssl": False, "server_hostname": "localhost"}, {"server_hostname": "localhost"}],
    ids=["ssl-false-and-other-name", "other-name"],
)
def test_the_url_host_decides(
    pki: Pki,
    origins: Origins,
    proxies: dict[str, Route],
    good_policy: PinPolicy,
    route: str,
    overrides: dict[str, object],
) -> None:
    """server_hostname naming an unpinned host cannot stand in for the pinned URL host.

    The attack: ssl=False (or the pinned context itself) with server_hostname="localhost" on
    https://127.0.0.1, which is pinned: the check ran for "localhost", which is not, so the
    forged leaf passed (or nothing was verified at all).
    """
    mitm, proxy = origins.mitm[HOST], proxies[route].proxy
    connections, tunnels = mitm.connections, len(proxy.connects) if proxy is not None else 0
    with pytest.raises(aiohttp.ClientConnectorCertificateError) as excinfo:
        asyncio.run(
            _get_via(good_policy, pki.cafile, url_for(HOST, mitm.port), proxies[route], **overrides)
        )
    (error,) = pin_errors(excinfo.value)
    assert isinstance(error, PinningUnavailableError)
    assert error.reason == "server-name-mismatch"
    assert error.hostname == HOST
    assert mitm.connections == connections
    assert mitm.received == b""
    if proxy is not None:
        assert len(proxy.connects) == tunnels  # refused before the proxy too


@pytest.mark.parametrize("route", ROUTES)
def test_server_hostname_naming_the_url_host_or_a_pinned_host_works(
    pki: Pki, origins: Origins, proxies: dict[str, Route], good_policy: PinPolicy, route: str
) -> None:
    """Twin: server_hostname spelling the URL host passes; one naming a pinned host is checked."""
    good, mitm = origins.good[HOST], origins.mitm[HOST]
    via = proxies[route]
    body = asyncio.run(
        _get_via(good_policy, pki.cafile, url_for(HOST, good.port), via, server_hostname=HOST)
    )
    assert body == BODY
    # An unpinned URL host with a pinned server name: that name's pins are checked.
    url = f"https://localhost:{good.port}/"
    assert asyncio.run(_get_via(good_policy, pki.cafile, url, via, server_hostname=HOST)) == BODY
    # aiohttp.ClientError: on 3.11/3.12 a CPython bug masks a TLS-in-TLS failure's type.
    with pytest.raises(aiohttp.ClientError) as excinfo:
        asyncio.run(
            _get_via(
                good_policy,
                pki.cafile,
                f"https://localhost:{mitm.port}/",
                via,
                server_hostname=HOST,
            )
        )
    assert isinstance(pin_errors(excinfo.value)[0], PinMismatchError)
    # ...and ssl=False stays refused for it.
    with pytest.raises(aiohttp.ClientConnectorCertificateError, match="ssl=False"):
        asyncio.run(_get_via(good_policy, pki.cafile, url, via, server_hostname=HOST, ssl=False))


# -- what stands as proof: an enforced rule in force ---------------------------------------------


def _weak_context(pki: Pki, weak: str) -> ssl.SSLContext:
    """A context tlspin pinned for HOST, with a rule that would let a forgery through."""
    pins = list(pki.unrelated_pins)
    if weak == "report-only":
        rule = PinRule(HOST, pins, mode="report")
    else:
        rule = PinRule(HOST, pins, expires=dt.date.today() - dt.timedelta(days=1))
    return create_context(PinPolicy([rule]), cafile=pki.cafile)


# Without the fix the expired rule was checked (and warned about) in the handshake.
@pytest.mark.filterwarnings("ignore::tlspin.PinPolicyExpiredWarning")
@pytest.mark.parametrize("weak", ["report-only", "expired"])
def test_a_context_pinned_to_a_weaker_rule_cannot_stand_in(
    pki: Pki, origins: Origins, good_policy: PinPolicy, weak: str
) -> None:
    """A per-request ssl= context pinned to a report-only or expired rule for a host the
    connector enforces is refused before connecting (it passed: the forged leaf got the request)."""
    mitm = origins.mitm[HOST]
    connections = mitm.connections
    ctx = _weak_context(pki, weak)
    with pytest.raises(aiohttp.ClientConnectorCertificateError) as excinfo:
        asyncio.run(_get(good_policy, pki.cafile, url_for(HOST, mitm.port), ssl=ctx))
    (error,) = pin_errors(excinfo.value)
    assert error.reason == "verification-off"
    assert mitm.connections == connections
    assert mitm.received == b""


def test_a_context_as_strict_as_the_connector_stands_in(
    pki: Pki, origins: Origins, good_policy: PinPolicy
) -> None:
    """Twin: where the connector's own rule only reports, a report-only context is as strict."""
    report_only = PinPolicy([PinRule(HOST, [pki.leaf.pin, pki.backup_pin], mode="report")])
    ctx = _weak_context(pki, "report-only")
    good = origins.good[HOST]
    assert asyncio.run(_get(report_only, pki.cafile, url_for(HOST, good.port), ssl=ctx)) == BODY
