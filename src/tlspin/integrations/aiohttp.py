"""Pinning for aiohttp: a ``TCPConnector`` with a pinned context, and a session using it.

aiohttp opens TLS through asyncio's ``loop.create_connection(ssl=ctx)`` and, behind proxies,
``loop.start_tls(ctx)``; both wrap a memory BIO with the pinned context, which checks pins
before the first request byte. Do not use ``ssl=aiohttp.Fingerprint(...)``: aiohttp switches CA
verification off for it and compares only the whole leaf certificate::

    async with tlspin.integrations.aiohttp.session(policy, cafile="ca.pem") as s:
        async with s.get("https://api.example.com/") as response:
            print(response.status)

aiohttp has no separate context for an ``https://`` proxy's own TLS: the connector's context
(the pinned one) verifies the proxy too, so its CA must be trusted by that context (pins apply
to the proxy only if the policy pins the proxy's host).

A pin failure surfaces as ``aiohttp.ClientConnectorCertificateError`` wrapping the
:class:`tlspin.PinMismatchError` (on Python 3.11/3.12 behind an HTTPS proxy, a CPython bug
turns it into ``ClientConnectionError`` ← ``TypeError`` ← the pin error; see
:func:`tlspin.integrations.find_pin_error`).
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any, NoReturn

import aiohttp

from tlspin.context import PolicySource
from tlspin.exceptions import PinConfigurationError, PinningUnavailableError
from tlspin.integrations._common import is_pinned_host, pinned_context, proves_pins, same_host
from tlspin.policy import PinPolicy

if TYPE_CHECKING:
    from aiohttp import ClientTimeout
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.connector import Connection
    from aiohttp.tracing import Trace

__all__ = ["PinnedTCPConnector", "connector", "session"]

_REFUSED = ("ssl", "ssl_context", "verify_ssl", "fingerprint")


class PinnedTCPConnector(aiohttp.TCPConnector):
    """A ``TCPConnector`` on which the URL's host decides what is checked.

    For a URL whose host is pinned it refuses, before connecting:

    * a per-request ``ssl=`` that would skip its pins: ``ssl=False``, a ``Fingerprint``, a
      context not pinned by tlspin, or one pinned to a policy that does not pin the host;
    * a ``server_hostname=`` naming another host: the TLS check runs for the server name, so
      the other name's pins (or none) would stand in for the URL host's, while the request, its
      cookies and credentials go to the URL host.

    A ``server_hostname`` that is itself pinned keeps its own pins whatever the URL (an
    unverified ``ssl=`` is refused for it too). Through an ``https://`` proxy whose host is
    pinned, a per-request ``ssl=`` that would skip the proxy's pins is refused whatever the
    origin: aiohttp uses it for the TLS to the proxy as well. A context given as ``ssl=``
    stands in for the connector's only if its policy checks the host at least as strictly (an
    enforced rule in force is not replaced by a report-only or expired one). Build it with
    :func:`connector`.

    .. versionchanged:: Unreleased
        The URL's host decides: ``ssl=False`` with ``server_hostname=<unpinned name>`` on a
        pinned URL was let through, and so was ``server_hostname`` naming another host. A
        per-request ``ssl=`` that skips a pinned proxy's pins is refused (the CONNECT and its
        ``Proxy-Authorization`` went to an unchecked proxy).
    """

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: ClientTimeout
    ) -> Connection:
        """Refuse a request that would reach a pinned host unchecked, then connect."""
        ctx = self._ssl
        if req.is_ssl() and isinstance(ctx, ssl.SSLContext):
            _check_request(ctx, req)
        return await super().connect(req, traces, timeout)


def _refuse(req: ClientRequest, host: str, msg: str, reason: str) -> NoReturn:
    error = PinningUnavailableError(msg, hostname=host, reason=reason)
    raise aiohttp.ClientConnectorCertificateError(req.connection_key, error)


def _check_request(ctx: ssl.SSLContext, req: ClientRequest) -> None:
    url_host = req.url.raw_host or ""
    name = req.server_hostname or None  # aiohttp uses the URL host for "" too
    if name is not None and is_pinned_host(ctx, url_host) and not same_host(name, url_host):
        msg = (
            f"refused a request to {url_host} with server_hostname={name!r}: {url_host} is "
            f"pinned, and TLS would be checked for {name!r} instead (expected no "
            f"server_hostname, or {url_host!r})"
        )
        _refuse(req, url_host, msg, "server-name-mismatch")
    override = req.ssl
    if override is True:
        return
    for host in dict.fromkeys(h for h in (url_host, name) if h):
        # A context pinned by tlspin is accepted only if its own policy checks this host at
        # least as strictly: one pinned to another (or an empty) policy would check nothing
        # here, and a report-only or expired rule would only report.
        if is_pinned_host(ctx, host) and not proves_pins(ctx, override, host):
            msg = (
                f"refused a request to {host} with ssl={override!r}: the host is pinned, and "
                "a per-request ssl= would bypass the pinned context (drop ssl=, or pass a "
                "context made with tlspin.create_context)"
            )
            _refuse(req, host, msg, "verification-off")
    proxy = req.proxy
    proxy_host = proxy.raw_host if proxy is not None and proxy.scheme == "https" else None
    if (
        proxy_host
        and is_pinned_host(ctx, proxy_host)
        and not proves_pins(ctx, override, proxy_host)
    ):
        # aiohttp makes the TLS leg to the proxy with the request's ssl= as well: the CONNECT,
        # with Proxy-Authorization, would go to a proxy whose pins were never checked.
        msg = (
            f"refused a request through the proxy {proxy_host} with ssl={override!r}: the "
            "proxy's host is pinned, and aiohttp uses a per-request ssl= for the TLS to the "
            "proxy too (drop ssl=, or pass a context made with tlspin.create_context)"
        )
        _refuse(req, proxy_host, msg, "verification-off")


def connector(
    policy: PinPolicy | PolicySource | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    cafile: str | None = None,
    capath: str | None = None,
    cadata: str | bytes | None = None,
    **kwargs: Any,
) -> PinnedTCPConnector:
    """Return a connector whose TLS connections check pins (call it inside a running loop).

    Args:
        policy: the pins; or pass a pinned *ssl_context* instead.
        ssl_context: a context already pinned with :func:`tlspin.pin_context`.
        cafile: CA bundle to trust instead of the system store (with *policy* only).
        capath: CA directory to trust instead of the system store (with *policy* only).
        cadata: PEM CAs to trust instead of the system store (with *policy* only).
        kwargs: other ``TCPConnector`` arguments (``limit``, ``force_close``…).

    Raises:
        PinConfigurationError: an ``ssl``-related argument would replace the pinned context.

    Example::

        conn = connector(policy, cafile="ca.pem", limit=20)
        async with aiohttp.ClientSession(connector=conn) as s:
            await s.get("https://api.example.com/")
    """
    for key in _REFUSED:
        if key in kwargs:
            msg = (
                f"{key}= is not accepted with tlspin's connector: the pinned context is the TLS "
                "configuration; pass cafile=/capath=/cadata= or a pinned ssl_context="
            )
            raise PinConfigurationError(msg)
    ctx = pinned_context(
        policy, ssl_context=ssl_context, cafile=cafile, capath=capath, cadata=cadata
    )
    return PinnedTCPConnector(ssl=ctx, **kwargs)


def session(
    policy: PinPolicy | PolicySource | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    cafile: str | None = None,
    capath: str | None = None,
    cadata: str | bytes | None = None,
    connector_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> aiohttp.ClientSession:
    """Return an ``aiohttp.ClientSession`` on a pinned :func:`connector` (inside a running loop).

    Args:
        policy: the pins; or pass a pinned *ssl_context* instead.
        ssl_context: a context already pinned with :func:`tlspin.pin_context`.
        cafile: CA bundle to trust instead of the system store (with *policy* only).
        capath: CA directory to trust instead of the system store (with *policy* only).
        cadata: PEM CAs to trust instead of the system store (with *policy* only).
        connector_kwargs: arguments for the connector (see :func:`connector`).
        kwargs: other ``ClientSession`` arguments (``timeout``, ``headers``…).

    Example::

        async with session(policy, cafile="ca.pem") as s:
            async with s.get("https://api.example.com/") as response:
                print(response.status)
    """
    if "connector" in kwargs:
        msg = "connector= is not accepted: tlspin builds the pinned connector (connector_kwargs=)"
        raise PinConfigurationError(msg)
    conn = connector(
        policy,
        ssl_context=ssl_context,
        cafile=cafile,
        capath=capath,
        cadata=cadata,
        **(connector_kwargs or {}),
    )
    return aiohttp.ClientSession(connector=conn, **kwargs)
