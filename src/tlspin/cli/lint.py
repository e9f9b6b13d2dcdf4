"""``tlspin lint``: check a policy for the mistakes that brick clients.

Exit codes: 0 clean (nothing at or above ``--fail-on``), 1 findings at or above it (errors by
default), 2 unreadable input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import click

from tlspin.cli._common import EXIT_FAIL, EXIT_OK, fail, guarded, read_input, stdout_console


@click.command("lint")
@click.argument("policy", type=click.Path(dir_okay=False))
@click.option(
    "--live", is_flag=True, help="Also connect to each rule's hosts and check their chains."
)
@click.option(
    "--cafile", type=click.Path(dir_okay=False), help="Trusted CA certificates for --live."
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Port for --live connections (default: each rule's ports, else 443).",
)
@click.option(
    "--timeout", type=float, default=10.0, show_default=True, help="Seconds per --live connection."
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option(
    "--fail-on",
    type=click.Choice(["error", "warning", "info"]),
    default="error",
    show_default=True,
    help="Lowest severity that makes the exit code 1.",
)
@guarded
def lint(
    *,
    policy: str,
    live: bool,
    cafile: str | None,
    port: int | None,
    timeout: float,
    as_json: bool,
    fail_on: str,
) -> None:
    """Check POLICY for risky pinning: missing backups, bad patterns, expiry, overlaps, …

    Every finding has a stable code (TP001…), a severity and a one-line explanation. Exit codes:
    0 clean, 1 errors (or anything at --fail-on), 2 unreadable input.
    """
    from tlspin._shared.probe import ProbeResult, Target
    from tlspin.cli._common import probe_live
    from tlspin.lint import LintInputError, lint_text

    raw = read_input(policy, what="policy file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        fail(f"{policy}: the policy file is not UTF-8 text")
    if cafile is not None and not Path(cafile).is_file():
        fail(f"{cafile}: no such CA file")

    def prober(host: str, rule_port: int | None) -> ProbeResult:
        # An explicit --port wins over the policy's ports.
        chosen = port if port is not None else rule_port if rule_port is not None else 443
        return probe_live(Target(host, chosen), cafile=cafile, timeout=timeout)

    fmt: Literal["toml", "json"] = "json" if Path(policy).suffix.lower() == ".json" else "toml"
    try:
        report = lint_text(text, format=fmt, live=prober if live else None)
    except LintInputError as exc:
        fail(f"{policy}: {exc}")
    failed = report.failed(fail_on)  # type: ignore[arg-type]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "policy": policy,
                    "rules": report.rules,
                    "counts": {s: report.count(s) for s in ("error", "warning", "info")},
                    "failed": failed,
                    "findings": [f.to_json() for f in report.findings],
                },
                indent=2,
            )
        )
    else:
        _print(policy, report)
    raise click.exceptions.Exit(EXIT_FAIL if failed else EXIT_OK)


def _print(policy: str, report: object) -> None:
    from rich.table import Table

    from tlspin.cli._text import clean, styled
    from tlspin.lint import LintReport

    assert isinstance(report, LintReport)
    console = stdout_console()
    if report.findings:
        table = Table(title=styled(f"{clean(policy)}: {report.rules} rule(s)"))
        table.add_column("code", no_wrap=True)
        table.add_column("severity", no_wrap=True)
        table.add_column("line", justify="right", no_wrap=True)
        table.add_column("finding", overflow="fold")
        style = {"error": "bold red", "warning": "yellow", "info": "cyan"}
        for f in report.findings:
            # Messages quote the policy file (notes, hosts): shown literally, never as markup.
            table.add_row(
                styled(f.code),
                styled((f.severity, style[f.severity])),
                "" if f.line is None else str(f.line),
                styled(f.message),
            )
        console.width = max(console.width, 120)
        console.print(table)
    counts = ", ".join(f"{report.count(s)} {s}(s)" for s in ("error", "warning", "info"))
    console.print(styled(
        f"{clean(policy)}: {counts}" if report.findings
        else f"{clean(policy)}: clean ({report.rules} rule(s))"
    ))
