"""The ``tlspin`` command line (click + rich).

Sub-commands live in their own modules and are imported only when they run, so that
``tlspin --help`` and every command start fast (``bench/bench_cli.py`` measures both). The
group's help lists each command with the summary kept in :data:`_SUMMARIES`, so listing them
imports none of their modules; a test keeps those summaries equal to the commands' own.
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

# name -> the command's one-line summary, as click derives it from the docstring.
_SUMMARIES: dict[str, str] = {
    "audit": "Run a program through a forging proxy; report the hosts it does not pin.",
    "backup-key": "Create a backup key pair and a CSR for a host, and print its pin.",
    "bundle": "Sign, verify and inspect signed pin bundles (docs/bundle-format.md).",
    "check": "Connect to a server and check its verified chain against pins.",
    "ct": "Certificate Transparency: find certificates for pinned names with unpinned keys.",
    "demo": "Show pinning, an attack, reports and a rotation, live on loopback.",
    "export": "Export POLICY to a platform's pinning configuration.",
    "import": "Turn an existing pinning configuration into a tlspin policy (to migrate).",
    "init": "Connect to each host and write a starter policy.",
    "keygen": "Make an Ed25519 bundle-signing key.",
    "lint": "Check POLICY for risky pinning: missing backups, bad patterns, expiry, overlaps, …",
    "monitor": "Probe every pinned endpoint of POLICY and judge its pin health.",
    "pin": "Print the SPKI pin of each certificate, key or CSR in FILEs, or of a server's chain.",
    "preflight": "Check a planned certificate chain against every shipped policy version.",
    "run": "Run a Python program with every TLS client in it pinned (no code change).",
    "serve": "Run the report collector: intake at POST /reports, dashboard at /dashboard.",
}


class _LazyGroup(click.Group):
    """A group that imports each sub-command's module only when that command is used."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's own version calls get_command() for every name, importing all the modules
        # (asyncio, ssl, rich…) just to print their summaries.
        rows = [(name, _SUMMARIES.get(name, "")) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

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
