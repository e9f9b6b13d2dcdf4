"""tlspin's start-up hook: pins a Python process before any of its own code runs.

Used by ``tlspin run --policy P -- COMMAND``, or directly with two environment variables:
``PYTHONPATH`` starting with this directory and ``TLSPIN_POLICY`` naming the policy file by its
absolute path. Python imports ``sitecustomize`` while it starts; this one

1. takes its directory off ``sys.path`` again (the directory holds this file alone, so nothing
   else is ever shadowed) and reads the policy file;
2. pins the process (``tlspin.inject``) now if ``ssl`` is already imported or the policy still
   has to be validated, or else right after the program's first ``import ssl`` (before any TLS
   object can exist), when ``TLSPIN_POLICY_SHA256`` shows that ``tlspin run`` validated these
   very bytes: a program that never uses TLS then pays nothing;
3. runs the ``sitecustomize`` it shadows (a virtual environment's, the distribution's) through
   ``site`` itself, so that one behaves as if tlspin were not there; ``usercustomize`` follows
   as usual.

It fails closed. An exception raised here would only be printed by ``site``, and the program
would run unpinned; so when the policy cannot be read or parsed, or tlspin cannot be imported
in this interpreter, it writes why to stderr and ends the process with status 70.
"""

from __future__ import annotations

import os
import sys

# Nothing but os and sys at start-up: this runs in every interpreter the policy reaches.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from importlib.abc import Loader
    from importlib.machinery import ModuleSpec
    from types import ModuleType
    from typing import Any, NoReturn

_EXIT_REFUSED = 70  # EX_SOFTWARE; `tlspin run` itself exits 2 for a bad policy.
_MAX_BYTES = 16 * 1024 * 1024


def _refuse(why: str) -> NoReturn:
    try:
        command = " ".join(getattr(sys, "orig_argv", None) or [sys.executable])
        sys.stderr.write(f"tlspin: refused to start {command}: {why}\n")
        sys.stderr.flush()
    finally:
        os._exit(_EXIT_REFUSED)


def _install(path: str, raw: bytes) -> None:
    try:
        from tlspin._run import install
    except Exception as exc:  # noqa: BLE001 - any failure to import means no pinning
        _refuse(
            f"the pin policy {path} (TLSPIN_POLICY) cannot be applied: tlspin cannot be imported "
            f"by {sys.executable} ({type(exc).__name__}: {exc}); install tlspin in the "
            "environment of that interpreter"
        )
    try:
        install(path, raw)
    except Exception as exc:  # noqa: BLE001 - a policy that cannot be applied is a refusal
        _refuse(str(exc))


class _Loader:
    """Runs the real ``ssl`` module, then pins, then steps out of the way."""

    def __init__(self, loader: Loader, path: str, raw: bytes) -> None:
        self._loader = loader
        self._path = path
        self._raw = raw

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        module.__loader__ = self._loader
        spec = getattr(module, "__spec__", None)
        if spec is not None:
            spec.loader = self._loader
        _install(self._path, self._raw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _PinOnImport:
    """A ``sys.meta_path`` finder that pins the process right after ``ssl`` first runs."""

    def __init__(self, path: str, raw: bytes) -> None:
        self._path = path
        self._raw = raw

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if name != "ssl":
            return None
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass
        import importlib.util

        spec = importlib.util.find_spec("ssl")
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader, self._path, self._raw)  # type: ignore[assignment]
        return spec


def _findable(name: str) -> bool:
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        if find is not None and find(name, None) is not None:
            return True
    return False


def _validated(raw: bytes) -> bool:
    expected = os.environ.get("TLSPIN_POLICY_SHA256", "")
    if not expected:
        return False
    import hashlib

    return hashlib.sha256(raw).hexdigest() == expected.strip().lower()


def _pin() -> None:
    path = os.environ.get("TLSPIN_POLICY", "")
    if not path:
        _refuse(
            "PYTHONPATH holds tlspin's start-up hook but TLSPIN_POLICY names no policy file "
            "(set it to the policy's absolute path, or take the hook off PYTHONPATH)"
        )
    if not os.path.isabs(path):
        _refuse(f"TLSPIN_POLICY must be an absolute path, found {path!r}")
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_BYTES + 1)
    except OSError as exc:
        _refuse(f"cannot read the pin policy {path} (TLSPIN_POLICY): {exc.strerror or exc}")
    if "ssl" not in sys.modules and _validated(raw):
        if not _findable("tlspin"):
            _refuse(
                f"the pin policy {path} (TLSPIN_POLICY) cannot be applied: there is no tlspin "
                f"for {sys.executable}; install tlspin in the environment of that interpreter"
            )
        sys.meta_path.insert(0, _PinOnImport(path, raw))
    else:
        _install(path, raw)


def _chain(me: ModuleType) -> None:
    # Run the sitecustomize this one shadows, with site's own handling of its errors.
    import site

    sys.modules.pop("sitecustomize", None)
    site.execsitecustomize()
    # importlib re-files whatever sits under this name once this module finishes; with no
    # other sitecustomize, that is this one.
    sys.modules.setdefault("sitecustomize", me)


def _main() -> None:
    here = os.path.realpath(os.path.dirname(os.path.abspath(__file__)))
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != here]
    _pin()
    _chain(sys.modules[__name__])


_main()
