"""Generate the command-line reference (docs/cli-reference.md) from the click commands.

    python -m tlspin.cli._docgen                      # print the reference
    python -m tlspin.cli._docgen --write FILE         # write it (./scripts/gen-cli-docs does this)
    python -m tlspin.cli._docgen --check FILE         # exit 1 when FILE is not current

The reference is what ``tlspin COMMAND --help`` prints, for every command and sub-command the
``tlspin`` group lists, at a fixed width, so it changes exactly when a command's usage, options,
defaults or help text change. Commands registered lazily are imported through the group itself,
so a command added to the group appears without touching this module. Every extra must be
installed: a command that cannot be imported is an error, never a silent gap.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Iterator
from pathlib import Path

import click

__all__ = ["WIDTH", "iter_commands", "render"]

WIDTH = 100
_UNAVAILABLE = "(unavailable"
_HEADER = """\
# `tlspin` command reference

<!-- Generated from the click commands by ./scripts/gen-cli-docs
     (python -m tlspin.cli._docgen --write docs/cli-reference.md). Do not edit by hand:
     tests/docs/test_cli_reference.py fails when this file is not current. -->

What `tlspin COMMAND --help` prints, for every command. The guide — file formats, exit codes
and examples — is [cli.md](cli.md).
"""


def _context(command: click.Command, name: str, parent: click.Context | None) -> click.Context:
    settings = dict(command.context_settings)
    if parent is None:
        settings.setdefault("terminal_width", WIDTH)
        settings.setdefault("max_content_width", WIDTH)
    return click.Context(command, info_name=name, parent=parent, **settings)


def iter_commands(
    command: click.Command, name: str = "tlspin", parent: click.Context | None = None
) -> Iterator[tuple[click.Context, click.Command]]:
    """Yield (context, command) for *command* and, depth first, every sub-command it lists.

    Raises:
        click.ClickException: a listed command is missing or could not be imported.
    """
    ctx = _context(command, name, parent)
    yield ctx, command
    if not isinstance(command, click.Group):
        return
    for sub_name in command.list_commands(ctx):
        sub = command.get_command(ctx, sub_name)
        if sub is None or (sub.help or "").startswith(_UNAVAILABLE):
            reason = "" if sub is None else f": {sub.help}"
            raise click.ClickException(
                f"'{ctx.command_path} {sub_name}' could not be loaded{reason}; generate the "
                "reference in an environment with every extra installed (pip install -e '.[all]')"
            )
        yield from iter_commands(sub, sub_name, ctx)


def _anchor(path: str) -> str:
    # GitHub's heading anchors: lower case, spaces to hyphens, punctuation dropped.
    return "".join(c for c in path.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def render(root: click.Command | None = None) -> str:
    """The reference as Markdown text."""
    if root is None:
        from tlspin.cli import main as root
    assert root is not None
    entries = list(iter_commands(root))
    lines = [_HEADER, "| command | what it does |", "|---|---|"]
    for ctx, command in entries[1:]:
        summary = command.get_short_help_str(limit=WIDTH).replace("|", "\\|")
        lines.append(f"| [`{ctx.command_path}`](#{_anchor(ctx.command_path)}) | {summary} |")
    for ctx, command in entries:
        help_text = command.get_help(ctx).rstrip()
        if "```" in help_text:
            raise click.ClickException(f"the help of {ctx.command_path} contains a code fence")
        lines += ["", f"## `{ctx.command_path}`", "", "```text", help_text, "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print, write or check the reference."""
    parser = argparse.ArgumentParser(prog="python -m tlspin.cli._docgen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="FILE", type=Path, help="write the reference to FILE")
    group.add_argument("--check", metavar="FILE", type=Path,
                       help="exit 1 (showing the difference) when FILE is not current")
    args = parser.parse_args(argv)
    try:
        text = render()
    except click.ClickException as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        return 2
    if args.write is not None:
        args.write.write_text(text, encoding="utf-8")
        return 0
    if args.check is not None:
        try:
            current = args.check.read_text(encoding="utf-8")
        except OSError as exc:
            print(f"error: cannot read {args.check}: {exc.strerror}", file=sys.stderr)
            return 2
        if current == text:
            return 0
        sys.stdout.writelines(difflib.unified_diff(
            current.splitlines(keepends=True), text.splitlines(keepends=True),
            f"{args.check} (committed)", f"{args.check} (generated)",
        ))
        print(f"{args.check} is not current: run ./scripts/gen-cli-docs", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
