"""The pin check on pyOpenSSL connections made by Twisted: shared by the explicit integration
(:mod:`tlspin.integrations.twisted`) and the process-wide one that :func:`tlspin.inject` installs.

It imports only pyOpenSSL and ``twisted.internet._sslverify`` (never ``twisted.web``), so the
process-wide hook can install itself right after Twisted's TLS module loads.

How a connection is checked:

* the check is installed on each pyOpenSSL ``Connection`` (``Connection.set_info_callback``,
  pyOpenSSL 25.3+) before its handshake starts, never on a ``Context``: pyOpenSSL 26.2 and newer
  refuse to change a context once a connection has used it, and contexts may be shared;
* a connection's info callback replaces its context's, where Twisted before 26.4 sends SNI and
  checks the host name; that callback is called first (chained);
* at ``SSL_CB_HANDSHAKE_DONE`` the verified chain is checked. That is inside ``do_handshake()``,
  while Twisted still holds every application write in its buffer. A refusal calls
  ``failVerification()``, which shuts TLS down and aborts the TCP connection: the buffered
  request is never encrypted;
* the callback never raises: pyOpenSSL only prints an exception from a callback, and the
  connection would go ahead (measured). Every failure, a bug included, refuses instead.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from OpenSSL import SSL, crypto
from twisted.internet._sslverify import ClientTLSOptions
from twisted.python.failure import Failure

from tlspin import _state
from tlspin._leafonly import check_unverified
from tlspin._state import PolicySource, _PinState
from tlspin.exceptions import PinConfigurationError, PinningUnavailableError, PinVerificationError
from tlspin.policy import PinPolicy, PinRule
from tlspin.verify import check, check_resumed

if TYPE_CHECKING:
    from twisted.protocols.tls import TLSMemoryBIOProtocol

if not hasattr(SSL.Connection, "set_info_callback"):  # Defensive: the extra requires 25.3.
    _msg = (
        "tlspin's Twisted integration needs pyOpenSSL 25.3 or newer "
        "(Connection.set_info_callback); install it with: pip install 'tlspin[twisted]'"
    )
    raise ImportError(_msg)

_InfoCallback = Callable[[SSL.Connection, int, int], object]


class Armed:
    """What the info callback of one pinned connection needs to decide it."""

    __slots__ = ("chained", "host", "injected", "port", "protocol", "state", "verified")

    def __init__(
        self,
        *,
        host: str,
        port: int | None,
        state: _PinState,
        verified: bool,
        protocol: TLSMemoryBIOProtocol,
        chained: _InfoCallback | None,
    ) -> None:
        self.host = host
        self.port = port
        self.state = state
        # An explicit wrapper's policy leaves the hosts it does not cover to the injected one.
        self.injected = _state.INJECTED.state if state.explicit else None
        self.verified = verified
        # Weak: the protocol holds the connection, which holds this object through its callback.
        self.protocol: Callable[[], TLSMemoryBIOProtocol | None] = weakref.ref(protocol)
        self.chained = chained

    def peer_port(self) -> int | None:
        if self.port is not None:
            return self.port
        protocol = self.protocol()
        transport: Any = getattr(protocol, "transport", None)
        try:  # the transport exists only once the TCP connection is made
            return int(transport.getPeer().port)
        except Exception:  # noqa: BLE001 - the port is informational only
            return None


# Connections that carry a check: an explicit pin replaces the process-wide one (tlspin.inject)
# rather than adding a second check under another policy; for a host the explicit policy does
# not cover, its Armed falls back to the injected state (pinning only adds).
_ARMED: weakref.WeakKeyDictionary[SSL.Connection, Armed] = weakref.WeakKeyDictionary()
_ARMED_LOCK = threading.Lock()


def state_for(policy: PinPolicy | PolicySource) -> _PinState:
    """The per-integration pin state (policy or source, and leaves that passed a full check)."""
    if not isinstance(policy, PinPolicy | PolicySource):
        msg = f"expected a PinPolicy or a policy source, found {type(policy).__name__}"
        raise PinConfigurationError(msg)
    return _PinState(policy)


def _der(cert: crypto.X509) -> bytes:
    # OpenSSL's own encoding of the certificate it holds: never through cryptography's parser,
    # which refuses BER that OpenSSL accepted and verified (the check must still decide).
    return crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)


def _covering(
    state: _PinState, host: str
) -> tuple[PinPolicy, set[tuple[str, bytes]], tuple[PinRule, ...]]:
    policy, seen = state.current()
    if not policy.rules:
        return policy, seen, ()
    try:
        return policy, seen, policy.rules_for(host)
    except PinConfigurationError as exc:
        # A name the policy cannot canonicalise cannot be shown to be unpinned.
        msg = f"refused the connection to {host!r}: {exc}"
        raise PinningUnavailableError(msg, hostname=host, reason="bad-hostname") from None


def decide(conn: SSL.Connection, armed: Armed) -> None:
    """Check the handshake that just completed on *conn*; raise to refuse it.

    An explicit wrapper's policy decides for the hosts it covers; the injected policy (if any
    when the connection was armed) for the others: pinning only adds.
    """
    host = armed.host
    policy, seen, rules = _covering(armed.state, host)
    if not rules and armed.injected is not None:
        policy, seen, rules = _covering(armed.injected, host)
    if not rules:
        return
    leaf = conn.get_peer_certificate()
    if leaf is None:
        msg = f"refused the connection to {host}: the server presented no certificate"
        raise PinningUnavailableError(msg, hostname=host, reason="no-certificate")
    leaf_der = _der(leaf)
    port = armed.peer_port()

    def served() -> list[bytes]:
        return [_der(c) for c in conn.get_peer_cert_chain() or ()]

    if not armed.verified:
        # Nothing verified this chain: only the leaf is proven (its key signed the handshake),
        # so only a pin of the leaf's own key counts (the rule tlspin.inject applies to
        # CERT_NONE, with the same error).
        check_unverified(policy, host, leaf_der, port=port, served_chain=served)
        return
    chain = conn.get_verified_chain()
    if not chain:
        # A resumed session: OpenSSL keeps no verified chain, only the leaf.
        check_resumed(policy, host, leaf_der, seen, port=port)
        return
    ders = [_der(c) for c in chain]
    verdict = check(policy, host, ders, port=port, served_chain=served)
    _state.remember(seen, verdict.hostname, ders[0])


def _info_callback(armed: Armed) -> Callable[[SSL.Connection, int, int], None]:
    def callback(conn: SSL.Connection, where: int, ret: int) -> None:
        try:
            if armed.chained is not None:
                armed.chained(conn, where, ret)
            if where & SSL.SSL_CB_HANDSHAKE_DONE:
                decide(conn, armed)
        except BaseException as exc:  # noqa: BLE001 - never raise in a callback (module doc)
            refuse(armed, exc)

    return callback


def refuse(armed: Armed, exc: BaseException) -> None:
    """Fail the connection's verification with *exc* (wrapped unless it is a pin error)."""
    if not isinstance(exc, PinVerificationError):
        msg = f"refused the connection to {armed.host}: the pin check failed with {exc!r}"
        error = PinningUnavailableError(msg, hostname=armed.host, reason="check-failed")
        error.__cause__ = exc
        exc = error
    protocol: Any = armed.protocol()
    if protocol is not None:
        protocol.failVerification(Failure(exc))  # type: ignore[no-untyped-call]


def _context_callback(conn: SSL.Connection) -> _InfoCallback | None:
    """The context's info callback, which the connection's own one would silently replace.

    pyOpenSSL keeps the C callback it registered as ``Context._info_callback``; calling that
    pointer runs the Python callback behind it (Twisted < 26.4: SNI and the host-name check).
    """
    pointer = getattr(conn.get_context(), "_info_callback", None)
    if pointer is None:
        return None

    def chained(c: SSL.Connection, where: int, ret: int) -> object:
        return pointer(c._ssl, where, ret)

    return chained


def verifies(creator: object, conn: SSL.Connection) -> bool:
    """True when *creator* is known to verify the chain to a trusted root and the host name.

    Only Twisted's own ``ClientTLSOptions`` (what ``optionsForClientTLS`` returns) qualifies. A
    subclass may replace its verify callback (Scrapy's default accepts any chain), and an unknown
    creator proves nothing: those get the leaf-only rule.
    """
    if type(creator) is not ClientTLSOptions:
        return False
    mode = conn.get_verify_mode() | conn.get_context().get_verify_mode()
    if not mode & SSL.VERIFY_PEER:
        return False
    # Twisted ≥ 26.4 sets a verify callback per connection that keeps OpenSSL's verdict and adds
    # the host-name check. Before 26.4 the context's flags come from CertificateOptions(verify=
    # True), which optionsForClientTLS always passes.
    options = getattr(getattr(creator, "_createConnection", None), "__self__", None)
    return options is None or bool(getattr(options, "verify", False))


def arm(
    conn: SSL.Connection,
    protocol: TLSMemoryBIOProtocol,
    *,
    creator: object,
    host: str,
    port: int | None,
    state: _PinState,
) -> None:
    """Install the pin check on *conn*, replacing one installed earlier (process-wide)."""
    with _ARMED_LOCK:
        previous = _ARMED.get(conn)
        armed = Armed(
            host=host,
            port=port,
            state=state,
            verified=verifies(creator, conn),
            protocol=protocol,
            chained=previous.chained if previous is not None else _context_callback(conn),
        )
        _ARMED[conn] = armed
    conn.set_info_callback(_info_callback(armed))


# -- the process-wide hook (tlspin.inject) ------------------------------------------------------


class _Hook:
    """Twisted's own method while the process-wide check is installed."""

    original: Callable[..., SSL.Connection] | None = None
    lock = threading.Lock()


def _client_connection(
    self: ClientTLSOptions,
    tlsProtocol: TLSMemoryBIOProtocol,  # noqa: N803 - Twisted's parameter name
) -> SSL.Connection:
    original = _Hook.original
    assert original is not None  # Defensive: installed only after saving the original.
    conn = original(self, tlsProtocol)
    state = _state.INJECTED.state  # read per connection: inject() may replace the policy
    if state is not None:
        arm(conn, tlsProtocol, creator=self, host=self._hostnameASCII, port=None, state=state)
    return conn


def install() -> None:
    """Check every connection a ``ClientTLSOptions`` makes (treq, Agent, Scrapy…) against
    the policy :func:`tlspin.inject` put in force.

    Every Twisted TLS client with a host name goes through ``optionsForClientTLS``'s creator,
    ``ClientTLSOptions``, or a subclass that calls it (Scrapy's). Idempotent.
    """
    with _Hook.lock:
        if _Hook.original is None:
            _Hook.original = ClientTLSOptions.clientConnectionForTLS
            ClientTLSOptions.clientConnectionForTLS = _client_connection  # type: ignore[method-assign]


def uninstall() -> None:
    """Undo :func:`install`: new connections are no longer checked process-wide."""
    with _Hook.lock:
        if _Hook.original is not None:
            ClientTLSOptions.clientConnectionForTLS = _Hook.original  # type: ignore[method-assign]
            _Hook.original = None
