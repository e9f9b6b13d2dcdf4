"""``tlspin pin`` and ``tlspin check``: look at pins of files and live servers.

Exit codes of ``check``: 0 pass, 1 pin failure, 2 bad input or usage, 3 connection or TLS error.
``pin`` uses 0, 2 and 3 the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tlspin.cli._common import (
    EXIT_CONNECT,
    EXIT_FAIL,
    EXIT_OK,
    fail,
    guarded,
    load_policy,
    probe_live,
    read_input,
    stdout_console,
)
from tlspin.cli._text import clean, echo

if TYPE_CHECKING:
    from tlspin._shared.probe import ProbeResult, Target
    from tlspin.pins import Pin

_FILE_SUFFIXES = (".pem", ".der", ".crt", ".cer", ".key", ".csr", ".pub", ".p8", ".req", ".txt")
_HOSTLIKE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:[0-9]{1,5})?$")
_FORMS = ("sha256", "hpkp", "curl", "base64", "hex")


def _form(pin: Pin, form: str) -> str:
    return {
        "sha256": str(pin),
        "hpkp": pin.hpkp,
        "curl": pin.curl,
        "base64": pin.b64,
        "hex": pin.hex,
    }[form]


def _is_host(target: str) -> bool:
    if target.lower().startswith("https://"):
        return True
    if Path(target).exists() or "/" in target or target.lower().endswith(_FILE_SUFFIXES):
        return False
    return bool(_HOSTLIKE.match(target))


def chain_rows(chain: Sequence[bytes]) -> list[dict[str, Any]]:
    """``depth, subject, issuer, not_after, pin`` for each DER certificate, leaf first."""
    from tlspin.cli._certfiles import cert_info
    from tlspin.pins import Pin

    rows = []
    for depth, der in enumerate(chain):
        info = cert_info(der, index=depth)
        rows.append(
            {
                "depth": depth,
                "subject": info.subject,
                "issuer": info.issuer,
                "not_after": info.not_after.isoformat(),
                "pin": str(Pin.from_certificate(der)),
            }
        )
    return rows


def print_chain(
    rows: list[dict[str, Any]], *, title: str | None = None, marks: dict[int, str] | None = None
) -> None:
    """Print chain rows as a rich table on stdout (pins are never truncated)."""
    from rich.table import Table

    from tlspin.cli._text import clean, styled

    table = Table(title=None if title is None else styled(title), show_lines=False)
    table.add_column("depth", justify="right")
    table.add_column("subject", overflow="fold")
    table.add_column("issuer", overflow="fold")
    table.add_column("not after", no_wrap=True)
    table.add_column("pin", no_wrap=True, min_width=51)
    if marks is not None:
        table.add_column("", no_wrap=True)
    for row in rows:
        # Subjects and issuers come from the server: shown literally, never as markup.
        cells = [
            str(row["depth"]),
            clean(row["subject"]),
            clean(row["issuer"]),
            clean(row["not_after"][:10]),
            clean(row["pin"]),
        ]
        if marks is not None:
            cells.append(marks.get(row["depth"], ""))
        table.add_row(*(styled(cell) for cell in cells))
    console = stdout_console()
    console.width = max(console.width, 160)
    console.print(table)


def connect(
    target_text: str, *, cafile: str | None, port: int | None, timeout: float
) -> tuple[Target, ProbeResult]:
    """Parse and probe a target; parse errors exit 2, connection errors exit 3."""
    from tlspin._shared.probe import parse_target

    try:
        target = parse_target(target_text, default_port=port or 443)
    except ValueError as exc:
        fail(str(exc))
    if cafile is not None and not Path(cafile).is_file():
        fail(f"{cafile}: no such CA file")
    result = probe_live(target, cafile=cafile, timeout=timeout)
    if not result.ok:
        fail(result.error or "connection failed", code=EXIT_CONNECT)
    return target, result


@click.command("pin")
@click.argument("targets", nargs=-1, required=True, metavar="FILE... | HOST[:PORT] | URL")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (a list of objects) instead.")
@click.option(
    "--cafile", type=click.Path(dir_okay=False), help="Trusted CA certificates (PEM) for HOST."
)
@click.option("--served", is_flag=True, help="For HOST: show the chain as served, not as verified.")
@click.option(
    "--form",
    type=click.Choice(_FORMS),
    default="sha256",
    show_default=True,
    help="How to write pins: OkHttp, HPKP, curl, bare base64 or hex.",
)
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False),
    help="File holding the passphrase of an encrypted private key.",
)
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds for HOST.")
@guarded
def pin(
    *,
    targets: tuple[str, ...],
    as_json: bool,
    cafile: str | None,
    served: bool,
    form: str,
    passphrase_file: str | None,
    timeout: float,
) -> None:
    """Print the SPKI pin of each certificate, key or CSR in FILEs, or of a server's chain.

    A PEM bundle prints one line per certificate. With HOST[:PORT] or an https:// URL, tlspin
    connects, verifies the server (system trust store, or --cafile) and prints its verified chain
    as a table: depth, subject, issuer, not-after and pin, leaf first.
    """
    hosts = [t for t in targets if _is_host(t)]
    if hosts:
        if len(targets) > 1:
            fail("give either FILEs or one HOST[:PORT], not both or several hosts")
        _, result = connect(hosts[0], cafile=cafile, port=None, timeout=timeout)
        rows = chain_rows(result.served_chain if served else result.verified_chain)
        for row in rows:
            row["pin"] = _form(_parse(row["pin"]), form)
        if as_json:
            click.echo(json.dumps(rows, indent=2))
        else:
            kind = "served" if served else "verified"
            print_chain(rows, title=f"{result.target} ({kind} chain, {result.tls_version})")
        return
    password = None
    if passphrase_file is not None:
        password = read_input(passphrase_file, what="passphrase file").rstrip(b"\r\n")
    from tlspin.cli._certfiles import describe

    out: list[dict[str, Any]] = []
    for name in targets:
        data = read_input(name, what="file")
        try:
            items = describe(data, password=password)
        except ValueError as exc:
            fail(f"{name}: {exc}")
        for item in items:
            entry: dict[str, Any] = {
                "file": name,
                "index": item.index,
                "kind": item.kind,
                "pin": _form(item.pin, form),
            }
            if item.subject is not None:
                entry["subject"] = item.subject
            if item.issuer is not None:
                entry["issuer"] = item.issuer
            if item.not_after is not None:
                entry["not_after"] = item.not_after.isoformat()
            out.append(entry)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    for entry in out:
        where = (
            entry["file"]
            if entry["index"] == 0 and len(out) == 1
            else f"{entry['file']}#{entry['index']}"
        )
        label = entry.get("subject") or entry["kind"]
        echo(f"{clean(entry['pin'])}  {clean(where)}  {clean(label)}")


def _parse(text: str) -> Pin:
    from tlspin.pins import Pin

    return Pin.parse(text)


@click.command("check")
@click.argument("target", metavar="HOST[:PORT] | URL")
@click.option(
    "--policy", "policy_path", type=click.Path(dir_okay=False), help="Policy file (TOML or JSON)."
)
@click.option("--pin", "pins", multiple=True, metavar="PIN", help="An accepted pin (repeatable).")
@click.option("--cafile", type=click.Path(dir_okay=False), help="Trusted CA certificates (PEM).")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict and chain as JSON.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds to connect.")
@guarded
def check(
    *,
    target: str,
    policy_path: str | None,
    pins: tuple[str, ...],
    cafile: str | None,
    as_json: bool,
    timeout: float,
) -> None:
    """Connect to a server and check its verified chain against pins.

    Give the pins with --policy FILE or one or more --pin. Without a port, the port named by the
    policy's rule (its ports) is used, else 443. Exit codes: 0 pass, 1 pin failure, 2 bad input
    or usage, 3 connection or TLS error.
    """
    import warnings

    from tlspin._shared.probe import parse_target
    from tlspin.exceptions import PinMismatchError, SinglePinWarning
    from tlspin.hosts import canonical_host
    from tlspin.pins import Pin
    from tlspin.policy import PinPolicy, PinRule

    if (policy_path is None) == (not pins):
        fail("give exactly one of --policy FILE or --pin PIN (repeatable)")
    try:
        parsed_target = parse_target(target)
    except ValueError as exc:
        fail(str(exc))
    host = canonical_host(parsed_target.host)
    if policy_path is not None:
        policy = load_policy(policy_path)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SinglePinWarning)
            policy = PinPolicy([PinRule([host], pins)])
    rules = policy.rules_for(host)
    if not rules:
        fail(f"the policy has no rule for {host}; nothing to check")
    port = None
    if parse_target(target, default_port=0).port == 0:  # no port given: the rules' ports
        named = sorted({p for r in rules for p in r.ports})
        if len(named) > 1:
            fail(f"the policy names ports {named} for {host}; give one as HOST:PORT")
        port = named[0] if named else None
    _, result = connect(target, cafile=cafile, port=port, timeout=timeout)
    rows = chain_rows(result.verified_chain)
    allowed = {p.digest for r in rules for p in r.pins if isinstance(p, Pin)}
    denied = {p.digest for r in rules for p in r.deny if isinstance(p, Pin)}
    marks: dict[int, str] = {}
    for row in rows:
        digest = _parse(row["pin"]).digest
        if digest in denied:
            marks[row["depth"]] = "DENIED"
        elif digest in allowed:
            marks[row["depth"]] = "pinned"
    reason = ""
    try:
        verdict = policy.check(
            host,
            list(result.verified_chain),
            port=result.target.port,
            served_chain=list(result.served_chain),
        )
    except PinMismatchError as exc:
        passed = False
        reason = (
            "a denied key is in the verified chain"
            if exc.reason == "denied"
            else f"no key of the verified chain matches the {len(set(exc.expected))} pin(s) "
            f"for {host}"
        )
    else:
        passed = verdict.ok
        if not passed:
            reason = (
                "report-only rule failed ("
                + (
                    "a denied key is in the chain"
                    if verdict.violations[0].reason == "denied"
                    else "no key of the verified chain matches"
                )
                + "); clients would still connect"
            )
        elif not verdict.matched() and not any(not r.expired(_today()) for r in rules):
            reason = "every rule for this host has expired; pins are not enforced"
    if as_json:
        click.echo(
            json.dumps(
                {
                    "host": host,
                    "port": result.target.port,
                    "result": "pass" if passed else "fail",
                    "reason": reason or None,
                    "chain": [dict(row, match=marks.get(row["depth"])) for row in rows],
                },
                indent=2,
            )
        )
    else:
        print_chain(rows, title=f"{result.target} (verified chain)", marks=marks)
        if passed:
            suffix = f": {clean(reason)}" if reason else ""
            echo(f"PASS {clean(host)}:{result.target.port}{suffix}")
        else:
            echo(f"FAIL {clean(host)}:{result.target.port}: {clean(reason)}")
    raise click.exceptions.Exit(EXIT_OK if passed else EXIT_FAIL)


def _today() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC).date()
