"""Shared plumbing of the CLI commands: errors, warnings, consoles and safe output files.

Every command callback is wrapped in :func:`guarded`, so that bad input of any kind ends in one
line on stderr (``error: …``) and a documented exit code, never a traceback. Output files are
written with :func:`write_output`, which never leaves a partial file behind.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import click

if TYPE_CHECKING:
    from rich.console import Console

    from tlspin._shared.probe import ProbeResult, Target
    from tlspin.policy import PinPolicy

P = ParamSpec("P")
R = TypeVar("R")

#: Exit codes shared by the commands (each command documents which it uses).
EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_CONNECT = 3

# The engine logs each violation; the CLI reports them itself, so keep the log quiet here.
logging.getLogger("tlspin").addHandler(logging.NullHandler())

# OpenSSL's verify messages for a chain that reaches no trusted root (X509_V_ERR 2, 18, 19, 20).
_UNTRUSTED = re.compile(r"unable to get (local )?issuer certificate|self[- ]signed certificate")

#: Largest input file the commands read (certificates, policies, configurations).
MAX_INPUT_BYTES = 16 * 1024 * 1024


def one_line(text: object) -> str:
    """Collapse a (possibly multi-line) message into one line, shown literally (see _text)."""
    from tlspin.cli._text import clean

    parts = [part.strip() for part in str(text).splitlines()]
    return clean("; ".join(part for part in parts if part))


class CLIError(click.ClickException):
    """A failure reported as one ``error: …`` line and a chosen exit code."""

    def __init__(self, message: str, *, code: int = EXIT_USAGE) -> None:
        super().__init__(one_line(message))
        self.exit_code = code  # type: ignore[misc]  # click reads it per instance

    def show(self, file: Any = None) -> None:
        """Print the one-line error to stderr."""
        click.echo(f"error: {self.message}", err=True)


def fail(message: str, *, code: int = EXIT_USAGE) -> NoReturn:
    """Stop the command with a one-line error and exit *code*."""
    raise CLIError(message, code=code)


def warn(message: str) -> None:
    """Print a one-line warning to stderr."""
    click.echo(f"warning: {one_line(message)}", err=True)


def info(message: str) -> None:
    """Print a one-line note to stderr (kept off stdout, which carries the output)."""
    click.echo(one_line(message), err=True)


def guarded(func: Callable[P, R]) -> Callable[P, R]:
    """Wrap a command callback: tlspin warnings become ``warning:`` lines, errors one line.

    ``click`` exceptions (usage errors, :class:`CLIError`) pass through; configuration errors,
    ``OSError`` and anything unexpected become exit code 2 with a one-line message.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from tlspin.exceptions import TlspinWarning

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TlspinWarning)
            try:
                return func(*args, **kwargs)
            except (click.ClickException, click.exceptions.Exit, click.Abort):
                raise
            except KeyboardInterrupt:
                raise click.Abort from None
            except ValueError as exc:  # PinConfigurationError and friends: bad input
                raise CLIError(str(exc) or type(exc).__name__) from None
            except OSError as exc:
                where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
                msg = f"{where}{exc.strerror or exc}"
                raise CLIError(msg) from None
            except Exception as exc:  # noqa: BLE001 - the CLI must never show a traceback
                msg = f"unexpected {type(exc).__name__}: {exc}"
                raise CLIError(msg) from None
            finally:
                seen: set[str] = set()
                for item in caught:
                    if issubclass(item.category, TlspinWarning):
                        text = one_line(item.message)
                        if text not in seen:
                            seen.add(text)
                            warn(text)

    return wrapper


def stdout_console() -> Console:
    """A rich console on the current stdout that never interprets markup in a string
    (created per call: tests swap sys.stdout). Style text with ``_text.styled``."""
    from tlspin.cli._text import console

    return console()


def read_input(path: str | Path, *, what: str = "file") -> bytes:
    """Read an input file (``-`` is stdin) with a size limit; errors exit 2."""
    if str(path) == "-":
        data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        name = "stdin"
    else:
        p = Path(path)
        try:
            if p.is_dir():
                fail(f"{p}: expected a {what}, found a directory")
            with p.open("rb") as handle:
                data = handle.read(MAX_INPUT_BYTES + 1)
        except FileNotFoundError:
            fail(f"{p}: no such {what}")
        except OSError as exc:
            fail(f"{p}: cannot read the {what}: {exc.strerror or exc}")
        name = str(p)
    if len(data) > MAX_INPUT_BYTES:
        fail(f"{name}: the {what} is larger than {MAX_INPUT_BYTES} bytes")
    return data


def load_policy(path: str | Path, *, allow_empty: bool = False) -> PinPolicy:
    """Load a policy file (TOML, or JSON by suffix); any problem exits 2 with one line."""
    from tlspin.exceptions import PinConfigurationError, SinglePinWarning
    from tlspin.policyfile import load

    p = Path(path)
    if not p.exists():
        fail(f"{p}: no such policy file")
    if p.is_dir():
        fail(f"{p}: expected a policy file, found a directory")
    with warnings.catch_warnings():
        # Single-pin rules are reported by lint (TP001); loading must not nag about them.
        warnings.simplefilter("ignore", SinglePinWarning)
        try:
            policy = load(p)
        except PinConfigurationError as exc:
            fail(str(exc))
    if not policy.rules and not allow_empty:
        fail(f"{p}: the policy is empty; expected at least one [[rule]]")
    return policy


def probe_live(target: Target, *, cafile: str | None, timeout: float) -> ProbeResult:
    """Probe *target*, trusting *cafile* (default: the system store).

    An unusable CA file exits 2; a failure to connect or verify comes back in the result.
    """
    import dataclasses

    from tlspin._shared.probe import probe

    try:
        result = probe(target, cafile=cafile, timeout=timeout)
    except OSError as exc:
        fail(f"cannot use the CA file {cafile}: {exc.strerror or exc}")
    except ValueError as exc:
        fail(str(exc))
    if cafile is None and result.error_kind == "verify" and _UNTRUSTED.search(result.error or ""):
        hint = (
            "; the chain does not verify against the system trust store: if the server uses a "
            "private CA, pass its root certificate with --cafile FILE"
        )
        result = dataclasses.replace(result, error=f"{result.error}{hint}")
    return result


def write_output(
    out: str | None,
    text: str | bytes,
    *,
    overwrite: bool = True,
    mode: int = 0o644,
) -> None:
    """Write the command's result to *out* (``None`` or ``-``: stdout), atomically.

    Raises:
        CLIError: the file exists and *overwrite* is false, or it cannot be written.
    """
    if out in (None, "-"):
        if isinstance(text, bytes):
            sys.stdout.buffer.write(text)
            sys.stdout.flush()
        else:
            click.echo(text, nl=not text.endswith("\n"))
        return
    from tlspin._shared.policyio import atomic_write

    assert out is not None
    target = Path(out)
    if target.exists() and not overwrite:
        fail(f"{target} exists; pass --force to replace it")
    if target.is_dir():
        fail(f"{target}: expected a file name, found a directory")
    try:
        atomic_write(target, text, mode=mode)
    except OSError as exc:
        fail(f"cannot write {target}: {exc.strerror or exc}")
