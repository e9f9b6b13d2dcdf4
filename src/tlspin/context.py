"""The one seam: an :class:`ssl.SSLContext` whose sockets check pins before any application byte.

:func:`pin_context` sets the context's ``sslsocket_class`` and ``sslobject_class`` (public,
documented hooks) to subclasses whose ``do_handshake()`` checks the verified chain right after
OpenSSL finishes. Every Python HTTPS client creates its TLS connections through one of these two
classes: blocking sockets (http.client, urllib3, requests, httpx sync) use ``SSLSocket``; memory
BIOs (asyncio, anyio, aiohttp, httpx async, and TLS inside TLS for HTTPS proxies) use
``SSLObject``. A failed check raises :class:`~tlspin.PinMismatchError`, an
:class:`ssl.SSLCertVerificationError`, so each client maps it to its usual TLS error.

Every I/O method is guarded too (``send``, ``sendall``, ``sendfile``, ``write``, ``recv``,
``recv_into``, ``read``…): with ``do_handshake_on_connect=False`` OpenSSL runs the handshake
implicitly inside the first ``SSL_write`` and ``do_handshake()`` is never called; and after a
handshake that failed inside ``connect()``, ``ssl.SSLSocket`` would carry bytes in clear.
"""

from __future__ import annotations

import _ssl
import ssl
import threading
from typing import Any, Protocol, runtime_checkable

from tlspin.exceptions import PinConfigurationError, PinningUnavailableError
from tlspin.policy import PinPolicy
from tlspin.verify import check_resumed

__all__ = ["PolicySource", "create_context", "pin_context", "policy_of"]

_DER = _ssl.ENCODING_DER


@runtime_checkable
class PolicySource(Protocol):
    """Anything that can say which policy is in force now (e.g. :class:`tlspin.BundleUpdater`).

    A context pinned to a source reads ``current_policy()`` at every handshake, so new
    connections pick up new pins without rebuilding contexts.
    """

    def current_policy(self) -> PinPolicy:
        """Return the policy to apply to the next handshake."""
        ...


class _PinState:
    """Per-context pin state: the policy (or its source) and leaves that passed a full check."""

    __slots__ = ("_lock", "_policy", "_seen", "_seen_policy", "_source")

    def __init__(self, policy: PinPolicy | PolicySource) -> None:
        self._source = None if isinstance(policy, PinPolicy) else policy
        self._policy = policy if isinstance(policy, PinPolicy) else None
        self._seen: set[tuple[str, bytes]] = set()
        self._seen_policy: PinPolicy | None = None
        self._lock = threading.Lock()

    def policy(self) -> PinPolicy:
        if self._policy is not None:
            return self._policy
        assert self._source is not None
        policy = self._source.current_policy()
        if not isinstance(policy, PinPolicy):
            # A buggy source (e.g. returning None) must refuse clearly, not fail on an attribute.
            msg = (
                f"refused the connection: the policy source {type(self._source).__name__} "
                f"returned {type(policy).__name__}, expected a PinPolicy"
            )
            raise PinningUnavailableError(msg, reason="no-policy")
        return policy

    def seen(self, policy: PinPolicy) -> set[tuple[str, bytes]]:
        # Leaves remembered under an older policy must not vouch for sessions under a new one.
        if self._seen_policy is not policy:
            with self._lock:
                if self._seen_policy is not policy:
                    self._seen = set()
                    self._seen_policy = policy
        return self._seen

    def remember(self, policy: PinPolicy, hostname: str, leaf: bytes) -> None:
        seen = self.seen(policy)
        if len(seen) > 10_000:
            seen.clear()
        seen.add((hostname, leaf))


def _enforce(obj: ssl.SSLSocket | ssl.SSLObject, port: int | None) -> None:
    """Check the just-completed handshake of *obj*; raise to refuse it."""
    context = obj.context
    state: _PinState | None = getattr(context, "_tlspin", None)
    if state is None:  # Defensive: the classes are only installed together with the state.
        return
    policy = state.policy()
    if not policy.rules:
        return
    hostname = obj.server_hostname
    if hostname is None:
        msg = (
            "refused a TLS connection without a server name: pins are looked up by host name, "
            "so a pinned context needs server_hostname (and check_hostname=True)"
        )
        raise PinningUnavailableError(msg, reason="no-hostname")
    try:
        rules = policy.rules_for(hostname)
    except PinConfigurationError as exc:
        # A name the policy cannot even canonicalise cannot be shown to be unpinned.
        msg = f"refused the connection to {hostname!r}: {exc}"
        raise PinningUnavailableError(msg, hostname=hostname, reason="bad-hostname") from None
    if not rules:
        return
    if context.verify_mode != ssl.CERT_REQUIRED or not context.check_hostname:
        # Something (often the HTTP client itself) switched verification off after pinning.
        # With CERT_NONE the "verified" chain is just what the server sent, so pins mean nothing.
        msg = (
            f"refused the connection to {hostname}: pinning needs CA and hostname verification "
            f"(expected verify_mode=CERT_REQUIRED and check_hostname=True, found "
            f"{ssl.VerifyMode(context.verify_mode).name} and "
            f"check_hostname={context.check_hostname})"
        )
        raise PinningUnavailableError(msg, hostname=hostname, reason="verification-off")
    # The C object's chain API: 3.11 and 3.12 have no public get_verified_chain().
    sslobj: Any = obj._sslobj  # type: ignore[union-attr]
    chain = sslobj.get_verified_chain()
    if not chain:
        # A resumed session: OpenSSL keeps no verified chain, only the leaf.
        leaf = obj.getpeercert(binary_form=True)
        if leaf is None:
            msg = f"refused the connection to {hostname}: the server presented no certificate"
            raise PinningUnavailableError(msg, hostname=hostname, reason="no-certificate")
        check_resumed(policy, hostname, leaf, state.seen(policy), port=port)
        return
    ders = [cert.public_bytes(_DER) for cert in chain]

    def served() -> list[bytes]:
        return [c.public_bytes(_DER) for c in (sslobj.get_unverified_chain() or ())]

    policy.check(hostname, ders, port=port, served_chain=served)
    state.remember(policy, hostname, ders[0])


class PinnedSSLSocket(ssl.SSLSocket):
    """An :class:`ssl.SSLSocket` that checks pins when its handshake completes.

    Every method that moves application bytes first makes sure the check ran, and refuses to
    carry bytes in clear on a socket whose TLS handshake never completed.
    """

    _tlspin_ok = False
    _tlspin_error: BaseException | None = None

    @property
    def tlspin_checked(self) -> bool:
        """True once the pin check passed for this connection."""
        return self._tlspin_ok

    def do_handshake(self, block: bool = False) -> None:
        """Run the TLS handshake, then the pin check."""
        if self._tlspin_error is not None:
            raise self._tlspin_error
        super().do_handshake(block)
        if not self._tlspin_ok and not self.server_side:
            try:
                port = self.getpeername()[1]
            except (OSError, IndexError):
                port = None
            try:
                _enforce(self, port)
            except Exception as exc:
                # Sticky: every later call on this connection raises the same refusal. A
                # KeyboardInterrupt or SystemExit (from an observer) is not kept: the check did
                # not finish, so the next read or write runs it again.
                self._tlspin_error = exc
                raise
            self._tlspin_ok = True

    def _tlspin_guard(self) -> None:
        if self._tlspin_error is not None:
            raise self._tlspin_error
        if self._tlspin_ok or self.server_side:
            return
        # _sslobj and _connected are ssl.SSLSocket internals (typeshed declares neither);
        # _create() itself calls recv() before it sets _connected.
        if self._sslobj is not None:  # type: ignore[attr-defined]
            self.do_handshake()
        elif getattr(self, "_connected", False):
            # A failed handshake inside connect() drops the TLS layer (ssl.SSLSocket sets
            # _sslobj to None) but keeps the TCP connection: the stdlib would now send and
            # receive in clear, to and from whoever answered.
            msg = (
                f"refused to send or receive in clear on a TLS socket to {self.server_hostname}: "
                "its handshake failed or was never checked"
            )
            raise PinningUnavailableError(msg, hostname=self.server_hostname, reason="no-handshake")

    def send(self, data: Any, flags: int = 0) -> int:
        """Send, after making sure the pin check ran."""
        self._tlspin_guard()
        return super().send(data, flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Send all, after making sure the pin check ran."""
        self._tlspin_guard()
        super().sendall(data, flags)

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        """Send a file, after making sure the pin check ran (never os.sendfile in clear)."""
        self._tlspin_guard()
        return super().sendfile(file, offset, count)

    def sendto(self, data: Any, flags_or_addr: Any, addr: Any = None) -> int:
        """Refused on TLS sockets, as by the stdlib; never sends in clear before a check."""
        self._tlspin_guard()
        return super().sendto(data, flags_or_addr, addr)

    def write(self, data: Any) -> int:
        """Write, after making sure the pin check ran."""
        self._tlspin_guard()
        return super().write(data)

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        """Read, after making sure the pin check ran (a MITM's bytes are never returned)."""
        self._tlspin_guard()
        return super().read(len, buffer)

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        """Receive, after making sure the pin check ran."""
        self._tlspin_guard()
        return super().recv(buflen, flags)

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        """Receive into a buffer, after making sure the pin check ran."""
        self._tlspin_guard()
        return super().recv_into(buffer, nbytes, flags)

    def recvfrom(self, buflen: int = 1024, flags: int = 0) -> tuple[bytes, Any]:
        """Refused on TLS sockets, as by the stdlib; never reads in clear before a check."""
        self._tlspin_guard()
        return super().recvfrom(buflen, flags)

    def recvfrom_into(
        self, buffer: Any, nbytes: int | None = None, flags: int = 0
    ) -> tuple[int, Any]:
        """Refused on TLS sockets, as by the stdlib; never reads in clear before a check."""
        self._tlspin_guard()
        return super().recvfrom_into(buffer, nbytes, flags)


class PinnedSSLObject(ssl.SSLObject):
    """An :class:`ssl.SSLObject` (memory BIO: asyncio, anyio, TLS-in-TLS) that checks pins."""

    _tlspin_ok = False
    _tlspin_error: BaseException | None = None

    @property
    def tlspin_checked(self) -> bool:
        """True once the pin check passed for this connection."""
        return self._tlspin_ok

    def do_handshake(self) -> None:
        """Run the TLS handshake step, then the pin check once it completes."""
        if self._tlspin_error is not None:
            raise self._tlspin_error
        super().do_handshake()
        if not self._tlspin_ok and not self.server_side:
            try:
                _enforce(self, None)
            except Exception as exc:  # sticky, as PinnedSSLSocket.do_handshake
                self._tlspin_error = exc
                raise
            self._tlspin_ok = True

    def _tlspin_guard(self) -> None:
        if self._tlspin_error is not None:
            raise self._tlspin_error
        if not self._tlspin_ok and not self.server_side:
            self.do_handshake()

    def write(self, data: Any) -> int:
        """Write, after making sure the pin check ran."""
        self._tlspin_guard()
        return super().write(data)

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        """Read, after making sure the pin check ran."""
        self._tlspin_guard()
        return super().read(len, buffer)


def _inner_context(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """Return the context whose wrap methods really create the TLS objects."""
    cls = type(ctx)
    if cls.wrap_socket is ssl.SSLContext.wrap_socket and cls.wrap_bio is ssl.SSLContext.wrap_bio:
        return ctx
    inner = getattr(ctx, "_ctx", None)
    if cls.__module__.startswith("truststore") and isinstance(inner, ssl.SSLContext):
        # truststore delegates to an inner stdlib context; hooking the outer one would
        # silently check nothing (measured: the request went through).
        return _inner_context(inner)
    msg = (
        f"cannot pin a {cls.__module__}.{cls.__qualname__}: it overrides wrap_socket/wrap_bio, "
        "so the pin check could be skipped silently; pin the stdlib ssl.SSLContext it wraps"
    )
    raise PinConfigurationError(msg)


def pin_context(ctx: ssl.SSLContext, policy: PinPolicy | PolicySource) -> ssl.SSLContext:
    """Pin an existing client context in place and return it.

    CA and hostname verification stay on: a context with ``CERT_NONE`` or
    ``check_hostname=False`` is refused when the policy has rules, and the check refuses the
    connection if verification is switched off later.

    Raises:
        PinConfigurationError: the context cannot be pinned safely.
    """
    if not isinstance(ctx, ssl.SSLContext):
        msg = f"expected an ssl.SSLContext, found {type(ctx).__name__}"
        raise PinConfigurationError(msg)
    if not isinstance(policy, PinPolicy | PolicySource):
        msg = f"expected a PinPolicy or a policy source, found {type(policy).__name__}"
        raise PinConfigurationError(msg)
    inner = _inner_context(ctx)
    classes: dict[str, type] = {}
    for attr, base, ours in (
        ("sslsocket_class", ssl.SSLSocket, PinnedSSLSocket),
        ("sslobject_class", ssl.SSLObject, PinnedSSLObject),
    ):
        current = getattr(inner, attr)
        if current is base:
            classes[attr] = ours
        elif issubclass(current, ours):
            classes[attr] = current  # already pinned (re-pinning keeps what was composed)
        elif current.__module__.startswith("truststore") and issubclass(current, base):
            # truststore (0.10+) installs its own classes that verify after the handshake;
            # put ours in front so the pins are checked after truststore's verification.
            classes[attr] = type(f"Pinned{current.__name__}", (ours, current), {})
        else:
            msg = (
                f"the context already uses a custom {attr} ({current.__qualname__}); "
                "tlspin will not replace it and cannot check pins through it"
            )
            raise PinConfigurationError(msg)
    has_rules = policy.rules if isinstance(policy, PinPolicy) else True
    if has_rules and (inner.verify_mode != ssl.CERT_REQUIRED or not inner.check_hostname):
        msg = (
            "pinning adds to CA and hostname verification and never replaces it: expected "
            "verify_mode=CERT_REQUIRED and check_hostname=True, found "
            f"{ssl.VerifyMode(inner.verify_mode).name} and check_hostname={inner.check_hostname}"
        )
        raise PinConfigurationError(msg)
    inner._tlspin = _PinState(policy)  # type: ignore[attr-defined]
    inner.sslsocket_class = classes["sslsocket_class"]
    inner.sslobject_class = classes["sslobject_class"]
    if inner is not ctx:
        ctx._tlspin = inner._tlspin  # type: ignore[attr-defined]
    return ctx


def policy_of(ctx: ssl.SSLContext) -> PinPolicy | None:
    """Return the policy currently in force for a pinned context, or None if it is not pinned."""
    state: _PinState | None = getattr(ctx, "_tlspin", None)
    return None if state is None else state.policy()


def create_context(
    policy: PinPolicy | PolicySource,
    *,
    cafile: str | None = None,
    capath: str | None = None,
    cadata: str | bytes | None = None,
) -> ssl.SSLContext:
    """Create a client context (TLS ≥ 1.2, CA and hostname verification on) that checks pins.

    Without *cafile*, *capath* or *cadata* the system trust store is used.
    """
    ctx = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=cafile, capath=capath, cadata=cadata
    )
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return pin_context(ctx, policy)
