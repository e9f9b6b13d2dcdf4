"""What :func:`tlspin.inject` reaches beyond the ``ssl`` seam: library-specific patches.

* **Twisted** does TLS through pyOpenSSL: every connection of a ``ClientTLSOptions`` (treq,
  ``Agent``, Scrapy, ``optionsForClientTLS`` endpoints) gets the pin check of
  :mod:`tlspin.integrations._twisted_core`;
* **asyncpg**'s ``sslmode=prefer`` retries in clear text after a refused TLS upgrade:
  :mod:`tlspin.integrations.asyncpg` refuses clear text to pinned hosts;
* **urllib3** and **httpcore** (httpx) let a name other than the TLS server name decide what
  the connection is for: :mod:`tlspin.integrations._overrides` applies the pins of the name
  urllib3 matches (``assert_hostname``), refuses an httpcore ``sni_hostname`` other than a
  pinned URL host, and refuses urllib3's HTTPS forwarding mode for pinned origins;
* **ssl** itself: a module executed again while injected (``importlib.reload(ssl)``) defines
  new classes that tlspin cannot reach; their connections to pinned hosts are refused
  (:func:`tlspin._guard.fence`).

No library is imported here: each patch is installed when its module is already loaded, or right
after the program imports it (a ``sys.meta_path`` finder that wraps the module's loader), so
``tlspin run`` costs nothing for programs that use none of them. A module that is still being
imported when :func:`activate` runs (the first ``import ssl`` of a lazily pinned program can
happen inside ``twisted.internet._sslverify``) is patched as soon as its import has finished:
the finder looks at it again on every later import. :func:`deactivate` removes the finder and
every patch.
"""

from __future__ import annotations

import importlib
import sys
import threading
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.abc import Loader
    from importlib.machinery import ModuleSpec
    from types import ModuleType

__all__ = ["activate", "active", "deactivate"]

# module whose loading triggers the patch → the tlspin module that installs it
_TARGETS = {
    "twisted.internet._sslverify": "tlspin.integrations._twisted_core",
    "asyncpg.connect_utils": "tlspin.integrations.asyncpg",
    "urllib3.connection": "tlspin.integrations._overrides",
    "urllib3.connectionpool": "tlspin.integrations._overrides",
    "httpcore._sync.connection_pool": "tlspin.integrations._overrides",
    "httpcore._async.connection_pool": "tlspin.integrations._overrides",
}


def _injected_policy() -> Any:
    from tlspin.injection import injected_policy

    return injected_policy()


def _install(target: str) -> None:
    module = importlib.import_module(_TARGETS[target])
    if target.startswith("asyncpg"):
        module.install(_injected_policy)
    elif target.startswith("twisted"):
        module.install()
    else:
        module.install(target)


def _uninstall(target: str) -> None:
    module = sys.modules.get(_TARGETS[target])
    if module is None:
        return
    if target.startswith(("asyncpg", "twisted")):
        module.uninstall()
    else:
        module.uninstall(target)


def _initialising(name: str) -> bool:
    """True while *name* is in ``sys.modules`` but its code has not finished running."""
    spec = getattr(sys.modules.get(name), "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


# The loader and the finder below follow the import protocols without subclassing the
# importlib.abc classes: importing importlib.abc loads importlib.resources, tempfile, shutil and
# random, which would add milliseconds to every interpreter `tlspin run` pins.
class _Loader:
    """Runs the real loader, then installs the patch for the module it just executed."""

    def __init__(self, inner: Loader, target: str) -> None:
        self._inner = inner
        self._target = target

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        if not _State.active:
            return
        if self._target == "ssl":
            _ssl_executed_again(module)
        else:
            # Not under _State.lock: installing imports tlspin modules, and a thread holding
            # one of their import locks may be waiting for _State.lock in _flush().
            _State.pending.discard(self._target)
            _install(self._target)


def _ssl_executed_again(module: ModuleType) -> None:
    # Not a new import: inject() imported ssl long before this finder existed.
    from tlspin import _guard

    fenced = _guard.fence(getattr(module, "SSLContext", None))
    if fenced:
        warnings.warn(
            "the ssl module was executed again (importlib.reload?) while tlspin.inject() is in "
            "force: contexts of its new SSLContext class cannot be pinned, so their connections "
            "to pinned hosts are refused; reload nothing under tlspin.inject()",
            _reload_warning(),
            stacklevel=4,
        )


def _reload_warning() -> type[Warning]:
    from tlspin.exceptions import TlspinWarning

    return TlspinWarning


class _Finder:
    """Wraps the loader of each target module found by the rest of ``sys.meta_path``."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if not _State.active:
            return None
        if _State.pending:
            _flush()
        if fullname not in _TARGETS and fullname != "ssl":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, fullname)  # type: ignore[assignment]
                return spec
        return None


class _State:
    active = False
    finder: _Finder | None = None
    lock = threading.RLock()
    # Targets loaded but still initialising when activate() ran: patched once they finish.
    pending: set[str] = set()  # noqa: RUF012 - one process-wide set, changed under the lock


def _flush() -> None:
    """Patch the pending targets whose import has finished."""
    with _State.lock:
        ready = [t for t in sorted(_State.pending) if not _initialising(t)]
        _State.pending.difference_update(ready)
    # Outside the lock, as in _Loader.exec_module.
    for target in ready:
        _install(target)


def activate() -> None:
    """Reach the target libraries: now if they are loaded, else as soon as they are imported.

    A target that is still being imported (``activate()`` runs inside its import) is patched
    once that import has finished, at the next import the finder sees: patching a partly run
    module would find its classes missing.
    """
    with _State.lock:
        _State.active = True
        if _State.finder is None:
            _State.finder = _Finder()
            sys.meta_path.insert(0, _State.finder)
        for target in _TARGETS:
            if target not in sys.modules:
                continue
            if _initialising(target):
                _State.pending.add(target)
            else:
                _install(target)


def deactivate() -> None:
    """Remove the finder and every patch :func:`activate` installed."""
    with _State.lock:
        _State.active = False
        _State.pending.clear()
        finder, _State.finder = _State.finder, None
        if finder is not None and finder in sys.meta_path:
            sys.meta_path.remove(finder)
        for target in _TARGETS:
            _uninstall(target)
        from tlspin import _guard

        _guard.unfence()


def active() -> bool:
    """True between :func:`activate` and :func:`deactivate`."""
    return _State.active
