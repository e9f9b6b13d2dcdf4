"""Pinning for Twisted (treq, ``Agent``, Scrapy and any ``optionsForClientTLS`` client).

Twisted does TLS through pyOpenSSL, not Python's :mod:`ssl`, so :func:`tlspin.pin_context`
cannot reach it. This module checks pins on each pyOpenSSL ``Connection`` instead, with the
engine's guarantees:

* **the verified chain**: the chain OpenSSL built to a trusted root
  (``Connection.get_verified_chain()``), never what the server sent;
* **before the first application byte**: the check runs in the connection's info callback when
  OpenSSL reports ``SSL_CB_HANDSHAKE_DONE``, inside ``do_handshake()``, while Twisted still holds
  every application write in its send buffer; a refusal calls the TLS protocol's
  ``failVerification()``, which shuts TLS down and aborts the TCP connection, so the buffered
  request is never encrypted. The callback never raises: pyOpenSSL would print the exception
  and the connection would go ahead;
* **CA and host-name checks kept**: the wrapped connection creator (Twisted's own, by default
  ``BrowserLikePolicyForHTTPS``) still verifies the chain and the name; pins only add to that;
* **resumption**: a resumed session has no verified chain (and pyOpenSSL verify callbacks do not
  run at all), so it passes only if the leaf's own key is pinned or that leaf passed a full check
  for the host earlier (:func:`tlspin.verify.check_resumed`);
* **creators that do not verify**: Scrapy's default (``DOWNLOAD_VERIFY_CERTIFICATES = False``)
  and any creator this module cannot prove verifies hand over an unverified chain. Only the
  leaf is proven there (its key signed the handshake), so on a pinned host only a pin of the
  leaf's own key counts, as for a ``CERT_NONE`` context under :func:`tlspin.inject`.

Deny pins, report-only rules, :class:`tlspin.Violation` for the policy's observers and policy
sources (:class:`tlspin.BundleUpdater`) work as everywhere else.

treq and ``Agent``::

    from twisted.internet import reactor
    from tlspin.integrations.twisted import agent

    treq.get("https://api.example.com/", agent=agent(reactor, policy))

Requires pyOpenSSL 25.3 or newer (``Connection.set_info_callback``): the check is installed on
each connection, never on a shared ``Context``, which pyOpenSSL 26.2 and newer refuse to change
once a connection has used it. Twisted before 26.4 checks the host name in the context's info
callback; a connection's own info callback replaces it, so the context's is called first.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import Certificate, trustRootFromCertificates
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from tlspin.exceptions import PinConfigurationError
from tlspin.integrations import _twisted_core as _core

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime
    from twisted.protocols.tls import TLSMemoryBIOProtocol
    from twisted.web.client import HTTPConnectionPool

    from tlspin._state import PolicySource, _PinState
    from tlspin.policy import PinPolicy

__all__ = ["PinnedPolicyForHTTPS", "agent", "pin_creator", "trust_root"]


@implementer(IOpenSSLClientConnectionCreator)
class _PinnedCreator:
    """A connection creator that adds the pin check to each connection of an inner creator."""

    def __init__(
        self, inner: object, *, host: str, port: int | None, state: _PinState
    ) -> None:
        self._inner = inner
        self._host = host
        self._port = port
        self._state = state

    def clientConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:  # noqa: N802, N803
        """Create the inner creator's connection and pin it before its handshake starts."""
        make = getattr(self._inner, "clientConnectionForTLS", None)
        if make is None:
            msg = (
                f"cannot pin connections of {type(self._inner).__qualname__}: expected an "
                "IOpenSSLClientConnectionCreator (with clientConnectionForTLS)"
            )
            raise PinConfigurationError(msg)
        conn: SSL.Connection = make(tlsProtocol)
        _core.arm(
            conn, tlsProtocol, creator=self._inner, host=self._host, port=self._port,
            state=self._state,
        )
        return conn


def _host_text(hostname: bytes | str) -> str:
    if isinstance(hostname, bytes):
        try:
            hostname = hostname.decode("ascii")
        except UnicodeDecodeError:
            msg = f"expected an ASCII (IDNA) host name, found {hostname!r}"
            raise PinConfigurationError(msg) from None
    return hostname.strip("[]")


def pin_creator(
    creator: object,
    policy: PinPolicy | PolicySource,
    *,
    hostname: bytes | str,
    port: int | None = None,
) -> Any:
    """Wrap a client connection creator (e.g. from ``optionsForClientTLS``) so it checks pins.

    For Twisted clients other than HTTP: ``SSL4ClientEndpoint``, ``connectSSL``,
    ``startTLS``. *hostname* is the name whose pins apply (the creator's own name).

    Example::

        creator = pin_creator(optionsForClientTLS("mqtt.example.com"), policy,
                              hostname="mqtt.example.com")
        endpoint = SSL4ClientEndpoint(reactor, "mqtt.example.com", 8883, creator)
    """
    state = _core.state_for(policy)
    return _PinnedCreator(creator, host=_host_text(hostname), port=port, state=state)


@implementer(IPolicyForHTTPS)
class PinnedPolicyForHTTPS:
    """An ``IPolicyForHTTPS`` for ``Agent`` and treq that checks pins on top of another policy.

    Args:
        policy: the policy, or a source of policies (:class:`tlspin.BundleUpdater`).
        inner: the policy that makes (and verifies) the connections; by default
            ``BrowserLikePolicyForHTTPS(trustRoot=trust_root)``, which checks the chain against
            the trust root and the host name. To cache creators, wrap *inner* in
            ``HostnameCachingHTTPSPolicy``, not this object.
        trust_root: trust root for the default inner policy (see :func:`trust_root`); the
            platform's trust store when omitted.

    Public constructor.
    """

    def __init__(
        self,
        policy: PinPolicy | PolicySource,
        *,
        inner: IPolicyForHTTPS | None = None,
        trust_root: Any = None,
    ) -> None:
        if inner is not None and trust_root is not None:
            msg = "pass trust_root only without inner: the inner policy has its own trust root"
            raise PinConfigurationError(msg)
        self._state = _core.state_for(policy)
        self._inner: Any = (
            inner if inner is not None else BrowserLikePolicyForHTTPS(trust_root)  # type: ignore[no-untyped-call]
        )

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:  # noqa: N802
        """Return the inner policy's creator for *hostname*, with the pin check added."""
        creator = self._inner.creatorForNetloc(hostname, port)
        return _PinnedCreator(creator, host=_host_text(hostname), port=port, state=self._state)


def trust_root(cafile: str | Path) -> Any:
    """Read every certificate of a PEM bundle into a Twisted trust root."""
    data = Path(cafile).read_bytes()
    marker = b"-----END CERTIFICATE-----"
    pems = [part + marker for part in data.split(marker) if b"-----BEGIN CERTIFICATE-----" in part]
    if not pems:
        msg = f"expected PEM certificates in {cafile}, found none"
        raise PinConfigurationError(msg)
    return trustRootFromCertificates([Certificate.loadPEM(p) for p in pems])  # type: ignore[no-untyped-call]


def agent(
    reactor: IReactorTime,
    policy: PinPolicy | PolicySource,
    *,
    cafile: str | Path | None = None,
    pool: HTTPConnectionPool | None = None,
    inner: IPolicyForHTTPS | None = None,
) -> Agent:
    """Return a Twisted ``Agent`` whose HTTPS connections check pins (give it to treq).

    Args:
        reactor: the reactor.
        policy: the policy, or a source of policies.
        cafile: trust this PEM bundle instead of the platform's trust store.
        pool: a connection pool to share.
        inner: another ``IPolicyForHTTPS`` to wrap (instead of the default browser-like one).
    """
    root = trust_root(cafile) if cafile is not None else None
    return Agent(  # type: ignore[no-untyped-call]
        reactor, contextFactory=PinnedPolicyForHTTPS(policy, inner=inner, trust_root=root),
        pool=pool,
    )
