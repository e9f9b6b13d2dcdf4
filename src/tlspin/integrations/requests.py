"""Pinning for requests: a ``Session`` whose HTTPS adapter uses pinned contexts.

:class:`PinningAdapter` hands a pinned context to urllib3 for direct connections, for the
origin inside CONNECT tunnels (HTTP, HTTPS and SOCKS proxies) and keeps requests from undoing
it:

* requests sets ``ca_certs`` on every pool, which makes urllib3 reload the CA bundle into the
  shared context on every new connection (about 15 ms each with certifi); the adapter clears it;
* ``verify=<path>`` (per session or per request, or ``REQUESTS_CA_BUNDLE``) gets its own pinned
  context for that trust store, built once and cached;
* the session from :func:`session` lets an explicit trust store win over ``REQUESTS_CA_BUNDLE``
  and ``CURL_CA_BUNDLE`` (requests would replace it with theirs): ``cafile=``, ``capath=``,
  ``cadata=`` or ``ssl_context=``, and a ``verify=<path>`` set on the session. Where the
  environment's bundle does apply, a TLS error says that it came from there;
* ``verify=False`` is refused for pinned hosts (and keeps working for other hosts, on a
  separate pool that never touches the pinned context);
* the session from :func:`session` refuses ``mount()`` of any other adapter on an ``https``
  prefix, which would silently replace the pins (e.g. an ``HTTPAdapter`` mounted for retries)::

    session = tlspin.integrations.requests.session(policy, cafile="ca.pem")
    response = session.get("https://api.example.com/")
    print(response.status_code)

A pin failure surfaces as ``requests.exceptions.SSLError`` with the
:class:`tlspin.PinMismatchError` in its chain (see :func:`tlspin.integrations.find_pin_error`).
"""

from __future__ import annotations

import contextlib
import os
import ssl
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import requests
import urllib3
from requests.adapters import DEFAULT_RETRIES, BaseAdapter, HTTPAdapter
from requests.exceptions import SSLError
from requests.models import PreparedRequest

from tlspin.context import PolicySource, create_context
from tlspin.exceptions import PinConfigurationError, PinningUnavailableError
from tlspin.integrations._common import (
    check_proxy_context,
    is_pinned_host,
    pinned_context,
    policy_source,
)
from tlspin.integrations.urllib3 import PinAwareRetry
from tlspin.policy import PinPolicy

if TYPE_CHECKING:
    from requests.sessions import _Settings

__all__ = ["PinningAdapter", "session"]

_Verify = bool | str | None
_Cert = str | tuple[str, str] | None


class PinningAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose HTTPS connections check pins; mount it on ``"https://"``.

    Args:
        policy: the pins; or pass a pinned *ssl_context* instead.
        ssl_context: a context already pinned with :func:`tlspin.pin_context`; it serves
            ``verify=True``.
        cafile: CA bundle behind ``verify=True`` (default: the system store, not certifi;
            pass ``certifi.where()`` to use certifi).
        capath: CA directory behind ``verify=True``.
        cadata: PEM CAs behind ``verify=True``.
        proxy_ssl_context: context for TLS to an ``https://`` proxy (default: the adapter's
            ``verify=True`` trust, with the policy's pins for the proxy host if it has any; a
            context given here must be pinned for a proxy host the policy pins).
        proxy_cafile: shortcut: trust this CA bundle for ``https://`` proxies (with the
            policy's pins).
        kwargs: ``HTTPAdapter`` arguments (``pool_connections``, ``pool_maxsize``,
            ``max_retries``…). An integer ``max_retries`` becomes a :class:`PinAwareRetry`.

    Example::

        session = requests.Session()
        session.mount("https://", PinningAdapter(policy, cafile="ca.pem"))
        session.get("https://api.example.com/")
    """

    def __init__(
        self,
        policy: PinPolicy | PolicySource | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        cafile: str | None = None,
        capath: str | None = None,
        cadata: str | bytes | None = None,
        proxy_ssl_context: ssl.SSLContext | None = None,
        proxy_cafile: str | None = None,
        **kwargs: Any,
    ) -> None:
        self._ctx = pinned_context(
            policy, ssl_context=ssl_context, cafile=cafile, capath=capath, cadata=cadata
        )
        self._source = policy_source(self._ctx)
        self._own_ctx = ssl_context is None
        self._cafile, self._capath, self._cadata = cafile, capath, cadata
        if proxy_cafile is not None:
            if proxy_ssl_context is not None:
                msg = "pass either proxy_ssl_context or proxy_cafile, not both"
                raise PinConfigurationError(msg)
            proxy_ssl_context = create_context(self._source, cafile=proxy_cafile)
        self._proxy_ctx = proxy_ssl_context
        self._contexts: dict[tuple[_Verify, _Cert], ssl.SSLContext] = {}
        self._lock = threading.Lock()
        retries = kwargs.get("max_retries", DEFAULT_RETRIES)
        if isinstance(retries, int) and not isinstance(retries, bool) and retries > 0:
            kwargs["max_retries"] = PinAwareRetry(total=retries, read=False)
        super().__init__(**kwargs)

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The pinned context behind ``verify=True``."""
        return self._ctx

    # -- urllib3 managers ------------------------------------------------------------------
    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        """Create the pool manager with the pinned context (called by ``HTTPAdapter``)."""
        pool_kwargs["ssl_context"] = self._ctx
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        """Create a proxy manager: pinned origin inside the tunnel, trusted TLS to the proxy."""
        if proxy not in self.proxy_manager:
            # The origin's TLS inside the tunnel uses the pinned context.
            proxy_kwargs["ssl_context"] = self._ctx
            if proxy.lower().startswith("https"):
                proxy_ctx = self._proxy_context()
                check_proxy_context(self._ctx, urllib3.util.parse_url(proxy).host, proxy_ctx)
                proxy_kwargs["proxy_ssl_context"] = proxy_ctx
        return super().proxy_manager_for(proxy, **proxy_kwargs)

    def _proxy_context(self) -> ssl.SSLContext:
        if self._proxy_ctx is None:
            with self._lock:
                if self._proxy_ctx is None:
                    # The adapter's trust store, and the policy's pins if it pins the proxy.
                    self._proxy_ctx = create_context(
                        self._source, cafile=self._cafile, capath=self._capath, cadata=self._cadata
                    )
        return self._proxy_ctx

    # -- per-request TLS settings ----------------------------------------------------------
    def build_connection_pool_key_attributes(
        self, request: PreparedRequest, verify: bool | str, cert: _Cert = None
    ) -> tuple[Any, Any]:
        """Select the pool for a request: the pinned context for its ``verify``/``cert``."""
        params, kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        host_params: dict[str, Any] = dict(params)
        pool_kwargs: dict[str, Any] = dict(kwargs)
        if host_params.get("scheme") != "https":
            return host_params, pool_kwargs
        host = host_params.get("host")
        if verify is False:
            if is_pinned_host(self._ctx, host):
                msg = (
                    f"verify=False is not allowed for {host}: the host is pinned, and pins mean "
                    "nothing without certificate verification (pass a CA bundle path as verify "
                    "instead)"
                )
                cause = PinningUnavailableError(msg, hostname=host, reason="verification-off")
                raise SSLError(msg, request=request) from cause
            # Unpinned host: urllib3 makes its own unverified context for a separate pool
            # (None removes the pinned context from the pool key).
            pool_kwargs["ssl_context"] = None
            return host_params, pool_kwargs
        for key in ("ca_certs", "ca_cert_dir", "cert_file", "key_file"):
            pool_kwargs.pop(key, None)
        pool_kwargs["ssl_context"] = self._context_for(verify, cert)
        return host_params, pool_kwargs

    def _context_for(self, verify: _Verify, cert: _Cert) -> ssl.SSLContext:
        path = verify if isinstance(verify, str) else None
        if path is None and cert is None:
            return self._ctx
        key = (path, cert)
        ctx = self._contexts.get(key)
        if ctx is not None:
            return ctx
        with self._lock:
            ctx = self._contexts.get(key)
            if ctx is None:
                ctx = self._build(path, cert)
                self._contexts[key] = ctx
        return ctx

    def _build(self, path: str | None, cert: _Cert) -> ssl.SSLContext:
        if path is not None:
            if not os.path.exists(path):
                msg = f"Could not find a suitable TLS CA certificate bundle, invalid path: {path}"
                raise OSError(msg)
            if os.path.isdir(path):
                ctx = create_context(self._source, capath=path)
            else:
                ctx = create_context(self._source, cafile=path)
        elif self._own_ctx:
            ctx = create_context(
                self._source, cafile=self._cafile, capath=self._capath, cadata=self._cadata
            )
        else:
            msg = (
                "a client certificate (cert=) with a caller-supplied ssl_context: load it into "
                "that context with ctx.load_cert_chain() instead, so no other trust is implied"
            )
            raise PinConfigurationError(msg)
        if cert is not None:
            certfile, keyfile = (cert, None) if isinstance(cert, str) else cert
            ctx.load_cert_chain(certfile, keyfile)
        return ctx

    def cert_verify(self, conn: Any, url: str, verify: _Verify, cert: _Cert) -> None:
        """Let requests check paths, then keep it from reloading CAs into the pinned context."""
        super().cert_verify(conn, url, verify, cert)  # type: ignore[no-untyped-call]
        conn_kw = getattr(conn, "conn_kw", {})
        if getattr(conn_kw.get("ssl_context"), "_tlspin", None) is not None:
            # The trust store and client certificate already live in the pinned context;
            # urllib3 would load these files into it again on every new connection.
            conn.ca_certs = None
            conn.ca_cert_dir = None
            conn.cert_file = None
            conn.key_file = None


    @property
    def explicit_trust(self) -> bool:
        """True if the adapter was given its trust store (CA options or a pinned context)."""
        return not self._own_ctx or any(
            x is not None for x in (self._cafile, self._capath, self._cadata)
        )

    def send(  # noqa: PLR0917 - HTTPAdapter.send's own signature
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Send; a TLS error under the environment's CA bundle names the variable."""
        try:
            return super().send(request, stream, timeout, verify, cert, proxies)
        except SSLError as exc:
            found = _environment_bundle()
            if found is None or not isinstance(verify, str) or verify != found[1]:
                raise
            name, path = found
            msg = (
                f"{exc} (the CA bundle was {path}, from {name}: requests puts it in place of "
                "the session's trust store; give tlspin's session cafile= (or verify=<path>) to "
                f"choose the trust store yourself, or unset {name})"
            )
            raise SSLError(msg, request=request) from exc


def _environment_bundle() -> tuple[str, str] | None:
    """The CA bundle requests takes from the environment, as (variable, path), if any."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        value = os.environ.get(name)
        if value:
            return name, value
    return None


class _PinnedSession(requests.Session):
    """A ``Session`` whose ``https`` prefixes only take pinning adapters.

    ``session.mount("https://", HTTPAdapter(max_retries=...))`` is the usual way to add retries,
    and on a plain ``Session`` it silently replaces the pinning adapter, pins and all.
    """

    def __init__(self, adapter: PinningAdapter) -> None:
        self._tlspin_init = True  # requests.Session.__init__ mounts a plain adapter on https://
        super().__init__()
        self._tlspin_init = False
        self._tlspin_main = adapter
        self.mount("https://", adapter)

    def mount(self, prefix: str | bytes, adapter: BaseAdapter) -> None:
        """Mount *adapter*; refuse one that would carry ``https`` URLs without pins."""
        text = prefix.decode("latin-1") if isinstance(prefix, bytes) else prefix
        if (
            text.lower().startswith("https:")
            and not isinstance(adapter, PinningAdapter)
            and not getattr(self, "_tlspin_init", False)
        ):
            msg = (
                f"refused to mount a {type(adapter).__name__} on {prefix!r}: it would carry "
                "HTTPS requests without pins; mount a tlspin.integrations.requests.PinningAdapter "
                "(it takes HTTPAdapter's arguments, e.g. max_retries=)"
            )
            raise PinConfigurationError(msg)
        super().mount(prefix, adapter)

    def merge_environment_settings(
        self,
        url: str | bytes | None,
        proxies: Any,
        stream: bool | None,
        verify: Any,
        cert: Any,
    ) -> _Settings:
        """Merge as requests does, except that an explicit trust store beats the environment.

        requests replaces ``verify=True`` (or unset) with ``REQUESTS_CA_BUNDLE`` or
        ``CURL_CA_BUNDLE`` whenever one is set, even over a ``verify`` path set on the session,
        and so over the CA file given to tlspin: the correctly pinned request then failed
        with a misleading certificate error.
        """
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if not self.trust_env or _environment_bundle() is None:
            return settings
        if verify is None and isinstance(self.verify, str):
            settings["verify"] = self.verify  # the session's own path, set by the caller
        elif (verify is True or (verify is None and self.verify is True)) and (
            self._tlspin_adapter(url.decode("latin-1") if isinstance(url, bytes) else url or "")
            .explicit_trust
        ):
            settings["verify"] = True  # the adapter's pinned context and its trust store
        return settings

    def _tlspin_adapter(self, url: str) -> PinningAdapter:
        """The pinning adapter for *url*, or for https:// (where a redirect may go)."""
        with contextlib.suppress(requests.exceptions.InvalidSchema):
            adapter = self.get_adapter(url)
            if isinstance(adapter, PinningAdapter):
                return adapter
        return self._tlspin_main


def session(
    policy: PinPolicy | PolicySource | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    cafile: str | None = None,
    capath: str | None = None,
    cadata: str | bytes | None = None,
    proxy_ssl_context: ssl.SSLContext | None = None,
    proxy_cafile: str | None = None,
    **adapter_kwargs: Any,
) -> requests.Session:
    """Return a ``requests.Session`` with a :class:`PinningAdapter` mounted on ``https://``.

    Arguments are those of :class:`PinningAdapter`. Mounting any other adapter on an ``https``
    prefix of this session raises :class:`tlspin.PinConfigurationError` (it would bypass the
    pins); mount another :class:`PinningAdapter` instead.

    A trust store given here (``cafile=``, ``capath=``, ``cadata=``, ``ssl_context=``), or a
    ``verify=<path>`` set on the session, wins over ``REQUESTS_CA_BUNDLE`` and
    ``CURL_CA_BUNDLE``; without one, those variables replace the system store as in requests,
    and a TLS error then names the variable.

    .. versionchanged:: Unreleased
        An explicit trust store wins over ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``.

    Example::

        s = tlspin.integrations.requests.session(policy, cafile="ca.pem")
        response = s.get("https://api.example.com/")
        print(response.status_code)
    """
    adapter = PinningAdapter(
        policy,
        ssl_context=ssl_context,
        cafile=cafile,
        capath=capath,
        cadata=cadata,
        proxy_ssl_context=proxy_ssl_context,
        proxy_cafile=proxy_cafile,
        **adapter_kwargs,
    )
    return _PinnedSession(adapter)
