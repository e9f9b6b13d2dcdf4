"""Which Python, with which options, a command given to ``tlspin run`` really starts.

``tlspin run`` refuses interpreter options that would start the program unpinned; they can come
from the command line, from ``env`` (``env python -I``, ``env -S "python3 -E"``) or from the
shebang line of the script the command names (``#!/usr/bin/python3 -I``,
``#!/usr/bin/env -S python3 -E``). :func:`resolve` follows those; it cannot see into a wrapper
shell script or a compiled launcher, which may add options of its own.

Pure functions over the command and the environment; the only I/O is reading the first line of
the file a command names.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Launch", "resolve"]

# Interpreter options that take a value (in the same argument or the next one).
_VALUE_FLAGS = frozenset("WX")
#: The interpreter options that skip a start-up hook, and what each does.
SKIPPING = {"I": "-I (isolated mode)", "E": "-E (ignore PYTHON* variables)", "S": "-S (no site)"}
_SHEBANG_MAX = 512  # Linux reads at most 256 bytes of it (BINPRM_BUF_SIZE); twice that is plenty.
_MAX_DEPTH = 4  # Linux follows at most 4 levels of interpreters that are scripts themselves.


@dataclass(frozen=True, slots=True)
class Launch:
    """A Python interpreter a command starts.

    Attributes:
        interpreter: the interpreter as the command names it (a path, or a name on ``PATH``).
        flags: the hook-skipping options among its options (``"I"``, ``"E"``, ``"S"``).
        env: the environment it gets (after what ``env`` sets or removes).
        via: how it was found, for messages (``"the command"``, ``"the shebang of …"``).
    """

    interpreter: str
    flags: frozenset[str]
    env: Mapping[str, str]
    via: str


class Refused(Exception):  # noqa: N818 - a verdict, raised to unwind the parse
    """The command would start its program without the policy; the message says why."""


def _python_flags(args: Sequence[str]) -> frozenset[str]:
    """The skipping options among a Python command's options (which end at the script)."""
    found: set[str] = set()
    it = iter(args)
    for arg in it:
        if arg == "--" or not arg.startswith("-") or arg == "-":
            break
        if arg.startswith("--"):
            if arg == "--check-hash-based-pycs":
                next(it, None)
            continue
        cluster = arg[1:]
        done = False
        for i, flag in enumerate(cluster):
            if flag in SKIPPING:
                found.add(flag)
            if flag in "cm":
                done = True  # the rest is the command or module
                break
            if flag in _VALUE_FLAGS:
                if i == len(cluster) - 1:
                    next(it, None)
                break
        if done:
            break
    return frozenset(found)


def _is_python(program: str) -> bool:
    return os.path.basename(program).startswith("python")


def _emptied(arg: str) -> Refused:
    return Refused(
        f"env {arg} starts the program with an empty environment, without TLSPIN_POLICY: it "
        "would run unpinned"
    )


def _option_value(rest: list[str], short: str, long: str) -> str | None:
    """The value of env's option *short*/*long* if ``rest[0]`` is it (``-u NAME``, ``-uNAME``,
    ``--unset NAME``, ``--unset=NAME``), both taken off *rest*; None for another argument."""
    arg = rest[0]
    if arg in (short, long):
        del rest[0]
        return rest.pop(0) if rest else ""
    if arg.startswith((f"{long}=", short)):
        del rest[0]
        return arg.split("=", 1)[1] if arg.startswith(f"{long}=") else arg[2:]
    return None


def _strip_env(args: Sequence[str], env: dict[str, str]) -> list[str]:
    """``env [OPTIONS] [NAME=VALUE]... COMMAND...``: apply it to *env*, return COMMAND...."""
    rest = list(args)
    while rest:
        arg = rest[0]
        if arg == "--":
            rest.pop(0)
            break
        if arg in ("-i", "--ignore-environment", "-"):
            raise _emptied(arg)
        name = _option_value(rest, "-u", "--unset")
        if name is not None:
            env.pop(name, None)
            continue
        text = _option_value(rest, "-S", "--split-string")
        if text is not None:
            try:
                rest[:0] = shlex.split(text)
            except ValueError:  # unbalanced quotes: env itself would refuse; look anyway
                rest[:0] = text.split()
            continue
        if arg in ("-C", "--chdir"):
            del rest[:2]
            continue
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 1:
            # Other short options (-0, -v, clustered -iv): -i anywhere empties the environment.
            if "i" in arg[1:]:
                raise _emptied(arg)
            rest.pop(0)
            continue
        if arg.startswith("--"):
            rest.pop(0)
            continue
        break
    while rest and "=" in rest[0] and not rest[0].startswith("="):
        name, _, value = rest.pop(0).partition("=")
        env[name] = value
    if not env.get("TLSPIN_POLICY"):
        msg = "env removes TLSPIN_POLICY: the program would run unpinned"
        raise Refused(msg)
    return rest


def _shebang(program: str, env: Mapping[str, str]) -> list[str] | None:
    """The interpreter and its argument from *program*'s ``#!`` line, or None."""
    path = program if os.sep in program else shutil.which(program, path=env.get("PATH"))
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(_SHEBANG_MAX)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].strip().decode("utf-8", "replace")
    if not line:
        return None
    # As Linux does: the interpreter, then everything after it as ONE argument.
    interpreter, _, argument = line.replace("\t", " ").partition(" ")
    argument = argument.strip()
    return [interpreter, argument] if argument else [interpreter]


def resolve(command: Sequence[str], env: Mapping[str, str]) -> Launch | None:
    """The Python interpreter *command* starts, or None when it starts something else (a
    compiled program, a shell script: what they run cannot be seen from here).

    Raises:
        Refused: the command removes the policy from the program's environment.
    """
    current = dict(env)
    args = list(command)
    via = "the command"
    for _ in range(_MAX_DEPTH + 1):
        if not args:
            return None
        program = args[0]
        if os.path.basename(program) == "env":
            args = _strip_env(args[1:], current)
            if via == "the command":
                via = "env"
            continue
        if _is_python(program):
            return Launch(program, _python_flags(args[1:]), current, via)
        line = _shebang(program, current)
        if line is None:
            return None
        via = f"the shebang line of {program}"
        args = [*line, *args]
    return None
