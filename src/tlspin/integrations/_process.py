"""What :func:`tlspin.inject` reaches beyond the ``ssl`` module: Twisted and asyncpg.

* **Twisted** does TLS through pyOpenSSL: every connection of a ``ClientTLSOptions`` (treq,
  ``Agent``, Scrapy, ``optionsForClientTLS`` endpoints) gets the pin check of
  :mod:`tlspin.integrations._twisted_core`;
* **asyncpg**'s ``sslmode=prefer`` retries in clear text after a refused TLS upgrade:
  :mod:`tlspin.integrations.asyncpg` refuses clear text to pinned hosts.

Neither library is imported here: each patch is installed when its module is already loaded,
or right after the program imports it (a ``sys.meta_path`` finder that wraps the module's
loader), so ``tlspin run`` costs nothing for programs that use neither. :func:`deactivate`
removes the finder and every patch.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Sequence
from types import ModuleType
from typing import Any

__all__ = ["activate", "active", "deactivate"]

# module whose loading triggers the patch → the tlspin module that installs it
_TARGETS = {
    "twisted.internet._sslverify": "tlspin.integrations._twisted_core",
    "asyncpg.connect_utils": "tlspin.integrations.asyncpg",
}


def _injected_policy() -> Any:
    from tlspin.injection import injected_policy

    return injected_policy()


def _install(target: str) -> None:
    module = importlib.import_module(_TARGETS[target])
    if target.startswith("asyncpg"):
        module.install(_injected_policy)
    else:
        module.install()


def _uninstall(target: str) -> None:
    module = sys.modules.get(_TARGETS[target])
    if module is not None:
        module.uninstall()


class _Loader(importlib.abc.Loader):
    """Runs the real loader, then installs the patch for the module it just executed."""

    def __init__(self, inner: importlib.abc.Loader, target: str) -> None:
        self._inner = inner
        self._target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        if _State.active:
            _install(self._target)


class _Finder(importlib.abc.MetaPathFinder):
    """Wraps the loader of each target module found by the rest of ``sys.meta_path``."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _TARGETS or not _State.active:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, fullname)
                return spec
        return None


class _State:
    active = False
    finder: _Finder | None = None
    lock = threading.RLock()


def activate() -> None:
    """Reach Twisted and asyncpg: now if they are loaded, else as soon as they are imported."""
    with _State.lock:
        _State.active = True
        if _State.finder is None:
            _State.finder = _Finder()
            sys.meta_path.insert(0, _State.finder)
        for target in _TARGETS:
            if target in sys.modules:
                _install(target)


def deactivate() -> None:
    """Remove the finder and every patch :func:`activate` installed."""
    with _State.lock:
        _State.active = False
        finder, _State.finder = _State.finder, None
        if finder is not None and finder in sys.meta_path:
            sys.meta_path.remove(finder)
        for target in _TARGETS:
            _uninstall(target)


def active() -> bool:
    """True between :func:`activate` and :func:`deactivate`."""
    return _State.active
