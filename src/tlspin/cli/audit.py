"""``tlspin audit -- COMMAND...``: which hosts does a program really pin?"""

from __future__ import annotations

import json
import shlex
import ssl
import sys
from typing import TYPE_CHECKING

import click

from tlspin.cli._common import stdout_console
from tlspin.cli._text import clean, echo, styled

if TYPE_CHECKING:
    from tlspin.audit import AuditReport

_STYLE = {
    "not-pinned": ("NOT PINNED", "bold red"),
    "plaintext": ("PLAINTEXT", "bold red"),
    "inconclusive": ("inconclusive", "yellow"),
    "pinned": ("pinned", "bold green"),
    "refused": ("refused", "green"),
}
# Exit statuses (see the command's help).
EXIT_NOT_PINNED = 1
EXIT_CANNOT_RUN = 2
EXIT_INCONCLUSIVE = 3


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
    help="Exit 1 if HOST is shown NOT PINNED, 3 if the evidence is inconclusive (repeatable).",
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
              help="Kill the program after SECONDS (per run).")
@click.option(
    "--control-run/--no-control-run",
    default=None,
    help="Settle quiet hosts by running the program again with the genuine server, then with "
    "the forgery (default: on with --expect-pinned, for the expected hosts).",
)
@click.option(
    "--control-cert",
    type=click.Path(exists=True, dir_okay=False),
    help="The genuine certificate chain (PEM), presented in the control run instead of passing "
    "connections through to the genuine server.",
)
@click.option(
    "--control-key",
    type=click.Path(exists=True, dir_okay=False),
    help="The private key (PEM) of --control-cert.",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def audit(  # noqa: PLR0917 - click passes every option positionally by name
    as_json: bool,
    expect_pinned: tuple[str, ...],
    resolve: dict[str, str],
    upstream_cafile: str | None,
    timeout: float | None,
    control_run: bool | None,
    control_cert: str | None,
    control_key: str | None,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND with a forging HTTPS proxy and its CA trusted, and report per host.

    The program gets HTTPS_PROXY, HTTP_PROXY and ALL_PROXY pointing at a proxy on 127.0.0.1,
    and the proxy's CA through SSL_CERT_FILE, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE and
    NODE_EXTRA_CA_CERTS. Each verdict names its evidence: NOT PINNED when any application byte
    went through the forged certificate; refused or pinned when the program rejected it with a
    TLS alert; inconclusive otherwise, e.g. when it completed the handshake and closed without
    a byte (what a post-handshake pin check looks like, but also a program with nothing to
    send). Only request lines are shown, never headers or bodies.

    Control run (default with --expect-pinned): when an expected host was only quiet (it saw
    the forgery, then sent neither a byte nor an alert), the program runs again with that
    host's connections passed, unchanged, to the genuine server at its --resolve address, then
    a third time with the forgery. Data to the genuine server and none through the forgery,
    before and after, makes the host pinned. With --control-cert and --control-key, the
    control run presents that certificate instead.

    The proxy forwards requests only to loopback servers (localhost, loopback addresses,
    --resolve mappings), in every run; it never contacts any other host.

    Exit status: 0; with --expect-pinned, 1 when an expected host is NOT PINNED (or was
    reached in plaintext) in any run, else 3 when one is inconclusive (including never
    contacted); 2 when the audit could not run.

    \b
    Example:
      tlspin audit --expect-pinned api.example.com \\
          --resolve api.example.com=127.0.0.1 -- python client.py
    """
    from tlspin.audit import run_audit

    if (control_cert is None) != (control_key is None):
        msg = "give both --control-cert and --control-key, or neither"
        raise click.UsageError(msg)
    if control_cert is not None and control_run is False:
        msg = "--control-cert is for the control run, which --no-control-run turns off"
        raise click.UsageError(msg)
    try:
        report = run_audit(
            command,
            resolve=resolve,
            upstream_cafile=upstream_cafile,
            expect_pinned=expect_pinned,
            timeout=timeout,
            control_run=control_run,
            control_cert=control_cert,
            control_key=control_key,
            # With --json, stdout carries only the report; the program's output goes to stderr.
            stdout=sys.stderr if as_json else None,
        )
    except ssl.SSLError as exc:  # an OSError too: caught first
        echo(f"tlspin audit: cannot use the control certificate and key: {clean(exc)}", err=True)
        raise SystemExit(EXIT_CANNOT_RUN) from None
    except OSError as exc:
        echo(f"tlspin audit: could not run {clean(command[0])!r}: {clean(exc.strerror or exc)}",
             err=True)
        raise SystemExit(EXIT_CANNOT_RUN) from None
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        _print_table(report)
    status = report.status
    raise SystemExit(
        EXIT_NOT_PINNED if status == "not-pinned"
        else EXIT_INCONCLUSIVE if status == "inconclusive"
        else 0
    )


def _print_table(report: AuditReport) -> None:
    from rich.table import Table

    # Host names, request lines and the program's command line are the program's doing: every
    # string goes through styled()/clean() and the console never interprets markup.
    console = stdout_console()
    runs = report.runs or ()
    status = "; ".join(
        f"{run.kind} run: " + ("timed out (killed)" if run.timed_out else
                               f"exit status {run.exit_code}")
        for run in runs
    ) or f"exit status {report.exit_code}"
    console.print()
    console.print(styled(("tlspin audit", "bold"), f": {shlex.join(report.command)} ({status})"))
    if not report.hosts:
        console.print(styled(
            ("The program made no connection through the proxy", "yellow"),
            " (does it honour HTTPS_PROXY?)",
        ))
    else:
        table = Table(show_lines=False)
        table.add_column("host")
        table.add_column("verdict")
        table.add_column("conn", justify="right")
        table.add_column("evidence", overflow="fold")
        for host in report.hosts:
            label, style = _STYLE[host.verdict]
            seen = [f"→ {clean(line)}" for line in host.requests]
            seen += [clean(detail) for detail in host.details]
            seen += [f"upstream {clean(u)}" for u in host.upstream]
            table.add_row(
                styled(f"{host.host}:{host.port}"),
                styled((label, style)),
                str(host.connections),
                styled("\n".join(seen), multiline=True),
            )
        console.print(table)
        console.print(styled((
            "NOT PINNED: application bytes went through a certificate forged by a CA the program "
            "trusts. refused/pinned: it rejected the forgery with a TLS alert, or a control run "
            "showed it sends data only to the genuine server. inconclusive: no proof either "
            "way.", "dim")))
    marks = {"met": ("✓", "green"), "not-pinned": ("✗", "red"), "inconclusive": ("?", "yellow")}
    for exp in report.expectations:
        console.print(styled(marks[exp.status], f" expected {exp.host} to be pinned: {exp.reason}"))
