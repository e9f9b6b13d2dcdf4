"""Pin a Python interpreter while it starts, before any of the program's code: ``TLSPIN_POLICY``.

Two start-up hooks call :func:`start`, and the first one arms the interpreter:

* ``tlspin-startup.pth``, which tlspin's wheel installs into site-packages. ``site`` runs it in
  every interpreter of the environment, with ``-E`` and ``-I`` too (only ``-S`` skips it), and
  no other ``sitecustomize`` can shadow it. With ``TLSPIN_POLICY`` unset it reads one variable
  and imports nothing;
* ``tlspin/_run/hook/sitecustomize.py``, alone in a directory ``tlspin run`` puts first on
  ``PYTHONPATH``: it reaches interpreters where tlspin is importable only through
  ``PYTHONPATH``, and refuses to start those where it is not importable at all.

:func:`start` reads the policy file and pins the process (``tlspin.inject``) at once when
``ssl`` is already imported or the policy still has to be validated; or else right after the
program's first ``import ssl`` (before any TLS object can exist), when ``TLSPIN_POLICY_SHA256``
shows that ``tlspin run`` validated these very bytes: a program that never uses TLS then pays
for this module alone. The finder that waits for ``ssl`` (:class:`_PinOnImport`) stays first
on ``sys.meta_path`` until the ``ssl`` module has really been executed through it: probes such
as ``importlib.util.find_spec("ssl")`` and ``pkgutil`` look-ups leave it in place. If ``ssl``
gets imported some other way (a loader called directly, ``importlib.import_module`` through a
finder placed before it), the next import of any module, or the next socket made, pins the
process. A finder placed before it cannot take ``ssl`` away from it: an audit hook
(:func:`sys.addaudithook`) puts it back in front whenever an ``import ssl`` statement runs.

It fails closed. An exception raised at start-up would only be printed by ``site``, and the
program would run unpinned; so when the policy cannot be read or applied, it writes why to
stderr and ends the process with status 70, before any of the program's code runs.

Nothing but ``os``, ``sys`` and ``_thread`` is imported until the process is pinned.
"""

from __future__ import annotations

import _thread
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from importlib.abc import Loader
    from importlib.machinery import ModuleSpec
    from types import ModuleType
    from typing import Any, NoReturn

EXIT_REFUSED = 70  # EX_SOFTWARE; `tlspin run` itself exits 2 for a bad policy.
_MAX_BYTES = 16 * 1024 * 1024
_MODULE = type(sys)
# Names tlspin uses, the last one defined near the end of ssl.py: a module that has them all
# has run far enough to be pinned.
_SSL_READY = (
    "SSLContext",
    "SSLSocket",
    "SSLObject",
    "create_default_context",
    "get_server_certificate",
)


# Audit events of a socket being made or used to reach a peer: ssl loaded past the finder with
# no import since must be pinned before its first connection.
_SOCKET_EVENTS = frozenset(
    ("socket.__new__", "socket.connect", "socket.getaddrinfo", "socket.sendto", "socket.sendmsg")
)


class _Status:
    """What this interpreter's start-up did (one per process)."""

    lock = _thread.allocate_lock()
    #: True once a start-up hook took charge of TLSPIN_POLICY (pinned, or waiting for ssl).
    armed = False
    #: How: "pinned" (inject ran), "deferred" (waiting for the first import of ssl).
    how = ""
    #: The finder waiting for ssl, while deferred (read by the audit hook).
    waiting: _PinOnImport | None = None


def armed() -> bool:
    """True when a start-up hook applied (or is about to apply) ``TLSPIN_POLICY`` here."""
    return _Status.armed


def refuse(why: str) -> NoReturn:
    """Tell why on stderr and end the interpreter with status 70 (nothing else can stop it)."""
    try:
        command = " ".join(getattr(sys, "orig_argv", None) or [sys.executable])
        sys.stderr.write(f"tlspin: refused to start {command}: {why}\n")
        sys.stderr.flush()
    finally:
        os._exit(EXIT_REFUSED)


def _apply(path: str, raw: bytes) -> None:
    """Parse the policy bytes read at start, and inject them; refuse to start if that fails."""
    try:
        import warnings

        from tlspin import policyfile
        from tlspin.exceptions import SinglePinWarning
        from tlspin.injection import inject
    except Exception as exc:  # noqa: BLE001 - any failure to import means no pinning
        refuse(
            f"the pin policy {path} (TLSPIN_POLICY) cannot be applied: tlspin cannot be imported "
            f"by {sys.executable} ({type(exc).__name__}: {exc}); install tlspin in the "
            "environment of that interpreter"
        )
    try:
        with warnings.catch_warnings():
            # Said once by `tlspin run` (and by `tlspin lint`), not by every interpreter it starts.
            warnings.simplefilter("ignore", SinglePinWarning)
            policy = policyfile.load_bytes(raw, path)
        if not policy.rules:
            # Asked to pin, with nothing to pin by: a mistake to stop at, not to run through.
            refuse(f"{path}: the pin policy is empty (no [[rule]])")
        inject(policy)
    except Exception as exc:  # noqa: BLE001 - a policy that cannot be applied is a refusal
        refuse(str(exc))
    _Status.how = "pinned"


def _audit(event: str, args: tuple[Any, ...]) -> None:
    """Audit hook: keep ``ssl``'s first import going through the finder; pin before a socket.

    A finder placed before tlspin's (an import hook, an instrumentation library) could
    otherwise load ``ssl`` past it and answer every later import too, so that nothing pinned
    the process before its first connection. An audit hook cannot be removed, so this is a
    plain function that returns at once when nothing waits (a bound method costs more, at
    every audited event: each open(), each sys._getframe() of logging).
    """
    finder = _Status.waiting
    if finder is None:
        return
    if event == "import":
        if args and args[0] == "ssl":
            finder.first()
        else:
            finder.check_ssl()
    elif event in _SOCKET_EVENTS:
        # ssl loaded past the finder (importlib.import_module), and no import since.
        finder.check_ssl()


class _Loader:
    """Runs the real ``ssl`` module, then pins, then steps out of the way."""

    def __init__(self, loader: Loader, finder: _PinOnImport) -> None:
        self._loader = loader
        self._finder = finder

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        module.__loader__ = self._loader
        spec = getattr(module, "__spec__", None)
        if spec is not None:
            spec.loader = self._loader
        # Still under ssl's import lock: no other thread can use the module before this returns.
        self._finder.pin()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _PinOnImport:
    """A ``sys.meta_path`` finder that pins the process right after ``ssl`` first runs."""

    def __init__(self, path: str, raw: bytes) -> None:
        self._path = path
        self._raw = raw
        self._done = False

    def first(self) -> None:
        """Put this finder first on ``sys.meta_path`` (an ``import ssl`` is about to look it up)."""
        meta_path = sys.meta_path
        try:
            if not meta_path or meta_path[0] is not self:
                while self in meta_path:
                    meta_path.remove(self)
                meta_path.insert(0, self)
        except Exception:  # noqa: BLE001 - no list to go first in: pin now, before ssl runs
            self.pin()

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if self._done:
            return None
        if name != "ssl":
            self.check_ssl()
            return None
        # Every look-up of ssl gets the wrapping loader: a probe (importlib.util.find_spec,
        # pkgutil) that never executes it must not use the finder up.
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec: ModuleSpec | None = find(name, path, target)
            if spec is None:
                continue
            loader = spec.loader
            if loader is not None and hasattr(loader, "exec_module"):
                spec.loader = _Loader(loader, self)  # type: ignore[assignment]
            return spec
        return None

    def check_ssl(self) -> None:
        """Pin now if ``ssl`` was imported without this finder (and has finished running)."""
        module = sys.modules.get("ssl")
        if module is None:
            return
        # Read it without running it: a lazy module (importlib.util.LazyLoader) would execute
        # on any attribute access, here, inside an import.
        names = _MODULE.__getattribute__(module, "__dict__")
        if type(module) is not _MODULE or getattr(names.get("__spec__"), "_initializing", False):
            return  # not run yet (lazy), or still running through an import
        if not all(name in names for name in _SSL_READY):
            return  # still running, through a loader that does not say so (a lazy one)
        self.pin()

    def pin(self) -> None:
        """Inject the policy, once; take the finder off ``sys.meta_path``."""
        with _Status.lock:
            if self._done:
                return
            self._done = True
            _Status.waiting = None
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass
        _apply(self._path, self._raw)


def _sha256_hex(raw: bytes) -> str:
    # The built-in module first: hashlib would load OpenSSL's libcrypto into every interpreter.
    for name in ("_sha2", "_sha256", "hashlib"):  # 3.12+, 3.11, anything else
        try:
            module = __import__(name)
        except ImportError:
            continue
        return str(module.sha256(raw).hexdigest())
    return ""  # Defensive: hashlib is always there.


def _validated(raw: bytes) -> bool:
    expected = os.environ.get("TLSPIN_POLICY_SHA256", "")
    return bool(expected) and _sha256_hex(raw) == expected.strip().lower()


def start() -> None:
    """Apply ``TLSPIN_POLICY`` to this interpreter, unless a start-up hook already did.

    Ends the process with status 70 when the policy cannot be read or applied.
    """
    with _Status.lock:
        if _Status.armed:
            return
        _Status.armed = True
    path = os.environ.get("TLSPIN_POLICY", "")
    if not path:
        refuse(
            "PYTHONPATH holds tlspin's start-up hook but TLSPIN_POLICY names no policy file "
            "(set it to the policy's absolute path, or take the hook off PYTHONPATH)"
        )
    if not os.path.isabs(path):
        refuse(f"TLSPIN_POLICY must be an absolute path, found {path!r}")
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_BYTES + 1)
    except OSError as exc:
        refuse(f"cannot read the pin policy {path} (TLSPIN_POLICY): {exc.strerror or exc}")
    if "ssl" not in sys.modules and _validated(raw):
        try:
            sys.addaudithook(_audit)
        except Exception:  # noqa: BLE001 - another audit hook vetoed it: pin now, not later
            _apply(path, raw)
            return
        _Status.how = "deferred"
        finder = _PinOnImport(path, raw)
        sys.meta_path.insert(0, finder)
        _Status.waiting = finder
    else:
        _apply(path, raw)
