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
"""

from __future__ import annotations

import ssl
import weakref
from collections.abc import Mapping
from typing import Any

import httpx

from tlspin.context import PolicySource
from tlspin.exceptions import PinConfigurationError
from tlspin.integrations._common import pinned_context, trust_context
from tlspin.policy import PinPolicy

__all__ = ["async_client", "async_transport", "client", "proxy", "transport"]

# Transports built here (pinned); a client refuses any other transport, which would bypass pins.
_PINNED_TRANSPORTS: weakref.WeakSet[httpx.BaseTransport | httpx.AsyncBaseTransport] = (
    weakref.WeakSet()
)


def proxy(
    url: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    cafile: str | None = None,
    auth: tuple[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Proxy:
    """Return an ``httpx.Proxy``; for an ``https://`` proxy, with a context for its TLS leg.

    Args:
        url: ``http://``, ``https://`` or ``socks5://`` proxy URL.
        ssl_context: context for TLS to the proxy itself (may be pinned to the proxy's host).
        cafile: shortcut: trust this CA bundle for the proxy (no pins). Without either, httpx
            trusts certifi for the proxy.
        auth: proxy credentials.
        headers: extra headers for the proxy (CONNECT request).

    Example::

        p = proxy("https://proxy.internal:3128", cafile="proxy-ca.pem")
        with client(policy, proxy=p) as c:
            c.get("https://api.example.com/")
    """
    if cafile is not None:
        if ssl_context is not None:
            msg = "pass either ssl_context or cafile for the proxy, not both"
            raise PinConfigurationError(msg)
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
) -> httpx.HTTPTransport:
    """Return a pinned ``httpx.HTTPTransport`` (e.g. to mount, or to set ``retries=``).

    Example::

        t = transport(policy, retries=2, http2=True)
        with httpx.Client(transport=t) as c:
            c.get("https://api.example.com/")
    """
    _refuse({"verify": kwargs["verify"]} if "verify" in kwargs else {}, "transport()")
    ctx = pinned_context(
        policy, ssl_context=ssl_context, cafile=cafile, capath=capath, cadata=cadata
    )
    t = httpx.HTTPTransport(verify=ctx, **kwargs)
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
) -> httpx.AsyncHTTPTransport:
    """Return a pinned ``httpx.AsyncHTTPTransport``.

    Example::

        t = async_transport(policy, retries=2)
        async with httpx.AsyncClient(transport=t) as c:
            await c.get("https://api.example.com/")
    """
    _refuse({"verify": kwargs["verify"]} if "verify" in kwargs else {}, "async_transport()")
    ctx = pinned_context(
        policy, ssl_context=ssl_context, cafile=cafile, capath=capath, cadata=cadata
    )
    t = httpx.AsyncHTTPTransport(verify=ctx, **kwargs)
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

    Example::

        with client(policy, cafile="ca.pem", http2=True) as c:
            response = c.get("https://api.example.com/")
            print(response.http_version, response.status_code)
    """
    _refuse(kwargs, "client()")
    ctx = pinned_context(
        policy, ssl_context=ssl_context, cafile=cafile, capath=capath, cadata=cadata
    )
    return httpx.Client(verify=ctx, **kwargs)


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
    return httpx.AsyncClient(verify=ctx, **kwargs)
