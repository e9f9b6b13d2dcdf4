"""``tlspin run``: pin a Python program at interpreter start, with no change to its code.

The mechanism is a ``sitecustomize`` in a directory of its own (:data:`HOOK_DIR`), put first on
``PYTHONPATH``; see ``hook/sitecustomize.py`` for what it does in the program's interpreter.
This module holds the two halves it needs from tlspin: the parent's (read and validate the
policy, build the environment, refuse interpreter flags that skip the hook) and the child's
(:func:`install`: parse the bytes the hook read and inject them).

Environment variables (inherited by every program the pinned one starts):

* ``TLSPIN_POLICY`` — absolute path of the policy file (TOML, or JSON for ``*.json``);
* ``TLSPIN_POLICY_SHA256`` — optional: the SHA-256 (hex) of the policy bytes that were
  validated. When the file still has that digest, a child defers parsing to its first
  ``import ssl``; otherwise it validates at start;
* ``PYTHONPATH`` — starting with :data:`HOOK_DIR` (never replaced: prepended).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from tlspin.exceptions import PolicyError
from tlspin.policy import PinPolicy

__all__ = [
    "ENV_DIGEST",
    "ENV_POLICY",
    "EXIT_REFUSED",
    "HOOK_DIR",
    "environment",
    "install",
    "read_policy",
    "skipped_by",
]

#: The directory that goes first on PYTHONPATH; it holds ``sitecustomize.py`` alone.
HOOK_DIR = Path(__file__).resolve().parent / "hook"
ENV_POLICY = "TLSPIN_POLICY"
ENV_DIGEST = "TLSPIN_POLICY_SHA256"
#: Exit status of a pinned interpreter that refuses to start (bad policy, no tlspin).
EXIT_REFUSED = 70


def read_policy(path: str | os.PathLike[str]) -> tuple[Path, bytes, PinPolicy]:
    """Read and validate a policy file: its absolute path, its bytes, the policy they hold.

    Raises:
        PolicyError: the file cannot be read, or is not a valid policy.
    """
    from tlspin import policyfile

    absolute = Path(os.path.abspath(path))
    try:
        raw = absolute.read_bytes()
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {absolute}: {exc.strerror or exc}") from None
    return absolute, raw, policyfile.load_bytes(raw, absolute)


def environment(
    policy_path: Path, raw: bytes, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment that pins a Python program (and the ones it starts) with this policy."""
    env = dict(os.environ if base is None else base)
    existing = env.get("PYTHONPATH", "")
    hook = str(HOOK_DIR)
    entries = [p for p in existing.split(os.pathsep) if p and p != hook]
    env["PYTHONPATH"] = os.pathsep.join([hook, *entries])
    env[ENV_POLICY] = str(policy_path)
    env[ENV_DIGEST] = hashlib.sha256(raw).hexdigest()
    return env


# Interpreter options that take a value (in the same argument or the next one).
_VALUE_FLAGS = frozenset("WX")
_SKIPPING = {"I": "-I (isolated mode)", "E": "-E (ignore PYTHON* variables)", "S": "-S (no site)"}


def skipped_by(command: Sequence[str]) -> str | None:
    """If *command* runs a Python interpreter with a flag that skips the hook, name the flag.

    ``-I``, ``-E`` and ``-S`` make Python ignore ``PYTHONPATH`` or ``sitecustomize``, so the
    program would run unpinned without a word. Only the command itself can be checked: a
    program that later starts ``python -I`` is out of reach (``tlspin audit`` shows it).
    """
    if not command or not os.path.basename(command[0]).startswith("python"):
        return None
    args = iter(command[1:])
    for arg in args:
        if arg == "--" or not arg.startswith("-") or arg == "-":
            return None
        if arg.startswith("--"):
            if arg == "--check-hash-based-pycs":
                next(args, None)
            continue
        cluster = arg[1:]
        for i, flag in enumerate(cluster):
            if flag in _SKIPPING:
                return _SKIPPING[flag]
            if flag in "cm":
                return None  # the rest is the command or module
            if flag in _VALUE_FLAGS:
                if i == len(cluster) - 1:
                    next(args, None)
                break
    return None


def install(path: str, raw: bytes) -> None:
    """In the pinned interpreter: parse the policy bytes the hook read, and inject them.

    Raises:
        PolicyError: the bytes are not a valid policy.
    """
    from tlspin import policyfile
    from tlspin.injection import inject

    inject(policyfile.load_bytes(raw, path))
