"""The verification snapshot: what each connection really verified, recorded when it is made.

OpenSSL copies a context's verify mode into each connection inside ``SSL_new()``, which CPython
runs with the GIL released inside ``SSLContext._wrap_socket()`` / ``_wrap_bio()``; right after,
still in C, it sets the host name to check if ``check_hostname`` is on. Changing the context
afterwards does not change that connection. So the pin check cannot rest on the context as it
is when the handshake ends: a context wrapped with verification off and switched back on before
the handshake completes would pass an unverified chain (issue 13, item 2: another thread
toggling a shared context got 104 of 300 forged connections through).

:func:`install` therefore adds to the stdlib ``ssl.SSLContext`` class (it never replaces the
class):

* ``_wrap_socket`` / ``_wrap_bio``, which the stdlib looks up on the context when it creates a
  TLS object (``SSLSocket._create``, ``SSLSocket._real_connect``, ``SSLObject._create``). For
  tlspin's own socket and object classes (the ``owner=`` argument), they run the C call under
  the context's lock and record a :class:`~tlspin._state.Snapshot` on the owner: the verify
  mode and host-name check read under that same lock, so they are what OpenSSL copied;
* ``verify_mode`` and ``check_hostname`` properties whose setters take that lock, so no change
  can land while OpenSSL copies the settings. A change made around the lock (through the C
  descriptor of ``_ssl._SSLContext`` directly) is still noticed when it leaves the settings
  different before and after the copy: that connection then counts as unverified.

Other contexts' objects pass straight through to the C methods. The guard stays installed while
anything needs it (:func:`tlspin.pin_context` ever called, or :func:`tlspin.inject` active).
"""

from __future__ import annotations

import _ssl
import ssl
import threading
from typing import Any

from tlspin._state import INJECTED, Snapshot, _PinState
from tlspin.exceptions import PinConfigurationError, PinningUnavailableError

__all__ = ["STDLIB_CONTEXT", "fence", "install", "installed", "lock_of", "unfence", "uninstall"]


def _stdlib_context_class() -> type[ssl.SSLContext]:
    # truststore.inject_into_ssl() replaces the name ssl.SSLContext with its own subclass; the
    # class every context really is (truststore's inner one included) is the stdlib's.
    for cls in _ssl._SSLContext.__subclasses__():
        if cls.__module__ == "ssl" and cls.__qualname__ == "SSLContext":
            return cls  # type: ignore[return-value]
    return ssl.SSLContext  # Defensive: CPython always defines it in ssl.py.


#: The stdlib ``ssl.SSLContext`` class, even while truststore's injection renames it.
STDLIB_CONTEXT = _stdlib_context_class()

_C_CONTEXT: Any = _ssl._SSLContext
_C_WRAP_SOCKET = _C_CONTEXT._wrap_socket
_C_WRAP_BIO = _C_CONTEXT._wrap_bio
_C_VERIFY_MODE = _C_CONTEXT.__dict__["verify_mode"]
_C_CHECK_HOSTNAME = _C_CONTEXT.__dict__["check_hostname"]
_CERT_REQUIRED = int(ssl.CERT_REQUIRED)
_PY_VERIFY_MODE: property = STDLIB_CONTEXT.__dict__["verify_mode"]

_LOCK_ATTR = "_tlspin_lock"
_INSTALL_LOCK = threading.Lock()
_users: set[str] = set()
_saved: dict[str, Any] = {}
_MISSING = object()


def lock_of(ctx: Any) -> threading.RLock:
    """The lock that orders *ctx*'s verification settings and the creation of its connections.

    Re-entrant: an observer or callback that makes a connection on the same context while the
    lock is held by its own thread must not deadlock.
    """
    # Kept in the context's own __dict__: the fastest lookup on every connection, and gone with
    # the context. dict.setdefault is atomic, so two threads never get two locks.
    d = ctx.__dict__
    lock: threading.RLock | None = d.get(_LOCK_ATTR)
    if lock is None:
        lock = d.setdefault(_LOCK_ATTR, threading.RLock())
    return lock


def _settings(ctx: Any) -> tuple[bool, bool]:
    return _C_VERIFY_MODE.__get__(ctx) == _CERT_REQUIRED, bool(_C_CHECK_HOSTNAME.__get__(ctx))


def _snapshot(ctx: Any, wrap: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    owner = kwargs["owner"]
    with lock_of(ctx):
        before = _settings(ctx)
        sslobj = wrap(ctx, *args, **kwargs)
        after = _settings(ctx)
    state = ctx.__dict__.get("_tlspin")
    if isinstance(state, _PinState):
        # The context's own policy; the injected one still covers the hosts it does not.
        injected = INJECTED.state
    else:
        state = INJECTED.state
        injected = None
    if before != after:
        # Changed by something that bypassed the lock: what OpenSSL copied is unknown.
        after = (False, False)
    # tuple.__new__ rather than Snapshot(...): this runs for every connection.
    owner._tlspin_snapshot = tuple.__new__(Snapshot, (state, *after, injected))
    return sslobj


def _wrap_socket(self: Any, *args: Any, **kwargs: Any) -> Any:
    if getattr(kwargs.get("owner"), "_tlspin_snapshots", False):
        return _snapshot(self, _C_WRAP_SOCKET, args, kwargs)
    return _C_WRAP_SOCKET(self, *args, **kwargs)


def _wrap_bio(self: Any, *args: Any, **kwargs: Any) -> Any:
    if getattr(kwargs.get("owner"), "_tlspin_snapshots", False):
        return _snapshot(self, _C_WRAP_BIO, args, kwargs)
    return _C_WRAP_BIO(self, *args, **kwargs)


def _set_verify_mode(self: Any, value: Any) -> None:
    with lock_of(self):
        _PY_VERIFY_MODE.__set__(self, value)


def _set_check_hostname(self: Any, value: Any) -> None:
    with lock_of(self):
        _C_CHECK_HOSTNAME.__set__(self, value)


_HOOKS: dict[str, Any] = {
    "_wrap_socket": _wrap_socket,
    "_wrap_bio": _wrap_bio,
    "verify_mode": property(_PY_VERIFY_MODE.fget, _set_verify_mode, None, _PY_VERIFY_MODE.__doc__),
    # The getter is the C descriptor's own (no Python frame on a hot attribute).
    "check_hostname": property(
        _C_CHECK_HOSTNAME.__get__, _set_check_hostname, None, _C_CHECK_HOSTNAME.__doc__
    ),
}


def install(user: str) -> None:
    """Install the guard on the stdlib context class for *user* (``"pin"`` or ``"inject"``)."""
    with _INSTALL_LOCK:
        if not _users:
            for name, hook in _HOOKS.items():
                _saved[name] = STDLIB_CONTEXT.__dict__.get(name, _MISSING)
                setattr(STDLIB_CONTEXT, name, hook)
        _users.add(user)


def uninstall(user: str) -> None:
    """Drop *user*'s need for the guard; remove it when nothing needs it any more.

    Only attributes that still hold the guard's hooks are restored, so a later patch by
    someone else is never undone.
    """
    with _INSTALL_LOCK:
        _users.discard(user)
        if _users or not _saved:
            return
        for name, hook in _HOOKS.items():
            if STDLIB_CONTEXT.__dict__.get(name) is not hook:
                continue
            original = _saved[name]
            if original is _MISSING:
                delattr(STDLIB_CONTEXT, name)
            else:
                setattr(STDLIB_CONTEXT, name, original)
        _saved.clear()


def installed() -> bool:
    """True while the guard is installed."""
    with _INSTALL_LOCK:
        return bool(_users)


# -- classes tlspin cannot reach -----------------------------------------------------------------
# importlib.reload(ssl) (or a second import after `del sys.modules["ssl"]`) runs ssl.py again:
# a new SSLContext class, with new socket classes, none of which inherits tlspin's hooks, and
# tlspin's own classes cannot serve it (they derive from the old ones). Connections its contexts
# make to hosts the injected policy covers are refused before OpenSSL creates them.

_FENCED: dict[type, dict[str, Any]] = {}


def _refuse_if_pinned(server_side: object, server_hostname: object) -> None:
    state = INJECTED.state
    if server_side or not isinstance(server_hostname, str) or state is None:
        return
    policy = state.policy()
    try:
        covered = bool(policy.rules_for(server_hostname))
    except PinConfigurationError:
        covered = bool(policy.rules)
    if covered:
        msg = (
            f"refused the connection to {server_hostname}: it was made by an ssl.SSLContext "
            "class defined after tlspin.inject() (the ssl module was executed again, e.g. by "
            "importlib.reload), which tlspin cannot check; reload nothing under tlspin.inject()"
        )
        raise PinningUnavailableError(msg, hostname=server_hostname, reason="ssl-reloaded")


def _fenced_wrap_socket(
    self: Any, sock: Any, server_side: Any = False, server_hostname: Any = None, **kwargs: Any
) -> Any:
    _refuse_if_pinned(server_side, server_hostname)
    return _C_WRAP_SOCKET(self, sock, server_side, server_hostname, **kwargs)


def _fenced_wrap_bio(
    self: Any,
    incoming: Any,
    outgoing: Any,
    server_side: Any = False,
    server_hostname: Any = None,
    **kwargs: Any,
) -> Any:
    _refuse_if_pinned(server_side, server_hostname)
    return _C_WRAP_BIO(self, incoming, outgoing, server_side, server_hostname, **kwargs)


def fence(cls: object) -> bool:
    """Refuse connections to pinned hosts from contexts of *cls*, a context class tlspin cannot
    reach (see above); True when *cls* was not fenced yet. :func:`unfence` undoes it."""
    if (
        not isinstance(cls, type)
        or not issubclass(cls, _ssl._SSLContext)
        or issubclass(cls, STDLIB_CONTEXT)
    ):
        return False
    with _INSTALL_LOCK:
        if cls in _FENCED:
            return False
        _FENCED[cls] = {n: cls.__dict__.get(n, _MISSING) for n in ("_wrap_socket", "_wrap_bio")}
        cls._wrap_socket = _fenced_wrap_socket  # type: ignore[attr-defined]
        cls._wrap_bio = _fenced_wrap_bio  # type: ignore[attr-defined]
    return True


def unfence() -> None:
    """Undo every :func:`fence` (by :func:`tlspin.extract`)."""
    with _INSTALL_LOCK:
        for cls, saved in _FENCED.items():
            for name, original in saved.items():
                if original is _MISSING:
                    delattr(cls, name)
                else:
                    setattr(cls, name, original)
        _FENCED.clear()
