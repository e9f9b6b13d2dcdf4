"""Pinning for urllib3 2.x: a ``PoolManager`` or ``ProxyManager`` built on a pinned context.

urllib3 hands the context to ``wrap_socket`` (direct and CONNECT tunnels) and to ``wrap_bio``
(TLS inside an HTTPS proxy's TLS); both check pins. The helpers here also close urllib3's own
holes: they never pass ``ca_certs`` (urllib3 would load it into the shared context on every
connection), refuse options that switch verification off on that context, refuse
``use_forwarding_for_https`` (the request would go to the proxy in clear, unpinned), and do not
retry a refused pin::

    http = tlspin.integrations.urllib3.pool_manager(policy, cafile="ca.pem")
    response = http.request("GET", "https://api.example.com/")
    print(response.status)

A pin failure surfaces as ``urllib3.exceptions.MaxRetryError`` whose ``reason`` is a
``urllib3.exceptions.SSLError`` wrapping the :class:`tlspin.PinMismatchError`
(see :func:`tlspin.integrations.find_pin_error`).
"""

from __future__ import annotations

import ssl
from types import TracebackType
from typing import Any, Self

import urllib3
from urllib3.connectionpool import ConnectionPool, HTTPConnectionPool
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from tlspin.context import PolicySource, create_context
from tlspin.exceptions import PinConfigurationError
from tlspin.integrations._common import (
    check_proxy_context,
    find_pin_error,
    is_pinned_host,
    pinned_context,
    policy_source,
    same_host,
)
from tlspin.policy import PinPolicy

__all__ = ["PinAwareRetry", "pool_manager", "proxy_manager"]

# Keyword arguments that would make urllib3 mutate the shared pinned context on every
# connection, and what to use instead.
_REFUSED = {
    "ca_certs": "cafile= (loaded once into the pinned context)",
    "ca_cert_dir": "capath=",
    "ca_cert_data": "cadata=",
    "assert_hostname": "nothing: hostname checking stays on, it is what makes pins meaningful",
    "assert_fingerprint": "a tlspin.CertificatePin in the policy",
    "cert_file": "ctx.load_cert_chain() on the context (ssl_context=)",
    "key_file": "ctx.load_cert_chain() on the context (ssl_context=)",
    "key_password": "ctx.load_cert_chain() on the context (ssl_context=)",
    "ssl_version": "the context's minimum_version/maximum_version",
    "ssl_minimum_version": "the context's minimum_version",
    "ssl_maximum_version": "the context's maximum_version",
}


class PinAwareRetry(Retry):
    """A :class:`urllib3.util.Retry` that never retries a connection refused by tlspin.

    A pin mismatch will not go away on the next attempt; retrying only repeats the handshake
    with the same server (urllib3's default ``Retry(3)`` makes four). Other errors are retried
    as configured.

    Example::

        retries = PinAwareRetry(total=3, backoff_factor=0.5)
        http = urllib3.PoolManager(ssl_context=ctx, retries=retries)
        http.request("GET", "https://api.example.com/")
    """

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        """Count an attempt; raise at once (``MaxRetryError``) when tlspin refused the pin."""
        if error is not None and find_pin_error(error) is not None:
            exhausted = self.new(total=0, connect=None, read=None, other=None)
            return Retry.increment(exhausted, method, url, response, error, _pool, _stacktrace)
        return super().increment(method, url, response, error, _pool, _stacktrace)


def _check_kwargs(kwargs: dict[str, Any]) -> None:
    for key, instead in _REFUSED.items():
        if key in kwargs:
            msg = (
                f"{key}= is not accepted with a pinned context: urllib3 would apply it to the "
                f"shared context on every connection; use {instead}"
            )
            raise PinConfigurationError(msg)
    cert_reqs = kwargs.get("cert_reqs")
    if cert_reqs is not None and cert_reqs not in ("CERT_REQUIRED", "REQUIRED", ssl.CERT_REQUIRED):
        msg = (
            "pinning needs certificate verification: expected cert_reqs=CERT_REQUIRED, found "
            f"{cert_reqs!r}"
        )
        raise PinConfigurationError(msg)


def _check_request_context(ctx: ssl.SSLContext, context: dict[str, Any]) -> None:
    """Check a pool's settings, the per-call ``pool_kwargs`` included, before urllib3 uses them."""
    _check_kwargs(context)
    host, name = context.get("host"), context.get("server_hostname")
    if (
        name is not None
        and str(context.get("scheme", "")).lower() == "https"
        and is_pinned_host(ctx, host)
        and not same_host(str(name), str(host))
    ):
        msg = (
            f"server_hostname={name!r} is not accepted for {host}: {host} is pinned, and TLS "
            f"would be checked for {name!r} instead (expected no server_hostname, or {host!r})"
        )
        raise PinConfigurationError(msg)


class _PinnedPoolManager(urllib3.PoolManager):
    """A ``PoolManager`` that checks every pool's settings, ``pool_kwargs`` of a call included."""

    def __init__(self, *args: Any, tlspin_context: ssl.SSLContext, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tlspin_context = tlspin_context

    def connection_from_context(self, request_context: dict[str, Any]) -> HTTPConnectionPool:
        """Refuse settings that would skip or weaken the pin check, then get the pool."""
        _check_request_context(self._tlspin_context, request_context)
        return super().connection_from_context(request_context)


class _PinnedProxyManager(_PinnedPoolManager, urllib3.ProxyManager):
    """The ``ProxyManager`` twin of `_PinnedPoolManager`, whose checks it inherits.

    In the method order `_PinnedPoolManager` comes first, so its ``__init__`` passes the proxy
    arguments on to ``ProxyManager`` and its ``connection_from_context`` runs before urllib3's.
    """


def pool_manager(
    policy: PinPolicy | PolicySource | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    cafile: str | None = None,
    capath: str | None = None,
    cadata: str | bytes | None = None,
    retries: Retry | bool | int | None = None,
    **kwargs: Any,
) -> urllib3.PoolManager:
    """Return a ``urllib3.PoolManager`` whose HTTPS connections check pins.

    Args:
        policy: the pins; or pass a pinned *ssl_context* instead.
        ssl_context: a context already pinned with :func:`tlspin.pin_context`.
        cafile: CA bundle to trust instead of the system store (with *policy* only).
        capath: CA directory to trust instead of the system store (with *policy* only).
        cadata: PEM CAs to trust instead of the system store (with *policy* only).
        retries: urllib3 retries; the default is :class:`PinAwareRetry` ``(3)``.
        kwargs: other ``PoolManager`` arguments (``num_pools``, ``maxsize``, ``headers``…).

    Raises:
        PinConfigurationError: an argument would weaken or bypass the pinned context, or a
            request's pool settings would (``server_hostname`` naming another host than a
            pinned one, options that mutate the shared context).

    .. versionchanged:: Unreleased
        Checks each pool's settings, ``pool_kwargs`` included: ``server_hostname`` naming
        another host than a pinned one had the check run for that other name.

    Example::

        http = pool_manager(policy, cafile="ca.pem")
        response = http.request("GET", "https://api.example.com/")
        print(response.status)
    """
    _check_kwargs(kwargs)
    ctx = pinned_context(
        policy, ssl_context=ssl_context, cafile=cafile, capath=capath, cadata=cadata
    )
    return _PinnedPoolManager(
        ssl_context=ctx,
        retries=PinAwareRetry(3) if retries is None else retries,
        tlspin_context=ctx,
        **kwargs,
    )


def proxy_manager(
    proxy_url: str,
    policy: PinPolicy | PolicySource | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    cafile: str | None = None,
    capath: str | None = None,
    cadata: str | bytes | None = None,
    proxy_ssl_context: ssl.SSLContext | None = None,
    proxy_cafile: str | None = None,
    use_forwarding_for_https: bool = False,
    retries: Retry | bool | int | None = None,
    **kwargs: Any,
) -> urllib3.ProxyManager:
    """Return a ``urllib3.ProxyManager`` that tunnels HTTPS and checks the origin's pins.

    HTTPS requests go through a CONNECT tunnel; the origin's TLS runs inside it (inside the
    proxy's own TLS for an ``https://`` proxy) and is checked against the origin's pins. The
    proxy's TLS is checked only against pins for the proxy's own host, if the policy in
    *proxy_ssl_context* has any.

    Args:
        proxy_url: ``http://host:port`` or ``https://host:port``.
        policy: the origin pins; or pass a pinned *ssl_context* instead.
        ssl_context: a context already pinned with :func:`tlspin.pin_context`.
        cafile: CA bundle for origins (with *policy* only).
        capath: CA directory for origins (with *policy* only).
        cadata: PEM CAs for origins (with *policy* only).
        proxy_ssl_context: context for TLS to an ``https://`` proxy; if the policy pins the
            proxy's host, it must be pinned for it too (default: the system store, with the
            policy's pins).
        proxy_cafile: shortcut: trust this CA bundle for the proxy (with the policy's pins).
        use_forwarding_for_https: refused when anything is pinned: the proxy would receive the
            whole request in clear and no origin TLS would exist to pin.
        retries: urllib3 retries; the default is :class:`PinAwareRetry` ``(3)``.
        kwargs: other ``ProxyManager`` arguments (``proxy_headers``, ``num_pools``…).

    Raises:
        PinConfigurationError: an argument would weaken or bypass the pinned context, or a
            request's pool settings would (``server_hostname`` naming another host than a
            pinned one, options that mutate the shared context).

    .. versionchanged:: Unreleased
        The proxy's TLS leg is checked against the policy's pins for the proxy host, and
        ``server_hostname`` cannot name another host than a pinned one.

    Example::

        http = proxy_manager("http://proxy.internal:3128", policy)
        response = http.request("GET", "https://api.example.com/")
        print(response.status)
    """
    _check_kwargs(kwargs)
    ctx = pinned_context(
        policy, ssl_context=ssl_context, cafile=cafile, capath=capath, cadata=cadata
    )
    source = policy_source(ctx)
    # A policy source may gain rules later, so only a fixed policy without rules may forward.
    if use_forwarding_for_https and (not isinstance(source, PinPolicy) or source.rules):
        msg = (
            "use_forwarding_for_https=True sends HTTPS requests to the proxy in clear and "
            "makes no TLS connection to the origin, so its pins could not be checked; use "
            "the default CONNECT tunnel"
        )
        raise PinConfigurationError(msg)
    if proxy_cafile is not None:
        if proxy_ssl_context is not None:
            msg = "pass either proxy_ssl_context or proxy_cafile, not both"
            raise PinConfigurationError(msg)
        proxy_ssl_context = create_context(source, cafile=proxy_cafile)
    elif proxy_ssl_context is None and proxy_url.lower().startswith("https:"):
        # urllib3 would trust the system store for the proxy without pins; the same trust, with
        # the policy's pins for the proxy's host if it has any.
        proxy_ssl_context = create_context(source)
    check_proxy_context(ctx, urllib3.util.parse_url(proxy_url).host, proxy_ssl_context)
    if use_forwarding_for_https:
        # No origin TLS exists in forwarding mode; urllib3 wants the context for the proxy leg.
        return _PinnedProxyManager(
            proxy_url,
            proxy_ssl_context=proxy_ssl_context if proxy_ssl_context is not None else ctx,
            use_forwarding_for_https=True,
            retries=PinAwareRetry(3) if retries is None else retries,
            tlspin_context=ctx,
            **kwargs,
        )
    return _PinnedProxyManager(
        proxy_url,
        ssl_context=ctx,
        proxy_ssl_context=proxy_ssl_context,
        retries=PinAwareRetry(3) if retries is None else retries,
        tlspin_context=ctx,
        **kwargs,
    )
