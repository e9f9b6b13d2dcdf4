"""``tlspin preflight``: which shipped policy versions would refuse a planned chain?

Exit codes: 0 every version accepts the chain, 1 some version would break, 2 bad input,
3 the ``--live`` host could not be reached.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import ssl
from pathlib import Path
from typing import Any

import click

from tlspin.cli._common import (
    EXIT_FAIL,
    EXIT_OK,
    fail,
    guarded,
    info,
    load_policy,
    read_input,
    stdout_console,
)


def _read_chain(path: str, *, what: str) -> list[bytes]:
    """Read the PEM or DER certificates of *path*; any problem exits 2 naming the file."""
    from tlspin.cli._certfiles import load_chain

    data = read_input(path, what=what)
    try:
        return load_chain(data)
    except ValueError as exc:
        fail(f"{path}: {exc}")


def _anchors(cafile: str | None) -> list[bytes]:
    import warnings

    from cryptography.utils import CryptographyDeprecationWarning

    if cafile is None:
        paths = ssl.get_default_verify_paths()
        candidates = [paths.cafile, paths.openssl_cafile]
        cafile = next((c for c in candidates if c and Path(c).is_file()), None)
        if cafile is None:
            fail("no --cafile given and no system CA bundle found; pass --cafile ROOTS.pem")
    with warnings.catch_warnings():
        # System stores hold a few old roots cryptography frowns upon (Debian's has one with a
        # negative serial number); the trust store is the user's choice, not input to judge.
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return _read_chain(cafile, what="CA file")


@click.command("preflight")
@click.option(
    "--policy",
    "policies",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False),
    help="A policy version shipped to clients (repeatable: old and new).",
)
@click.option(
    "--chain",
    "chain_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The planned chain as the server will send it (PEM or DER), leaf first.",
)
@click.option(
    "--cafile", type=click.Path(dir_okay=False), help="Roots clients trust (default: system)."
)
@click.option(
    "--host", "hosts", multiple=True, help="Host name to check (default: the leaf's names)."
)
@click.option(
    "--at",
    "at_date",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Planned deployment date (default: now).",
)
@click.option("--live", "live", metavar="HOST[:PORT]", help="Compare with what HOST serves today.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds for --live.")
@guarded
def preflight(
    *,
    policies: tuple[str, ...],
    chain_path: str,
    cafile: str | None,
    hosts: tuple[str, ...],
    at_date: dt.datetime | None,
    live: str | None,
    as_json: bool,
    timeout: float,
) -> None:
    """Check a planned certificate chain against every shipped policy version.

    For each version and each rule it says pass or fail and why. Exit codes: 0 all pass, 1 some
    version would break, 2 bad input, 3 the --live host is unreachable.
    """
    from tlspin.cli.inspect import connect
    from tlspin.exceptions import PinMismatchError
    from tlspin.hosts import canonical_host
    from tlspin.preflight import NO_PATH, compare_chains
    from tlspin.preflight import preflight as run

    versions = [(path, load_policy(path)) for path in policies]
    served = _read_chain(chain_path, what="chain file")
    if _is_ca(served[0]):
        fail(f"{chain_path}: the first certificate is a CA; expected the leaf first")
    anchors = _anchors(cafile)
    at = None
    if at_date is not None:
        at = dt.datetime.combine(at_date.date(), dt.time(12), tzinfo=dt.UTC)
    live_target = None
    current: tuple[bytes, ...] = ()
    if live is not None:
        live_target, result = connect(live, cafile=cafile, port=None, timeout=timeout)
        current = result.verified_chain
    also = [live_target.host] if live_target is not None and not hosts else []
    roots = f"the roots of {cafile}" if cafile is not None else "the system trust store"
    report = run(versions, served, anchors, hosts=hosts, also=also, at=at, roots=roots)
    if not report.versions or not any(v.hosts for v in report.versions):
        fail("no rule of any policy covers the chain's names; give the host with --host")
    if cafile is None and any(NO_PATH in why for why in report.errors.values()):
        info(
            "hint: the planned chain does not verify against the system trust store; if your "
            "clients trust a private CA, pass its root certificate with --cafile ROOTS.pem"
        )
    live_info: dict[str, Any] | None = None
    if live_target is not None:
        host = canonical_host(live_target.host)
        planned = report.chains.get(host, tuple(served))
        today: dict[str, str] = {}
        for name, policy in versions:
            try:
                verdict = policy.with_observers().check(host, list(current))
                today[name] = "pass" if verdict.ok else "report-only violation"
            except PinMismatchError:
                today[name] = "FAIL"
        live_info = {
            "target": str(live_target),
            "diff": [dataclasses.asdict(d) for d in compare_chains(current, planned)],
            "current_verdicts": today,
        }
    if as_json:
        click.echo(json.dumps(_to_json(report, served, live_info), indent=2))
    else:
        _print(report, live_info)
    raise click.exceptions.Exit(EXIT_OK if report.passed else EXIT_FAIL)


def _is_ca(der: bytes) -> bool:
    from tlspin.cli._certfiles import cert_info

    return cert_info(der).is_ca


def _to_json(report: Any, served: list[bytes], live: dict[str, Any] | None) -> dict[str, Any]:
    from tlspin.cli.inspect import chain_rows

    return {
        "passed": report.passed,
        "chain": chain_rows(served),
        "verified": {
            host: [r["pin"] for r in chain_rows(chain)] for host, chain in report.chains.items()
        },
        "errors": report.errors,
        "versions": [
            {
                "policy": v.name,
                "passed": v.passed,
                "hosts": [
                    {
                        "host": h.host,
                        "passed": h.passed,
                        "reason": h.reason,
                        "rules": [
                            {
                                "rule": r.rule + 1,
                                "hosts": list(r.hosts),
                                "passed": r.passed,
                                "reason": r.reason,
                            }
                            for r in h.rules
                        ],
                    }
                    for h in v.hosts
                ],
            }
            for v in report.versions
        ],
        "live": live,
    }


def _print(report: Any, live: dict[str, Any] | None) -> None:
    from rich.table import Table

    from tlspin.cli._text import clean, styled

    console = stdout_console()
    console.width = max(console.width, 140)
    table = Table(title="rotation preflight")
    table.add_column("policy", overflow="fold")
    table.add_column("host", overflow="fold")
    table.add_column("rule", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("why", overflow="fold")
    for version in report.versions:
        for host in version.hosts:
            mark = styled(("pass", "green") if host.passed else ("FAIL", "bold red"))
            table.add_row(styled(version.name), styled(host.host), "", mark, styled(host.reason))
            for rule in host.rules:
                rmark = "pass" if rule.passed else "fail"
                table.add_row(
                    "", "", f"#{rule.rule + 1}", rmark,
                    styled(f"{', '.join(rule.hosts)}: {rule.reason}"),
                )
    console.print(table)
    if live is not None:
        diff = Table(title=styled(f"{clean(live['target'])}: serving today vs planned"))
        diff.add_column("depth", justify="right")
        diff.add_column("today", overflow="fold")
        diff.add_column("planned", overflow="fold")
        diff.add_column("key", no_wrap=True)
        for row in live["diff"]:
            diff.add_row(
                str(row["depth"]),
                styled(row["current"] or "-"),  # certificate subjects: shown literally
                styled(row["planned"] or "-"),
                "same" if row["same_key"] else "changes",
            )
        console.print(diff)
        for name, verdict in live["current_verdicts"].items():
            console.print(styled(f"{clean(name)}: the chain served today: {clean(verdict)}"))
    for version in report.versions:
        status = "accepts the new chain" if version.passed else "WOULD BREAK"
        console.print(styled(f"{clean(version.name)}: {status}"))
