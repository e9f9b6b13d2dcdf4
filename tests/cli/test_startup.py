"""``tlspin --help`` starts fast: it imports no sub-command module (bench_startup times it)."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from tlspin.cli import _COMMANDS, _SUMMARIES, main

from .world import invoke

_PROBE = """
import sys
from tlspin.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
loaded = [m for m in sys.modules if m.startswith("tlspin.") and m not in
          ("tlspin._entry", "tlspin.cli")]
heavy = [m for m in ("asyncio", "ssl", "rich", "cryptography", "json", "socket")
         if m in sys.modules]
print(sorted(loaded), heavy, file=sys.stderr)
"""


def test_help_imports_no_command_module() -> None:
    """The group's --help lists every command without importing any of their modules."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True
    )
    assert proc.stderr.strip() == "[] []"
    for name in _COMMANDS:
        assert name in proc.stdout


@pytest.mark.parametrize("name", sorted(_COMMANDS))
def test_listed_summary_is_the_commands_own(name: str) -> None:
    """The summary --help shows without importing a command equals the one click derives."""
    command = main.get_command(click.Context(main), name)
    assert command is not None
    assert _SUMMARIES[name] == command.get_short_help_str(limit=1000)


def test_help_lists_each_command_with_its_summary() -> None:
    """Twin: the listing really shows each summary (wrapped, not cut)."""
    out = "".join(invoke("--help").stdout.split())  # wrapping may break lines at hyphens
    for name, summary in _SUMMARIES.items():
        assert "".join(f"{name} {summary}".split()) in out
