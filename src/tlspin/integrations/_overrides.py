"""Under :func:`tlspin.inject`: the names urllib3 and httpcore use besides the TLS server name.

The ``ssl`` seam checks each connection against the pins of its TLS server name. Three client
options make something else decide what a connection is for; the explicit helpers
(:mod:`tlspin.integrations.urllib3`, :mod:`tlspin.integrations.httpx`) refuse them, and this
module, installed by :mod:`tlspin.integrations._process` when the library is imported, covers
them process-wide:

* urllib3 ``assert_hostname`` (requests_toolbelt's ``HostHeaderSSLAdapter`` connects to an IP
  address and matches the certificate against a host name): urllib3 matches that name itself
  after the handshake, so the pins of that name must hold for the connection's verified chain
  as well (:func:`tlspin.context.check_name`), before the first request byte;
* urllib3 ``ProxyManager(use_forwarding_for_https=True)`` sends an HTTPS request, headers and
  credentials included, to the proxy and makes no TLS connection to the origin: refused for an
  origin the injected policy covers;
* httpcore (httpx) pools connections by URL origin, whatever server name opened them: a request
  whose ``sni_hostname`` extension names another host than a pinned URL host would open a
  connection checked against that other name's pins, then serve plain requests to the pinned
  host. Refused before any connection is made.

Each patch reaches only into the module it patches, which has finished running when the patch
is installed (:mod:`tlspin.integrations._process` sees to that).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

from tlspin import _state
from tlspin.context import check_name, policy_of
from tlspin.exceptions import PinConfigurationError, PinningUnavailableError
from tlspin.integrations._common import same_host, server_name_refusal
from tlspin.policy import PinPolicy

__all__ = ["install", "uninstall"]


def _covers(policy: PinPolicy | None, host: str) -> bool:
    if policy is None or not policy.rules:
        return False
    try:
        return bool(policy.rules_for(host.strip("[]")))
    except PinConfigurationError:
        # A name the policy cannot canonicalise cannot be shown to be unpinned.
        return True


def _injected() -> PinPolicy | None:
    state = _state.INJECTED.state
    return None if state is None else state.policy()


def _pinned(host: str, ctx: object = None) -> bool:
    """True if the injected policy, or the policy of *ctx* (a pinned context), covers *host*."""
    if _covers(_injected(), host):
        return True
    return isinstance(ctx, ssl.SSLContext) and _covers(policy_of(ctx), host)


# -- urllib3 ------------------------------------------------------------------------------------


def _wrap_and_match(original: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(sock: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(sock, *args, **kwargs)
        name = kwargs.get("assert_hostname")
        server_name = kwargs.get("server_hostname")
        if isinstance(name, str) and name and not same_host(name, str(server_name or "")):
            # urllib3 matches the certificate against *name*, not the server name: the
            # connection stands for *name*, so that name's pins apply too (pinning only adds).
            try:
                check_name(result.socket, name)
            except BaseException:
                result.socket.close()
                raise
        return result

    wrapped.__wrapped__ = original  # type: ignore[attr-defined]
    return wrapped


def _validate_conn(original: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(self: Any, conn: Any) -> Any:
        proxy = getattr(self, "proxy", None)
        config = getattr(self, "proxy_config", None)
        if (
            proxy is not None
            and proxy.scheme == "https"
            and getattr(config, "use_forwarding_for_https", False)
            and _pinned(str(self.host))
        ):
            msg = (
                f"refused to send a request for https://{self.host} to the proxy "
                f"{proxy.host} in forwarding mode (use_forwarding_for_https=True): the proxy "
                "would receive it in clear and no TLS connection to the pinned origin would "
                "exist to check; use the default CONNECT tunnel"
            )
            raise PinningUnavailableError(msg, hostname=str(self.host), reason="proxy-forwarding")
        return original(self, conn)

    wrapped.__wrapped__ = original  # type: ignore[attr-defined]
    return wrapped


# -- httpcore -----------------------------------------------------------------------------------


def _check_sni(pool: Any, request: Any) -> None:
    sni = request.extensions.get("sni_hostname")
    if sni is None or request.url.scheme != b"https":
        return
    name = sni.decode("ascii", "replace") if isinstance(sni, bytes) else str(sni)
    host = request.url.host.decode("ascii", "replace")
    if same_host(name, host) or not _pinned(host, getattr(pool, "_ssl_context", None)):
        return
    import httpcore

    cause = server_name_refusal(host, name)
    raise httpcore.ConnectError(cause.message) from cause


def _handle_request(original: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(self: Any, request: Any) -> Any:
        _check_sni(self, request)
        return original(self, request)

    wrapped.__wrapped__ = original  # type: ignore[attr-defined]
    return wrapped


def _handle_async_request(original: Callable[..., Any]) -> Callable[..., Any]:
    async def wrapped(self: Any, request: Any) -> Any:
        _check_sni(self, request)
        return await original(self, request)

    wrapped.__wrapped__ = original  # type: ignore[attr-defined]
    return wrapped


# -- installing ----------------------------------------------------------------------------------

# target module → (object holding the attribute, attribute name, wrapper factory)
_PATCHES: dict[str, tuple[Callable[[], Any], str, Callable[..., Any]]] = {
    "urllib3.connection": (
        lambda: _module("urllib3.connection"),
        "_ssl_wrap_socket_and_match_hostname",
        _wrap_and_match,
    ),
    "urllib3.connectionpool": (
        lambda: _module("urllib3.connectionpool").HTTPSConnectionPool,
        "_validate_conn",
        _validate_conn,
    ),
    "httpcore._sync.connection_pool": (
        lambda: _module("httpcore._sync.connection_pool").ConnectionPool,
        "handle_request",
        _handle_request,
    ),
    "httpcore._async.connection_pool": (
        lambda: _module("httpcore._async.connection_pool").AsyncConnectionPool,
        "handle_async_request",
        _handle_async_request,
    ),
}


def _module(name: str) -> Any:
    import sys

    return sys.modules[name]


def install(target: str) -> None:
    """Patch *target* (a module name of :data:`_PATCHES`, already imported). Idempotent."""
    owner_of, name, factory = _PATCHES[target]
    owner = owner_of()
    current = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    if getattr(current, "_tlspin_patch", False):
        return
    patched = factory(current)
    patched._tlspin_patch = True
    setattr(owner, name, patched)


def uninstall(target: str) -> None:
    """Undo :func:`install` for *target*, unless someone patched the attribute since."""
    import sys

    owner_of, name, _ = _PATCHES[target]
    if target not in sys.modules:
        return
    owner = owner_of()
    current = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
    if current is not None and getattr(current, "_tlspin_patch", False):
        setattr(owner, name, current.__wrapped__)
