"""docs/cli-reference.md is generated from the click commands and must be current; docs/cli.md
has a section for every command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from tlspin.cli import main as tlspin_main
from tlspin.cli._docgen import iter_commands, main, render

DOCS = Path(__file__).resolve().parents[2] / "docs"
REFERENCE = DOCS / "cli-reference.md"


def test_reference_is_current() -> None:
    """The committed reference is exactly what the generator writes from today's commands.

    Generated in a fresh interpreter, as ./scripts/gen-cli-docs does: click caches each command's
    help option, so a command another test invoked on its own would show a different one here.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "tlspin.cli._docgen", "--check", str(REFERENCE)],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, f"{proc.stderr}{proc.stdout}"


def test_check_mode_reports_a_stale_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              ) -> None:
    """`--check` exits 0 on the generated text and 1, with a diff, on a stale copy."""
    current = tmp_path / "current.md"
    current.write_text(render(), encoding="utf-8")
    assert main(["--check", str(current)]) == 0
    stale = tmp_path / "stale.md"
    stale.write_text(render().replace("Show the version and exit.", "Old text."), encoding="utf-8")
    assert main(["--check", str(stale)]) == 1
    out = capsys.readouterr()
    assert "-  --version   Old text." in out.out
    assert "is not current: run ./scripts/gen-cli-docs" in out.err


def _toy(option_help: str) -> click.Group:
    @click.group("tlspin")
    def root() -> None:
        """Toy root."""

    @root.command("run")
    @click.option("--fast", is_flag=True, help=option_help)
    def run(fast: bool) -> None:
        """Run something."""

    return root


def test_reference_follows_the_commands() -> None:
    """A new command and a changed option help show up in the generated text."""
    one, two = render(_toy("Go fast.")), render(_toy("Go faster."))
    assert "## `tlspin run`" in one
    assert "[`tlspin run`](#tlspin-run) | Run something. |" in one
    assert "--fast  Go fast." in one
    assert one != two


def test_a_command_that_cannot_load_is_an_error() -> None:
    """A command shown as unavailable (a missing extra) stops generation instead of a gap."""
    root = _toy("Go fast.")

    @root.command("broken", help="(unavailable: needs uvicorn)")
    def broken() -> None: ...

    with pytest.raises(click.ClickException, match="'tlspin broken' could not be loaded"):
        render(root)


def _guide_headings() -> list[str]:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    return re.findall(r"^#+ (.*)$", text, flags=re.MULTILINE)


def test_guide_has_a_section_for_every_command() -> None:
    """docs/cli.md has a heading naming each top-level command, and names every sub-command."""
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    headings = "\n".join(_guide_headings())
    missing_sections, missing_mentions = [], []
    for ctx, _ in list(iter_commands(tlspin_main))[1:]:
        path = ctx.command_path
        if ctx.parent is not None and ctx.parent.parent is None:
            if not re.search(rf"`{re.escape(path)}\b", headings):
                missing_sections.append(path)
        elif path not in text:
            missing_mentions.append(path)
    assert not missing_sections, f"docs/cli.md has no section (## `…`) for {missing_sections}"
    assert not missing_mentions, f"docs/cli.md never mentions {missing_mentions}"
