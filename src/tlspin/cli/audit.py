"""``tlspin audit -- COMMAND...``: which hosts does a program really pin?"""

from __future__ import annotations

import json
import shlex
import sys
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from tlspin.audit import AuditReport

_STYLE = {
    "not-pinned": ("NOT PINNED", "bold red"),
    "plaintext": ("PLAINTEXT", "bold red"),
    "pinned": ("pinned", "bold green"),
    "refused": ("refused", "green"),
}


def _parse_resolve(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    from tlspin.audit import loopback_address

    mapping = {}
    for value in values:
        host, sep, address = value.partition("=")
        if not sep or not host or not address:
            msg = f"expected HOST=ADDRESS (e.g. api.example.com=127.0.0.1), found {value!r}"
            raise click.BadParameter(msg)
        try:
            mapping[host.strip().lower().rstrip(".")] = loopback_address(address.strip())
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return mapping


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    short_help="Run a program through a forging proxy; report the hosts it does not pin.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--expect-pinned",
    "expect_pinned",
    metavar="HOST",
    multiple=True,
    help="Exit 1 unless the program refused the forged certificate for HOST (repeatable).",
)
@click.option(
    "--resolve",
    metavar="HOST=ADDRESS",
    multiple=True,
    callback=_parse_resolve,
    help="Forward requests for HOST to this loopback address (repeatable).",
)
@click.option(
    "--upstream-cafile",
    type=click.Path(exists=True, dir_okay=False),
    help="CA bundle that verifies the real servers when forwarding (default: system store).",
)
@click.option("--timeout", type=float, default=None, metavar="SECONDS",
              help="Kill the program after SECONDS.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def audit(  # noqa: PLR0917 - click passes every option positionally by name
    as_json: bool,
    expect_pinned: tuple[str, ...],
    resolve: dict[str, str],
    upstream_cafile: str | None,
    timeout: float | None,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND with a forging HTTPS proxy and its CA trusted, and report per host.

    The program gets HTTPS_PROXY, HTTP_PROXY and ALL_PROXY pointing at a proxy on 127.0.0.1,
    and the proxy's CA through SSL_CERT_FILE, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE and
    NODE_EXTRA_CA_CERTS. A host is NOT PINNED when the program sent a request through the
    forged certificate. Only request lines are shown, never headers or bodies.

    The proxy forwards requests only to loopback servers (localhost, loopback addresses,
    --resolve mappings); it never contacts any other host.

    Exit status: 0, or 1 when an --expect-pinned host was not pinned, or 2 when the audit
    could not run.

    \b
    Example:
      tlspin audit --expect-pinned api.example.com \\
          --resolve api.example.com=127.0.0.1 -- python client.py
    """
    from tlspin.audit import run_audit

    try:
        report = run_audit(
            command,
            resolve=resolve,
            upstream_cafile=upstream_cafile,
            expect_pinned=expect_pinned,
            timeout=timeout,
            # With --json, stdout carries only the report; the program's output goes to stderr.
            stdout=sys.stderr if as_json else None,
        )
    except OSError as exc:
        click.echo(f"tlspin audit: could not run {command[0]!r}: {exc.strerror or exc}", err=True)
        raise SystemExit(2) from None
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        _print_table(report)
    raise SystemExit(0 if report.ok else 1)


def _print_table(report: AuditReport) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    status = "timed out (killed)" if report.timed_out else f"exit status {report.exit_code}"
    console.print(
        Text.assemble("\n", ("tlspin audit", "bold"), f": {shlex.join(report.command)} ({status})")
    )
    if not report.hosts:
        console.print(
            "[yellow]The program made no connection through the proxy[/yellow] (does it honour "
            "HTTPS_PROXY?)"
        )
    else:
        table = Table(show_lines=False)
        table.add_column("host")
        table.add_column("verdict")
        table.add_column("conn", justify="right")
        table.add_column("what the proxy saw", overflow="fold")
        for host in report.hosts:
            label, style = _STYLE[host.verdict]
            seen = [f"→ {line}" for line in host.requests] + list(host.details)
            seen += [f"upstream {u}" for u in host.upstream]
            table.add_row(
                f"{host.host}:{host.port}",
                Text(label, style=style),
                str(host.connections),
                "\n".join(seen),
            )
        console.print(table)
        console.print(
            "[dim]NOT PINNED: a request went through a certificate forged by a CA the program "
            "trusts. pinned/refused: no request did.[/dim]"
        )
    for exp in report.expectations:
        mark = "[green]✓[/green]" if exp.met else "[red]✗[/red]"
        console.print(f"{mark} expected {exp.host} to be pinned: {exp.reason}")
