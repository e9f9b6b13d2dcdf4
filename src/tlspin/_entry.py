"""Console-script entry point.

Kept apart from :mod:`tlspin.cli` so that a core-only install (no ``[cli]`` extra) still gets a
helpful message instead of an ``ImportError`` traceback, and so that ``tlspin``, ``tlspin -h``
and ``tlspin --help`` can print the group's help without importing click, which is most of the
command's start-up time (``bench/bench_startup.py``).
"""

from __future__ import annotations

import codecs
import io
import os
import sys
from importlib.util import find_spec

# What click prints for `tlspin --help` at the default width (78 columns: any terminal of 80 or
# more, or none). tests/cli/test_startup.py checks it is byte for byte what click prints; after
# changing a command's summary or the group's options, paste in the output of
# `COLUMNS=80 python -c "from tlspin.cli import main; main(prog_name='tlspin')" --help`.
HELP = """Usage: tlspin [OPTIONS] COMMAND [ARGS]...

  tlspin: public-key pinning for HTTPS clients, and the tools to run it
  safely.

Options:
  --version   Show the version and exit.
  -h, --help  Show this message and exit.

Commands:
  audit       Run a program through a forging proxy; report the hosts it does
              not pin.
  backup-key  Create a backup key pair and a CSR for a host, and print its
              pin.
  bundle      Sign, verify and inspect signed pin bundles (docs/bundle-
              format.md).
  check       Connect to a server and check its verified chain against pins.
  ct          Certificate Transparency: find certificates for pinned names
              with unpinned keys.
  demo        Show pinning, an attack, reports and a rotation, live on
              loopback.
  export      Export POLICY to a platform's pinning configuration.
  import      Turn an existing pinning configuration into a tlspin policy (to
              migrate).
  init        Connect to each host and write a starter policy.
  keygen      Make an Ed25519 bundle-signing key.
  lint        Check POLICY for risky pinning: missing backups, bad patterns,
              expiry, overlaps, …
  monitor     Probe every pinned endpoint of POLICY and judge its pin health.
  pin         Print the SPKI pin of each certificate, key or CSR in FILEs, or
              of a server's chain.
  preflight   Check a planned certificate chain against every shipped policy
              version.
  run         Run a Python program with every TLS client in it pinned (no code
              change).
  serve       Run the report collector: intake at POST /reports, dashboard at
              /dashboard.
"""

_HELP_ARGS: tuple[list[str], ...] = ([], ["--help"], ["-h"])


def _columns() -> int:
    """The terminal width exactly as click's help formatter finds it (shutil.get_terminal_size,
    which costs an import of shutil)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 80
        columns = columns or 80
    return columns


def _help_without_click(args: list[str]) -> bool:
    """Print the group's help as click would and exit, when the output is sure to be the same.

    Returns False (and prints nothing) whenever click could print something else: another
    program name (``python -m tlspin``), a terminal narrower than 80 columns (click wraps the
    help to fit), a shell-completion request, a stream click would re-encode, or not POSIX.
    """
    if args not in _HELP_ARGS or os.name != "posix":
        return False
    main_module = sys.modules.get("__main__")
    if getattr(main_module, "__package__", None) not in (None, ""):
        return False  # `python -m tlspin`: click names the program "python -m tlspin"
    if os.path.basename(sys.argv[0]) != "tlspin" or os.environ.get("_TLSPIN_COMPLETE"):
        return False
    # No arguments is a usage error: the help goes to stderr, with status 2.
    stream = sys.stdout if args else sys.stderr
    if type(stream) is not io.TextIOWrapper or stream.errors is None or _columns() < 80:
        return False
    try:
        if codecs.lookup(stream.encoding).name != "utf-8":
            return False  # click would re-wrap an ASCII stream; let it
    except LookupError:
        return False
    try:
        stream.write(HELP)
        stream.flush()
    except BrokenPipeError:
        # As click does: the reader went away (`tlspin --help | head -1`); exit 1, no traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
        raise SystemExit(1) from None
    raise SystemExit(2 if not args else 0)


def main() -> None:
    """Run the ``tlspin`` command line, or explain how to install it."""
    # find_spec looks the packages up without importing them: rich costs start-up time and
    # only the sub-commands that print tables load it.
    if find_spec("click") is None or find_spec("rich") is None:
        sys.stderr.write("The tlspin command line needs its extra: pip install 'tlspin[cli]'\n")
        raise SystemExit(2)
    _help_without_click(sys.argv[1:])
    from tlspin.cli import main as cli_main

    cli_main()
