"""Pinning for httpx: ``Client`` and ``AsyncClient`` built on a pinned context.

httpx (0.28) hands ``verify=<SSLContext>`` straight to httpcore, which wraps sockets with it
(sync), wraps memory BIOs with it (async, and TLS inside an HTTPS proxy's TLS), and uses it for
HTTP/2 as well; all of these check pins before the first request byte. The proxy's own TLS leg
uses the proxy's context (:func:`proxy`), so pins for the origin apply inside the tunnel::

    client = tlspin.integrations.httpx.client(policy, cafile="ca.pem", http2=True)
    response = client.get("https://api.example.com/")
    print(response.status_code)

A pin failure surfaces as ``httpx.ConnectError`` with the :class:`tlspin.PinMismatchError` as
its cause (see :func:`tlspin.integrations.find_pin_error`).

httpcore pools connections by the URL's origin, whatever TLS server name opened them: a
connection opened with ``extensions={"sni_hostname": other}`` was checked against *other*'s pins
(or none) and would later serve plain requests to the URL's host. The transports made here
therefore refuse an ``sni_hostname`` other than the URL's host when that host is pinned, on
every request and redirect, direct or through a proxy.
"""

from __future__ import annotations

import inspect
import ssl
import weakref
from collections.abc import Mapping
from typing import Any

import httpx

from tlspin.context import PolicySource, create_context
from tlspin.exceptions import PinConfigurationError
from tlspin.integrations._common import (
    check_proxy_context,
    is_pinned_host,
    pinned_context,
    same_host,
    server_name_refusal,
    trust_context,
)
from tlspin.policy import PinPolicy

__all__ = [
    "AsyncPinnedTransport",
    "PinnedTransport",
    "async_client",
    "async_transport",
    "client",
    "proxy",
    "transport",
]

# Transports built here (pinned); a client refuses any other transport, which would bypass pins.
_PINNED_TRANSPORTS: weakref.WeakSet[httpx.BaseTransport | httpx.AsyncBaseTransport] = (
    weakref.WeakSet()
)


def _check_server_name(ctx: ssl.SSLContext, request: httpx.Request) -> None:
    """Refuse a TLS server name other than a pinned URL host (see the module docstring)."""
    sni = request.extensions.get("sni_hostname")
    if sni is None or request.url.scheme != "https":
        return
    name = sni.decode("ascii", "replace") if isinstance(sni, bytes) else str(sni)
    host = request.url.host
    if same_host(name, host) or not is_pinned_host(ctx, host):
        return
    cause = server_name_refusal(host, name)
    raise httpx.ConnectError(cause.message, request=request) from cause


def _check_proxy(ctx: ssl.SSLContext, proxy: httpx.Proxy | httpx.URL | str | None) -> None:
    """Refuse an HTTPS proxy whose own TLS leg would skip the policy's pins for its host."""
    if proxy is None:
        return
    if not isinstance(proxy, httpx.Proxy):
        proxy = httpx.Proxy(url=proxy)
    if proxy.url.scheme == "https":
        check_proxy_context(ctx, proxy.url.host, proxy.ssl_context)


class PinnedTransport(httpx.HTTPTransport):
    """An ``httpx.HTTPTransport`` on a pinned context that refuses to mix up server names.

    Made by :func:`transport` and used by :func:`client` for its own and its proxies'
    transports; it has no other public constructor.
    """

    def __init__(self, *, verify: ssl.SSLContext, **kwargs: Any) -> None:
        """Build the transport on the pinned context *verify*."""
        _check_proxy(verify, kwargs.get("proxy"))
        super().__init__(verify=verify, **kwargs)
        self._tlspin_ctx = verify

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Refuse an ``sni_hostname`` other than a pinned URL host, then send."""
        _check_server_name(self._tlspin_ctx, request)
        return super().handle_request(request)


class AsyncPinnedTransport(httpx.AsyncHTTPTransport):
    """The async twin of :class:`PinnedTransport`, made by :func:`async_transport`."""

    def __init__(self, *, verify: ssl.SSLContext, **kwargs: Any) -> None:
        """Build the transport on the pinned context *verify*."""
        _check_proxy(verify, kwargs.get("proxy"))
        super().__init__(verify=verify, **kwargs)
        self._tlspin_ctx = verify

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Refuse an ``sni_hostname`` other than a pinned URL host, then send."""
        _check_server_name(self._tlspin_ctx, request)
        return await super().handle_async_request(request)


def _arguments(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """*args* and *kwargs* of a call to httpx's *method*, all by name."""
    return dict(inspect.signature(method).bind(*args, **kwargs).arguments)


class _PinnedClient(httpx.Client):
    # httpx builds the default transport and one per proxy (proxy=, or the environment's when
    # trust_env) through these two methods; each gets the guarded transport instead.
    def _init_transport(self, *args: Any, **kwargs: Any) -> httpx.BaseTransport:
        named = _arguments(super()._init_transport, args, kwargs)
        transport: httpx.BaseTransport | None = named.pop("transport", None)
        return transport if transport is not None else PinnedTransport(**named)

    def _init_proxy_transport(self, *args: Any, **kwargs: Any) -> httpx.BaseTransport:
        return PinnedTransport(**_arguments(super()._init_proxy_transport, args, kwargs))


class _PinnedAsyncClient(httpx.AsyncClient):
    def _init_transport(self, *args: Any, **kwargs: Any) -> httpx.AsyncBaseTransport:
        named = _arguments(super()._init_transport, args, kwargs)
        transport: httpx.AsyncBaseTransport | None = named.pop("transport", None)
        return transport if transport is not None else AsyncPinnedTransport(**named)

    def _init_proxy_transport(self, *args: Any, **kwargs: Any) -> httpx.AsyncBaseTransport:
        return AsyncPinnedTransport(**_arguments(super()._init_proxy_transport, args, kwargs))


def proxy(
    url: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    policy: PinPolicy | PolicySource | None = None,
    cafile: str | None = None,
    auth: tuple[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Proxy:
    """Return an ``httpx.Proxy``; for an ``https://`` proxy, with a context for its TLS leg.

    Args:
        url: ``http://``, ``https://`` or ``socks5://`` proxy URL.
        ssl_context: context for TLS to the proxy itself (may be pinned to the proxy's host).
        policy: pin the proxy's TLS with this policy (needed when the client's policy pins the
            proxy's host: a client refuses a proxy whose leg would skip those pins); trusts
            *cafile*, or the system store.
        cafile: shortcut: trust this CA bundle for the proxy (no pins unless *policy*). Without
            any of these, httpx trusts certifi for the proxy.
        auth: proxy credentials.
        headers: extra headers for the proxy (CONNECT request).

    Example::

        p = proxy("https://proxy.internal:3128", cafile="proxy-ca.pem")
        with client(policy, proxy=p) as c:
            c.get("https://api.example.com/")
    """
    if cafile is not None or policy is not None:
        if ssl_context is not None:
            msg = "pass either ssl_context or cafile/policy for the proxy, not both"
            raise PinConfigurationError(msg)
        if policy is not None:
            ssl_context = create_context(policy, cafile=cafile)
        else:
            ssl_context = trust_context(cafile=cafile)
    return httpx.Proxy(url, ssl_context=ssl_context, auth=auth, headers=headers)


def _refuse(kwargs: Mapping[str, Any], what: str) -> None:
    if "verify" in kwargs:
        msg = (
            f"verify= is not accepted by tlspin's {what}: the pinned context is the verification; "
            "pass cafile=/capath=/cadata= (or a pinned ssl_context=)"
        )
        raise PinConfigurationError(msg)
    transports = []
    if kwargs.get("transport") is not None:
        transports.append(kwargs["transport"])
    transports += [t for t in (kwargs.get("mounts") or {}).values() if t is not None]
    for t in transports:
        if t not in _PINNED_TRANSPORTS:
            msg = (
                f"a custom transport ({type(t).__name__}) would bypass the pinned context; "
                "build it with tlspin.integrations.httpx.transport() / async_transport()"
            )
            raise PinConfigurationError(msg)


def transport(
    policy: PinPolicy | PolicySource | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    cafile: str | None = None,
    capath: str | None = None,
    cadata: str | bytes | None = None,
    **kwargs: Any,
) -> PinnedTransport:
    """Return a pinned ``httpx.HTTPTransport`` (e.g. to mount, or to set ``retries=``).

    It refuses an ``sni_hostname`` request extension other than a pinned URL host.

    Example::

        t = transport(policy, retries=2, http2=True)
        with httpx.Client(transport=t) as c:
            c.get("https://api.example.com/")
    """
    _refuse({"verify": kwargs["verify"]} if "verify" in kwargs else {}, "transport()")
    ctx = pinned_context(
        policy, ssl_context=ssl_context, cafile=cafile, capath=capath, cadata=cadata
    )
    t = PinnedTransport(verify=ctx, **kwargs)
    _PINNED_TRANSPORTS.add(t)
    return t


def async_transport(
    policy: PinPolicy | PolicySource | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    cafile: str | None = None,
    capath: str | None = None,
    cadata: str | bytes | None = None,
    **kwargs: Any,
) -> AsyncPinnedTransport:
    """Return a pinned ``httpx.AsyncHTTPTransport``.

    It refuses an ``sni_hostname`` request extension other than a pinned URL host.

    Example::

        t = async_transport(policy, retries=2)
        async with httpx.AsyncClient(transport=t) as c:
            await c.get("https://api.example.com/")
    """
    _refuse({"verify": kwargs["verify"]} if "verify" in kwargs else {}, "async_transport()")
    ctx = pinned_context(
        policy, ssl_context=ssl_context, cafile=cafile, capath=capath, cadata=cadata
    )
    t = AsyncPinnedTransport(verify=ctx, **kwargs)
    _PINNED_TRANSPORTS.add(t)
    return t


def client(
    policy: PinPolicy | PolicySource | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    cafile: str | None = None,
    capath: str | None = None,
    cadata: str | bytes | None = None,
    **kwargs: Any,
) -> httpx.Client:
    """Return an ``httpx.Client`` whose HTTPS connections check pins.

    Args:
        policy: the pins; or pass a pinned *ssl_context* instead.
        ssl_context: a context already pinned with :func:`tlspin.pin_context`.
        cafile: CA bundle to trust instead of the system store (with *policy* only).
        capath: CA directory to trust instead of the system store (with *policy* only).
        cadata: PEM CAs to trust instead of the system store (with *policy* only).
        kwargs: other ``httpx.Client`` arguments (``http2=True``, ``proxy=``…); ``verify=`` and
            transports not made by :func:`transport` are refused.

    Raises:
        PinConfigurationError: an argument would bypass the pinned context.

    A request to a pinned host with an ``sni_hostname`` extension naming another host raises
    ``httpx.ConnectError`` (from :class:`tlspin.PinningUnavailableError`, reason
    ``"server-name-mismatch"``) before any connection is made.

    .. versionchanged:: Unreleased
        Refuses ``sni_hostname`` other than a pinned URL host (its connection was pooled for the
        URL's host without that host's pin check).

    Example::

        with client(policy, cafile="ca.pem", http2=True) as c:
            response = c.get("https://api.example.com/")
            print(response.http_version, response.status_code)
    """
    _refuse(kwargs, "client()")
    ctx = pinned_context(
        policy, ssl_context=ssl_context, cafile=cafile, capath=capath, cadata=cadata
    )
    return _PinnedClient(verify=ctx, **kwargs)


def async_client(
    policy: PinPolicy | PolicySource | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    cafile: str | None = None,
    capath: str | None = None,
    cadata: str | bytes | None = None,
    **kwargs: Any,
) -> httpx.AsyncClient:
    """Return an ``httpx.AsyncClient`` whose HTTPS connections check pins.

    Arguments are those of :func:`client`.

    Example::

        async with async_client(policy, cafile="ca.pem") as c:
            response = await c.get("https://api.example.com/")
            print(response.status_code)
    """
    _refuse(kwargs, "async_client()")
    ctx = pinned_context(
        policy, ssl_context=ssl_context, cafile=cafile, capath=capath, cadata=cadata
    )
    return _PinnedAsyncClient(verify=ctx, **kwargs)
