"""Console-script entry point.

Kept apart from :mod:`tlspin.cli` so that a core-only install (no ``[cli]`` extra) still gets a
helpful message instead of an ``ImportError`` traceback.
"""

from __future__ import annotations

import sys
from importlib.util import find_spec


def main() -> None:
    """Run the ``tlspin`` command line, or explain how to install it."""
    # find_spec looks the packages up without importing them: rich costs start-up time and
    # only the sub-commands that print tables load it.
    if find_spec("click") is None or find_spec("rich") is None:
        sys.stderr.write("The tlspin command line needs its extra: pip install 'tlspin[cli]'\n")
        raise SystemExit(2)
    from tlspin.cli import main as cli_main

    cli_main()
