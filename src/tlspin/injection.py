"""Pin every TLS client in the process: :func:`inject`, :func:`extract`, :func:`injected`.

``ssl.SSLContext.wrap_socket()`` and ``wrap_bio()`` create each connection as
``self.sslsocket_class`` / ``self.sslobject_class``, two attributes the stdlib looks up through
the context. :func:`inject` replaces the class attributes on the stdlib ``ssl.SSLContext`` with
data descriptors that answer with tlspin's :class:`~tlspin.context.PinnedSSLSocket` and
:class:`~tlspin.context.PinnedSSLObject`, so every context reaches the check, including
contexts made before :func:`inject` and those libraries keep privately. A context with its own
per-instance class (truststore 0.10.5 gives each of its contexts two fresh classes, and pip
vendors truststore) gets a class composed on first use, with tlspin's check running after that
class's own handshake. The ``ssl.SSLContext`` class itself is never replaced (replacing it makes
the stdlib setters recurse, as truststore's injection shows).

The connections are checked against the injected policy; a context pinned with
:func:`tlspin.pin_context` keeps its own policy for the hosts that policy covers, and gets the
injected one for every other host (pinning only adds). What differs from an explicitly pinned
context (see :func:`tlspin.context._enforce`): a connection without a server name is not covered,
``check_hostname=False`` is allowed, and a connection without CA verification (``CERT_NONE``)
passes only on a pin of the leaf's own key.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from tlspin import _guard, _state
from tlspin._state import PolicySource, _PinState
from tlspin.context import PinnedSSLObject, PinnedSSLSocket, compose
from tlspin.exceptions import PinConfigurationError
from tlspin.integrations import _process
from tlspin.policy import PinPolicy

__all__ = ["extract", "inject", "injected", "injected_policy"]

_LOCK = threading.RLock()
# Contexts whose composed classes are cached in their __dict__, cleaned by extract().
_COMPOSED: weakref.WeakSet[Any] = weakref.WeakSet()


class _ClassHook:
    """``sslsocket_class`` / ``sslobject_class`` on the stdlib context class while injected."""

    __slots__ = ("base", "cache", "default", "name", "ours")

    def __init__(self, name: str, original: type, base: type, ours: type) -> None:
        self.name = name
        self.base = base
        self.ours = ours
        self.cache = f"_tlspin_composed_{name}"
        # Usually the stdlib class; a class someone else set on ssl.SSLContext is composed.
        if original is base or issubclass(original, ours) or not issubclass(original, base):
            self.default = ours
        else:
            self.default = compose(ours, original)

    def __get__(self, obj: Any, objtype: Any = None) -> type:
        if obj is None:
            return self.default
        d = obj.__dict__
        own = d.get(self.name)
        if own is None or own is self.base:
            return self.default
        if not isinstance(own, type) or issubclass(own, self.ours):
            return own
        if not issubclass(own, self.base):
            return own
        cached = d.get(self.cache)
        if cached is not None and cached[0] is own:
            return cached[1]  # type: ignore[no-any-return]
        composed = compose(self.ours, own)
        d[self.cache] = (own, composed)
        _COMPOSED.add(obj)
        return composed

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.name] = value

    def __delete__(self, obj: Any) -> None:
        try:
            del obj.__dict__[self.name]
        except KeyError:
            raise AttributeError(self.name) from None


class _Installed:
    __slots__ = ("hooks", "originals")

    def __init__(self, originals: dict[str, Any], hooks: dict[str, _ClassHook]) -> None:
        self.originals = originals
        self.hooks = hooks


class _Current:
    """What inject() installed, if anything (one per process, changed under _LOCK)."""

    __slots__ = ("installed",)

    def __init__(self) -> None:
        self.installed: _Installed | None = None


_CURRENT = _Current()


def _set(state: _PinState) -> None:
    with _LOCK:
        # The state first: a pinned connection made in between must find a policy.
        _state.INJECTED.state = state
        if _CURRENT.installed is not None:
            return
        _guard.install("inject")
        stdlib = _guard.STDLIB_CONTEXT
        originals: dict[str, Any] = {}
        hooks: dict[str, _ClassHook] = {}
        for name, base, ours in (
            ("sslsocket_class", ssl.SSLSocket, PinnedSSLSocket),
            ("sslobject_class", ssl.SSLObject, PinnedSSLObject),
        ):
            originals[name] = stdlib.__dict__[name]
            hooks[name] = _ClassHook(name, originals[name], base, ours)
        for name, hook in hooks.items():
            setattr(stdlib, name, hook)
        _CURRENT.installed = _Installed(originals, hooks)
        # Twisted (pyOpenSSL) and asyncpg's clear-text fallback, when they are (or get) imported.
        _process.activate()


def inject(policy: PinPolicy | PolicySource) -> None:
    """Check every client-side TLS connection the ``ssl`` module makes against *policy*.

    Reaches every context, including those created before this call, on every path: blocking
    sockets, memory BIOs (asyncio, anyio, TLS in TLS) and truststore's contexts (pip's vendored
    copy included). Hosts the policy does not cover are only CA-verified as before; server-side
    connections are untouched; a context pinned with :func:`tlspin.pin_context` keeps its own
    policy for the hosts it covers (the injected policy applies to the others). A
    :class:`~tlspin.PolicySource` such as :class:`tlspin.BundleUpdater` is read at every
    handshake.

    Beyond the ``ssl`` module (:mod:`tlspin.integrations._process`, when each library is or
    gets imported): Twisted's connections (pyOpenSSL) are checked; asyncpg never falls back to
    clear text for a pinned host; urllib3's ``assert_hostname`` gets the pins of the name it
    matches; urllib3's HTTPS forwarding proxy mode and httpx/httpcore ``sni_hostname`` naming
    another host than a pinned URL host are refused. A second run of the ``ssl`` module
    (``importlib.reload(ssl)``) makes classes tlspin cannot reach: their connections to pinned
    hosts are refused.

    Programs that switch verification off still meet the pins:

    * ``check_hostname=False`` with ``CERT_REQUIRED`` (botocore, urllib3, which match the
      name themselves) is checked against the server name (SNI);
    * ``CERT_NONE`` (smtplib's default ``starttls()``, asyncpg ``require``/``prefer``,
      Scrapy's default) passes on a pinned host only if a pin matches the leaf's own key: the
      rest of an unverified chain proves nothing. Deny pins still refuse, and report-only rules
      report. The refusal (a :class:`~tlspin.PinningUnavailableError`, reason
      ``"unverified-chain"``) says so and how to fix it;
    * a connection without any server name cannot be matched to a host and is not covered.

    Calling it again replaces the policy; :func:`extract` undoes it. Thread-safe.

    Raises:
        PinConfigurationError: *policy* is neither a PinPolicy nor a policy source.
    """
    if not isinstance(policy, PinPolicy | PolicySource):
        msg = f"expected a PinPolicy or a policy source, found {type(policy).__name__}"
        raise PinConfigurationError(msg)
    _set(_PinState(policy, explicit=False))


def extract() -> None:
    """Undo :func:`inject`: restore ``ssl.SSLContext.sslsocket_class``/``sslobject_class``.

    The class attributes get back the very objects they held before, and the classes composed
    for truststore's contexts are dropped. Connections made while injected keep being checked.
    Extracting when nothing is injected does nothing. Thread-safe.
    """
    with _LOCK:
        installed, _CURRENT.installed = _CURRENT.installed, None
        if installed is None:
            return
        stdlib = _guard.STDLIB_CONTEXT
        for name, hook in installed.hooks.items():
            # Someone who replaced our hook since keeps theirs.
            if stdlib.__dict__.get(name) is hook:
                setattr(stdlib, name, installed.originals[name])
        _state.INJECTED.state = None
        for ctx in list(_COMPOSED):
            for hook in installed.hooks.values():
                ctx.__dict__.pop(hook.cache, None)
        _COMPOSED.clear()
        _guard.uninstall("inject")
        _process.deactivate()


@contextlib.contextmanager
def injected(policy: PinPolicy | PolicySource) -> Iterator[None]:
    """Inject *policy* for the duration of a ``with`` block, then restore what was there.

    Nested blocks restore the outer policy. The injection is process-wide, not per thread.
    """
    with _LOCK:
        previous = _state.INJECTED.state if _CURRENT.installed is not None else None
        inject(policy)
    try:
        yield
    finally:
        with _LOCK:
            if previous is None:
                extract()
            else:
                _set(previous)


def injected_policy() -> PinPolicy | None:
    """The injected policy in force now (read from its source), or None when not injected."""
    state = _state.INJECTED.state
    return None if state is None else state.policy()
