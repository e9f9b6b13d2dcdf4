"""tlspin's start-up hook on ``PYTHONPATH``: pins a Python process before any of its own code runs.

Used by ``tlspin run --policy P -- COMMAND``, or directly with two environment variables:
``PYTHONPATH`` starting with this directory and ``TLSPIN_POLICY`` naming the policy file by its
absolute path. Python imports ``sitecustomize`` while it starts; this one

1. takes its directory off ``sys.path`` again (the directory holds this file alone, so nothing
   else is ever shadowed);
2. pins the process through :mod:`tlspin._startup`, unless ``tlspin-startup.pth`` (installed
   with tlspin, run earlier by ``site``) already did: this hook is what reaches an interpreter
   that imports tlspin only through ``PYTHONPATH``, and what stops one that cannot import it;
3. runs the ``sitecustomize`` it shadows (a virtual environment's, the distribution's) through
   ``site`` itself, so that one behaves as if tlspin were not there; ``usercustomize`` follows
   as usual.

It fails closed. An exception raised here would only be printed by ``site``, and the program
would run unpinned; so when the policy cannot be read or applied, or tlspin cannot be imported
in this interpreter, it writes why to stderr and ends the process with status 70.
"""

from __future__ import annotations

import os
import sys

# Nothing but os and sys at start-up: this runs in every interpreter the policy reaches.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import NoReturn


def _refuse(why: str) -> NoReturn:
    try:
        command = " ".join(getattr(sys, "orig_argv", None) or [sys.executable])
        sys.stderr.write(f"tlspin: refused to start {command}: {why}\n")
        sys.stderr.flush()
    finally:
        os._exit(70)


def _pin() -> None:
    if not os.environ.get("TLSPIN_POLICY", ""):
        _refuse(
            "PYTHONPATH holds tlspin's start-up hook but TLSPIN_POLICY names no policy file "
            "(set it to the policy's absolute path, or take the hook off PYTHONPATH)"
        )
    try:
        from tlspin import _startup
    except Exception as exc:  # noqa: BLE001 - any failure to import means no pinning
        _refuse(
            f"the pin policy {os.environ['TLSPIN_POLICY']} (TLSPIN_POLICY) cannot be applied: "
            f"tlspin cannot be imported by {sys.executable} ({type(exc).__name__}: {exc}); "
            "install tlspin in the environment of that interpreter"
        )
    _startup.start()


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
