"""``tlspin --help`` starts fast: it imports no sub-command module, and the group's own help is
printed without importing click, byte for byte as click prints it (bench_startup times it)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest
from packaging.requirements import Requirement

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


# The console script, and click's own rendering of the same command line (the group called
# directly: no fast path). Both run as real processes, with the same environment.
_SCRIPT = str(Path(sys.executable).with_name("tlspin"))
_CLICK = "import sys; from tlspin.cli import main; main(sys.argv[1:], prog_name='tlspin')"


def _run(command: list[str], columns: str, **extra: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "_TLSPIN_COMPLETE")}
    env.update(COLUMNS=columns, **extra)
    # stdin/stdout/stderr are pipes, never a terminal: COLUMNS alone decides the width.
    return subprocess.run(command, capture_output=True, env=env, check=False)


def _imports(command: list[str], columns: str) -> set[str]:
    """The modules *command* (a Python script and its arguments) imports."""
    proc = _run([sys.executable, "-X", "importtime", *command], columns)
    lines = proc.stderr.decode().splitlines()
    return {ln.rsplit("|", 1)[1].strip() for ln in lines if ln.startswith("import time:")}


@pytest.mark.parametrize("args", [[], ["-h"], ["--help"]], ids=["no-args", "-h", "--help"])
@pytest.mark.parametrize("columns", ["80", "200", "60"])
def test_group_help_is_what_click_prints(args: list[str], columns: str) -> None:
    """``tlspin``, ``tlspin -h`` and ``tlspin --help`` print exactly what click prints (help
    on stdout with status 0; with no arguments on stderr with status 2), at every width: the
    copy in tlspin._entry cannot drift from the commands."""
    ours = _run([_SCRIPT, *args], columns)
    clicks = _run([sys.executable, "-c", _CLICK, *args], columns)
    assert clicks.stdout or clicks.stderr  # click printed the help
    assert (ours.returncode, ours.stdout, ours.stderr) == (
        clicks.returncode,
        clicks.stdout,
        clicks.stderr,
    ), "update tlspin._entry.HELP (see the comment above it)"
    assert ours.returncode == (0 if args else 2)


def test_every_extra_with_click_requires_the_click_the_stored_help_copies() -> None:
    """Given no command, click 8.1 prints the group's help on stdout with status 0, and 8.2 on
    stderr with status 2, as the fast path does: with 8.1 allowed, ``tlspin`` alone printed
    what click would not (the comparison above only sees the click installed here)."""
    pyproject = Path(__file__).parents[2] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text("utf-8"))["project"]["optional-dependencies"]
    clicks = [Requirement(r) for deps in extras.values() for r in deps if r.startswith("click")]
    assert clicks
    for requirement in clicks:
        assert not requirement.specifier.contains("8.1.8"), requirement
        assert requirement.specifier.contains("8.2.0"), requirement


@pytest.mark.parametrize("args", [[], ["-h"], ["--help"]], ids=["no-args", "-h", "--help"])
def test_group_help_imports_no_click(args: list[str]) -> None:
    """At the default width the group's help comes without importing click (or tlspin.cli)."""
    loaded = _imports([_SCRIPT, *args], "80")
    assert "tlspin._entry" in loaded
    assert not {m for m in loaded if m.split(".")[0] == "click" or m.startswith("tlspin.cli")}


def test_narrow_terminal_help_comes_from_click() -> None:
    """Twin: where click would wrap the help differently (under 80 columns), click prints it."""
    assert "click" in _imports([_SCRIPT, "--help"], "60")
    narrow = _run([_SCRIPT, "--help"], "60").stdout
    assert narrow != _run([_SCRIPT, "--help"], "80").stdout
    assert max(len(line) for line in narrow.decode().splitlines()) <= 58


def test_python_m_and_command_help_come_from_click() -> None:
    """``python -m tlspin --help`` is named as click names it; ``tlspin lint --help`` works."""
    proc = _run([sys.executable, "-m", "tlspin", "--help"], "80")
    assert proc.returncode == 0
    assert proc.stdout.startswith(b"Usage: python -m tlspin [OPTIONS] COMMAND [ARGS]...")
    sub = _run([_SCRIPT, "lint", "--help"], "80")
    assert sub.returncode == 0
    assert sub.stdout.startswith(b"Usage: tlspin lint ")


def test_completion_requests_reach_click() -> None:
    """A shell-completion request with no other argument is click's, not the help's."""
    proc = _run([_SCRIPT], "80", _TLSPIN_COMPLETE="bash_source")
    assert proc.returncode == 0
    assert b"_TLSPIN_COMPLETE" in proc.stdout
    assert proc.stdout != _run([_SCRIPT, "--help"], "80").stdout


def test_ascii_stream_gets_clicks_help() -> None:
    """A stream click would re-encode (ASCII) is left to click: the same bytes come out."""
    ours = _run([_SCRIPT, "--help"], "80", PYTHONIOENCODING="ascii")
    clicks = _run([sys.executable, "-c", _CLICK, "--help"], "80", PYTHONIOENCODING="ascii")
    assert ours.returncode == clicks.returncode == 0
    assert ours.stdout == clicks.stdout
    assert "…".encode() in ours.stdout  # click wrote UTF-8 anyway
