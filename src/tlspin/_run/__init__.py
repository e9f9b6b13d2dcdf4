"""``tlspin run``: pin a Python program at interpreter start, with no change to its code.

Two start-up hooks apply ``TLSPIN_POLICY`` (see :mod:`tlspin._startup`): ``tlspin-startup.pth``
in the site-packages of every environment tlspin is installed in, and a ``sitecustomize`` in a
directory of its own (:data:`HOOK_DIR`), put first on ``PYTHONPATH``, for interpreters that
reach tlspin through ``PYTHONPATH`` only, or not at all (they refuse to start). This package
is the parent's half: read and validate the policy, build the environment, refuse commands that
would start Python without the hooks. The child's half (parse the bytes the hook read and
inject them) is :mod:`tlspin._startup`'s, so a pinned interpreter never imports this package.

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
from pathlib import Path
from typing import TYPE_CHECKING

# Only `tlspin run` (the parent) imports this package; a pinned interpreter never does (see
# tlspin._startup), so its imports cost no pinned program anything.
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from tlspin._run.command import Launch
    from tlspin.policy import PinPolicy

__all__ = [
    "ENV_DIGEST",
    "ENV_POLICY",
    "EXIT_REFUSED",
    "HOOK_DIR",
    "environment",
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
    from tlspin.exceptions import PolicyError

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


# Run by skipped_by() in the interpreter a command would start, with its options: exit 0 when
# a start-up hook (tlspin-startup.pth, with these options) armed it.
_PROBE = (
    "import sys; m = sys.modules.get('tlspin._startup'); "
    "sys.exit(0 if m is not None and m.armed() else 3)"
)


def _reaches(launch: Launch) -> bool:
    """True if tlspin's start-up hooks arm *launch*'s interpreter with its options and
    environment: a trial run of that interpreter (``-c``, nothing of the program)."""
    import subprocess

    flags = sorted(launch.flags)
    options = [f"-{''.join(flags)}"] if flags else []
    try:
        done = subprocess.run(  # noqa: S603 - the interpreter the user's command runs
            [launch.interpreter, *options, "-c", _PROBE],
            env=dict(launch.env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def skipped_by(command: Sequence[str], env: Mapping[str, str]) -> str | None:
    """Why *command*, run with *env* (from :func:`environment`), would start Python unpinned;
    None when it would not (or when it starts something that cannot be seen into).

    ``-S`` skips every start-up hook. ``-I`` and ``-E`` make Python ignore ``PYTHONPATH``, and
    with it the ``sitecustomize`` hook; an interpreter with tlspin installed still runs
    ``tlspin-startup.pth`` and is pinned, which a trial run of that interpreter with those
    options shows. The options are found on the command line, after ``env`` (``env -S`` split
    too) and on the shebang line of the script the command names. What a wrapper shell script
    or a compiled launcher adds cannot be seen (``tlspin audit`` shows the result).
    """
    # Imported here: only a command to run needs it (not --print-env or --hook-dir).
    from tlspin._run.command import SKIPPING, Refused, resolve

    try:
        launch = resolve(command, env)
    except Refused as exc:
        return str(exc)
    if launch is None:
        return None
    where = "" if launch.via == "the command" else f" (from {launch.via})"
    if "S" in launch.flags:
        return (
            f"{launch.interpreter} runs with {SKIPPING['S']}{where}, which makes Python skip "
            "tlspin's start-up hook: the program would run unpinned; drop that option"
        )
    on_path = str(HOOK_DIR) in launch.env.get("PYTHONPATH", "").split(os.pathsep)
    if (launch.flags or not on_path) and not _reaches(launch):
        if launch.flags:
            options = " and ".join(SKIPPING[f] for f in sorted(launch.flags))
            cause = f"runs with {options}{where}, which makes Python skip"
        else:
            cause = f"gets a PYTHONPATH without{where}"
        return (
            f"{launch.interpreter} {cause} tlspin's start-up hook, and tlspin is not installed "
            "in that interpreter's environment (its tlspin-startup.pth would pin it anyway): "
            "the program would run unpinned; drop that option, or install tlspin there"
        )
    return None
