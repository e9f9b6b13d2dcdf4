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

The check decides on what each connection was created with (:mod:`tlspin._guard` records it),
and on the pin state of the context that created it, or else the one :func:`tlspin.inject`
installed for the whole process (:mod:`tlspin.injection`).
"""

from __future__ import annotations

import _ssl
import ssl
from typing import Any

from tlspin import _guard, _state
from tlspin._leafonly import check_unverified
from tlspin._state import PolicySource, Snapshot, _PinState
from tlspin.exceptions import PinConfigurationError, PinningUnavailableError
from tlspin.policy import PinPolicy, PinRule
from tlspin.verify import check, check_resumed

__all__ = ["PolicySource", "check_name", "create_context", "pin_context", "policy_of"]

_DER = _ssl.ENCODING_DER


def _refuse(hostname: str | None, reason: str, text: str) -> PinningUnavailableError:
    return PinningUnavailableError(
        f"refused the connection to {hostname}: {text}", hostname=hostname, reason=reason
    )


def _rules(
    state: _PinState, hostname: str | None
) -> tuple[PinPolicy, set[tuple[str, bytes]], tuple[PinRule, ...]]:
    """``(policy, remembered leaves, rules for hostname)`` under *state*; no rules: ``()``."""
    policy, seen = state.current()
    if not policy.rules:
        return policy, seen, ()
    if hostname is None:
        if not state.explicit:
            return policy, seen, ()
        msg = (
            "refused a TLS connection without a server name: pins are looked up by host name, "
            "so a pinned context needs server_hostname (and check_hostname=True)"
        )
        raise PinningUnavailableError(msg, reason="no-hostname")
    try:
        return policy, seen, policy.rules_for(hostname)
    except PinConfigurationError as exc:
        # A name the policy cannot even canonicalise cannot be shown to be unpinned.
        raise _refuse(hostname, "bad-hostname", str(exc)) from None


def _enforce(
    obj: ssl.SSLSocket | ssl.SSLObject, port: int | None, name: str | None = None
) -> None:
    """Check the just-completed handshake of *obj*; raise to refuse it.

    The pins are those of the TLS server name, or of *name* when the client authenticates
    another name than the one it sent (urllib3's ``assert_hostname``, see :func:`check_name`).

    What the connection verified comes from its snapshot, taken when OpenSSL created it
    (:mod:`tlspin._guard`), never from its context now: a context can be switched back on
    between the two.

    A context pinned with :func:`pin_context` is checked against its own policy; for a host that
    policy does not cover, the injected policy (if any) applies, as to any other context:
    pinning only adds.

    Under :func:`tlspin.inject` (a pin state that is not the context's own):

    * a connection with no server name is not covered. The name is chosen by the program,
      never by the network, so an attacker cannot make a connection drop it; and without it
      OpenSSL checks no host name (``check_hostname`` needs one), so the program already
      accepts any trusted certificate for any name and names no host a rule could apply to.
      Refusing would break connections to hosts no rule covers. A context pinned with
      ``pin_context`` still refuses such connections;
    * ``check_hostname=False`` with ``CERT_REQUIRED`` (botocore, urllib3 contexts that match
      the name themselves) is checked on the verified chain against the server name;
    * a connection made without CA verification (``CERT_NONE``, or unknown) passes only on a
      pin of the leaf's own key (:func:`tlspin._leafonly.check_unverified`).
    """
    snap = obj._tlspin_snapshot  # type: ignore[union-attr]
    if snap is None:
        snap = _state.unknown(obj.context)
    state = snap.state
    if state is None:
        return
    hostname = obj.server_hostname if name is None else name
    policy, seen, rules = _rules(state, hostname)
    if not rules and snap.injected is not None:
        # The context's own policy does not cover this host; the process-wide one may.
        state = snap.injected
        policy, seen, rules = _rules(state, hostname)
    if not rules:
        return
    assert hostname is not None  # Defensive: _rules() finds no rule without a name.
    if state.explicit and not (snap.verified and snap.hostname_checked):
        # Something (often the HTTP client itself) switched verification off on the context
        # before this connection was made: its chain and name were never checked.
        raise _refuse(
            hostname,
            "verification-off",
            "pinning adds to CA and hostname verification and never replaces it: expected "
            "this connection to be made with verify_mode=CERT_REQUIRED and "
            "check_hostname=True, found CA verification "
            f"{'on' if snap.verified else 'off (or switched while it was made)'} and "
            f"check_hostname={snap.hostname_checked}",
        )
    # The C object's chain API: 3.11 and 3.12 have no public get_verified_chain().
    sslobj: Any = obj._sslobj  # type: ignore[union-attr]

    def served() -> list[bytes]:
        return [c.public_bytes(_DER) for c in (sslobj.get_unverified_chain() or ())]

    if not snap.verified:
        leaf = obj.getpeercert(binary_form=True)
        if leaf is None:
            raise _refuse(hostname, "no-certificate", "the server presented no certificate")
        check_unverified(policy, hostname, leaf, port=port, served_chain=served)
        return
    chain = sslobj.get_verified_chain()
    if not chain:
        # A resumed session: OpenSSL keeps no verified chain, only the leaf.
        leaf = obj.getpeercert(binary_form=True)
        if leaf is None:
            raise _refuse(hostname, "no-certificate", "the server presented no certificate")
        check_resumed(policy, hostname, leaf, seen, port=port)
        return
    ders = [cert.public_bytes(_DER) for cert in chain]
    verdict = check(policy, hostname, ders, port=port, served_chain=served)
    # Into the set of the policy that checked this chain, read once above (issue 13, item 13),
    # under the canonical host, so a resumption under another spelling is recognised.
    _state.remember(seen, verdict.hostname, ders[0])


def check_name(conn: object, name: str) -> None:
    """Check a connection whose handshake completed against the pins for *name* as well.

    For clients that authenticate another name than the TLS server name: urllib3's
    ``assert_hostname`` connects to one name (often an IP address) and matches the certificate
    against another itself, after the handshake; the pins of the name it matches must hold
    too. *conn* is a socket or object made by a pinned (or injected) context, or urllib3's
    ``SSLTransport`` around one (TLS in TLS). A refusal sticks to the connection.

    Raises:
        PinVerificationError: the pins for *name* refuse the connection, or *conn* was not made
            by tlspin and a policy in force covers *name*.
    """
    obj = conn if isinstance(conn, PinnedSSLSocket | PinnedSSLObject) else None
    if obj is None:
        inner = getattr(conn, "sslobj", None)  # urllib3.util.ssltransport.SSLTransport
        obj = inner if isinstance(inner, PinnedSSLObject) else None
    if obj is None:
        injected = _state.INJECTED.state
        if injected is None or not _rules(injected, name)[2]:
            return
        raise _refuse(
            name,
            "unchecked-connection",
            f"the client matches the certificate against {name}, which is pinned, but the "
            f"connection ({type(conn).__name__}) was not made by a context tlspin reaches",
        )
    if obj._tlspin_error is not None:
        raise obj._tlspin_error
    port = None
    if isinstance(obj, PinnedSSLSocket):
        try:
            port = obj.getpeername()[1]
        except (OSError, IndexError):
            port = None
    try:
        _enforce(obj, port, name)
    except Exception as exc:
        obj._tlspin_error = exc
        raise


class PinnedSSLSocket(ssl.SSLSocket):
    """An :class:`ssl.SSLSocket` that checks pins when its handshake completes.

    Every method that moves application bytes first makes sure the check ran, and refuses to
    carry bytes in clear on a socket whose TLS handshake never completed.
    """

    _tlspin_ok = False
    _tlspin_error: BaseException | None = None
    # Read by tlspin._guard: record what OpenSSL copies into this connection when it is made.
    _tlspin_snapshots = True
    _tlspin_snapshot: Snapshot | None = None
    # Server-side connections are made as this class instead: tlspin leaves them untouched.
    _tlspin_base: type[ssl.SSLSocket] = ssl.SSLSocket

    @classmethod
    def _create(cls, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("server_side"):
            return cls._tlspin_base._create(*args, **kwargs)  # type: ignore[attr-defined]
        return super()._create(*args, **kwargs)  # type: ignore[misc]

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
    # Read by tlspin._guard: record what OpenSSL copies into this connection when it is made.
    _tlspin_snapshots = True
    _tlspin_snapshot: Snapshot | None = None
    # Server-side connections are made as this class instead: tlspin leaves them untouched.
    _tlspin_base: type[ssl.SSLObject] = ssl.SSLObject

    @classmethod
    def _create(cls, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("server_side"):
            return cls._tlspin_base._create(*args, **kwargs)  # type: ignore[attr-defined]
        return super()._create(*args, **kwargs)  # type: ignore[misc]

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


def _is_truststore(cls: type) -> bool:
    # truststore itself, or a vendored copy such as pip._vendor.truststore.
    return "truststore" in cls.__module__.split(".")


def compose(ours: type, current: type) -> type:
    """A class that runs tlspin's check after *current*'s own handshake (truststore's verify).

    Server-side connections of the composed class are made as *current*, untouched.
    """
    return type(f"Pinned{current.__name__}", (ours, current), {"_tlspin_base": current})


def _inner_context(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """Return the context whose wrap methods really create the TLS objects."""
    cls = type(ctx)
    stdlib = _guard.STDLIB_CONTEXT
    if cls.wrap_socket is stdlib.wrap_socket and cls.wrap_bio is stdlib.wrap_bio:
        return ctx
    inner = getattr(ctx, "_ctx", None)
    if _is_truststore(cls) and isinstance(inner, stdlib):
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
    ``check_hostname=False`` is refused when the policy has rules, and a connection made after
    verification was switched off is refused (what counts is what the connection verified when
    it was made, see :mod:`tlspin._guard`). Under :func:`tlspin.inject` the context keeps this
    policy for the hosts it covers; for any other host the injected policy applies, as to every
    other context (pinning only adds).

    .. versionchanged:: Unreleased
        A host this policy does not cover gets the injected policy (it was left unchecked).

    Pinning installs tlspin's verification guard on the stdlib ``ssl.SSLContext`` class for the
    rest of the process (a lock around ``verify_mode``/``check_hostname`` changes and around the
    creation of pinned connections; other connections pass straight through).

    Raises:
        PinConfigurationError: the context cannot be pinned safely.
    """
    if not isinstance(ctx, _guard.STDLIB_CONTEXT):
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
        elif _is_truststore(current) and issubclass(current, base):
            # truststore (0.10+) installs its own classes that verify after the handshake;
            # put ours in front so the pins are checked after truststore's verification.
            classes[attr] = compose(ours, current)
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
    # Before the classes: a pinned connection is never made without its snapshot.
    _guard.install("pin")
    inner._tlspin = _PinState(policy)  # type: ignore[attr-defined]
    inner.sslsocket_class = classes["sslsocket_class"]
    inner.sslobject_class = classes["sslobject_class"]
    if inner is not ctx:
        ctx._tlspin = inner._tlspin  # type: ignore[attr-defined]
    return ctx


def policy_of(ctx: ssl.SSLContext) -> PinPolicy | None:
    """Return the policy currently in force for a pinned context, or None if it is not pinned.

    Only a context's own policy counts (``pin_context``), not one injected process-wide.
    """
    state = getattr(ctx, "_tlspin", None)
    return state.policy() if isinstance(state, _PinState) else None


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
