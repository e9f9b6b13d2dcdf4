"""The ``tlspin`` command line (click + rich).

Sub-commands live in their own modules and are imported only when they run, so that
``tlspin --help`` and every command start fast (the lint/export benchmark measures this).
"""

from __future__ import annotations

import importlib
from typing import Any

import click

# name -> "module:attribute". Each attribute is a click.Command (or Group).
_COMMANDS: dict[str, str] = {
    "pin": "tlspin.cli.inspect:pin",
    "check": "tlspin.cli.inspect:check",
    "init": "tlspin.cli.lifecycle:init",
    "backup-key": "tlspin.cli.lifecycle:backup_key",
    "lint": "tlspin.cli.lint:lint",
    "export": "tlspin.cli.convert:export",
    "import": "tlspin.cli.convert:import_",
    "preflight": "tlspin.cli.preflight:preflight",
    "keygen": "tlspin.cli.bundle:keygen",
    "bundle": "tlspin.cli.bundle:bundle",
    "serve": "tlspin.cli.serve:serve",
    "monitor": "tlspin.cli.monitor:monitor",
    "ct": "tlspin.cli.monitor:ct",
    "audit": "tlspin.cli.audit:audit",
    "demo": "tlspin.cli.demo:demo",
    "run": "tlspin.cli.run:run",
}


class _LazyGroup(click.Group):
    """A group that imports each sub-command's module only when that command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            # A command whose optional dependencies are missing still shows up, and says why.
            missing = exc.name or str(exc)

            @click.command(name=cmd_name, help=f"(unavailable: needs {missing})")
            def _unavailable(**_: Any) -> None:
                raise click.ClickException(
                    f"'tlspin {cmd_name}' needs a package that is not installed ({missing}); "
                    "install it with: pip install 'tlspin[all]'"
                )

            return _unavailable
        command: click.Command = getattr(module, attr)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tlspin", prog_name="tlspin")
def main() -> None:
    """tlspin: public-key pinning for HTTPS clients, and the tools to run it safely."""
