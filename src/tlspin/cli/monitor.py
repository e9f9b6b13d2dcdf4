"""``tlspin monitor`` (pin health of live endpoints) and ``tlspin ct check`` (CT logs).

Exit codes of ``tlspin monitor`` (for cron): 0 every endpoint green, 1 something amber (none
red), 2 something red, 64 bad input (unreadable policy or endpoints file, bad options), 74 the
previous run, the database or the collector could not be read or written. In daemon mode
(``--interval``) the command runs until SIGINT/SIGTERM and then exits 0.

Exit codes of ``tlspin ct check``: 0 nothing flagged, 1 a certificate under a pinned rule has no
pinned key (or a denied one), 2 the log could not be read or failed verification (tree head
signature, Merkle root, shrinking tree), 64 bad input, 74 the state file could not be used.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import click

from tlspin.cli._common import CLIError, guarded, info, load_policy, stdout_console, warn

if TYPE_CHECKING:
    from tlspin.ct.scan import ScanReport
    from tlspin.monitor.evaluate import EndpointResult
    from tlspin.monitor.runner import MonitorRun
    from tlspin.monitor.store import RunStore

__all__ = ["ct", "monitor"]

EXIT_USAGE = 64  # sysexits EX_USAGE: distinct from the status codes 0/1/2
EXIT_IO = 74  # sysexits EX_IOERR
EXIT_LOG = 2
P = ParamSpec("P")
R = TypeVar("R")
_DURATION = re.compile(r"^\s*([0-9]{1,9}(?:\.[0-9]{1,9})?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_COLOURS = {"green": "green", "amber": "yellow", "red": "red"}


class _UsageError(click.UsageError):
    exit_code = EXIT_USAGE


class _FailError(CLIError):
    """An error with an exit code chosen here (kept as it is by :func:`_bad_input_is_64`)."""


class _Command(click.Command):
    """A command whose usage errors exit 64, so they never read as status 2 (red)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise _UsageError(exc.format_message(), ctx=exc.ctx) from None


def _bad_input_is_64(func: Callable[P, R]) -> Callable[P, R]:
    inner = guarded(func)

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return inner(*args, **kwargs)
        except click.UsageError as exc:
            if isinstance(exc, _UsageError):
                raise
            raise _UsageError(exc.format_message(), ctx=exc.ctx) from None
        except CLIError as exc:
            # 2 is the shared "bad input" code of tlspin.cli._common; here it means red.
            if isinstance(exc, _FailError) or exc.exit_code != 2:
                raise
            raise _FailError(exc.message, code=EXIT_USAGE) from None

    return wrapper


def parse_duration(text: str) -> float:
    """Parse ``90``, ``90s``, ``15m``, ``1h`` or ``1d`` into seconds.

    Raises:
        click.BadParameter: the text is not such a duration, or is not positive.
    """
    match = _DURATION.match(text)
    if match is None or float(match.group(1)) <= 0:
        msg = f"expected a positive duration such as 90s, 15m, 1h or 1d, found {text!r}"
        raise click.BadParameter(msg)
    return float(match.group(1)) * _UNITS[match.group(2)]


@contextmanager
def _no_violation_logs() -> Iterator[None]:
    # The engine logs every pin failure at WARNING (for applications). The monitor reports
    # them in its table, so those lines would only be noise between the progress bar and it.
    logger = logging.getLogger("tlspin")

    def keep(record: logging.LogRecord) -> bool:
        return record.funcName != "notify"

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _open_store(db: str | None, collector: str | None, state: str | None, cafile: str | None,
                ) -> RunStore:
    from tlspin.monitor.store import (
        CollectorStore,
        DatabaseStore,
        StateFile,
        StoreError,
        default_state_path,
    )

    state_file = StateFile(state or default_state_path())
    try:
        if db:
            return DatabaseStore(db)
        if collector:
            token = os.environ.get("TLSPIN_COLLECTOR_TOKEN")
            return CollectorStore(collector, token=token, state=state_file, cafile=cafile)
    except StoreError as exc:
        raise _FailError(str(exc), code=EXIT_IO) from None
    return state_file


def _table(run: MonitorRun) -> None:
    from rich.table import Table

    from tlspin.cli._text import clean, styled

    table = Table(title=f"tlspin monitor: {len(run.results)} endpoints", title_justify="left")
    for column in ("endpoint", "status", "matched (depth)", "leaf days", "rule days",
                   "redundant"):
        table.add_column(column, overflow="fold")
    for r in run.results:
        colour = _COLOURS[r.status]
        matched = ", ".join(f"{pin[7:15]}… ({depth})" for pin, depth in r.matched) or "-"
        table.add_row(
            styled(r.target.endpoint),
            styled((r.status, colour)),
            styled(matched),
            "-" if r.leaf_days_left is None else str(r.leaf_days_left),
            "-" if r.rule_days_left is None else str(r.rule_days_left),
            {True: "yes", False: "no", None: "-"}[r.redundant],
        )
    console = stdout_console()
    console.print(table)
    # Reasons and changes as plain lines: they stay whole (and greppable) in cron mail.
    for r in run.results:
        for note in (*r.reasons, *r.changes):
            console.print(styled(f"{clean(r.target.endpoint)}: {clean(note)}"), soft_wrap=True)
    counts = run.counts
    info(f"green {counts.get('green', 0)}, amber {counts.get('amber', 0)}, "
         f"red {counts.get('red', 0)}")


async def _monitor_once(
    *, policy: Any, targets: list[Any], context: Any, store: RunStore, sender: Any,
    options: dict[str, Any], as_json: bool, policy_name: str, daemon: bool,
) -> MonitorRun:
    from tlspin.monitor.alerts import send_alerts
    from tlspin.monitor.runner import run_once
    from tlspin.monitor.store import StoreError

    try:
        previous = store.previous()
    except StoreError as exc:
        if not daemon:
            raise _FailError(str(exc), code=EXIT_IO) from None
        warn(f"{exc}; judging this run without the previous one")
        previous = {}
    progress = None
    if not as_json and sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import Progress

        progress = Progress(
            console=Console(stderr=True, markup=False, emoji=False, highlight=False),
            transient=True,
        )
    task = progress.add_task("probing", total=len(targets)) if progress else None

    def advance(_: EndpointResult) -> None:
        if progress is not None and task is not None:
            progress.advance(task)

    if progress is not None:
        progress.start()
    try:
        run = await run_once(policy, targets, context=context, previous=previous,
                             on_result=advance, policy_name=policy_name, **options)
    finally:
        if progress is not None:
            progress.stop()
    results = [r.as_dict() for r in run.results]
    if sender is not None:
        send_alerts(results, previous, sender)
    if as_json:
        click.echo(json.dumps({"run": run.as_dict(), "results": results},
                              indent=None if daemon else 1))
    else:
        _table(run)
    try:
        store.save(run.as_dict(), results)
    except (StoreError, OSError) as exc:
        if not daemon:
            raise _FailError(f"the run was not stored: {exc}", code=EXIT_IO) from None
        warn(f"the run was not stored: {exc}")
    return run


@click.command("monitor", cls=_Command)
@click.argument("policy", type=click.Path(dir_okay=False))
@click.option("--endpoints", type=click.Path(dir_okay=False),
              help="TOML file of extra endpoints per rule (host, port, IPs of each edge).")
@click.option("--interval", metavar="DURATION",
              help="Daemon mode: run every DURATION (90s, 15m, 1h, 1d) until SIGINT/SIGTERM.")
@click.option("--db", metavar="URL",
              help="Store every run in the collector database (SQLAlchemy URL).")
@click.option("--collector", metavar="URL",
              help="Send every run to a collector (POST /api/monitor-runs; token from "
              "TLSPIN_COLLECTOR_TOKEN).")
@click.option("--state", type=click.Path(dir_okay=False),
              help="Previous-run file when no --db is given "
              "[default: $XDG_STATE_HOME/tlspin/monitor-state.json].")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--cafile", type=click.Path(dir_okay=False, exists=True),
              help="Trusted CA certificates (default: the system store).")
@click.option("--warn-days", type=click.IntRange(0, 3650), default=30, show_default=True,
              help="Amber when a certificate or rule expires within this many days.")
@click.option("--concurrency", type=click.IntRange(1, 10_000), default=50, show_default=True,
              help="Probes in flight at once.")
@click.option("--timeout", type=click.FloatRange(0.1, 600), default=10.0, show_default=True,
              help="Seconds for the TCP connection, and again for the TLS handshake.")
@click.option("--webhook", "webhooks", multiple=True, metavar="URL",
              help="Alert webhook URL (repeatable): an endpoint turning red, or amber for a "
              "new reason.")
@_bad_input_is_64
def monitor(
    *,
    policy: str, endpoints: str | None, interval: str | None, db: str | None,
    collector: str | None, state: str | None, as_json: bool, cafile: str | None,
    warn_days: int, concurrency: int, timeout: float, webhooks: tuple[str, ...],
) -> None:
    """Probe every pinned endpoint of POLICY and judge its pin health.

    Each endpoint is green, amber (a certificate or rule expiring within --warn-days while the
    next key is not pinned, no backup pin, a report-only mismatch) or red (pin mismatch,
    invalid or expired certificate, unreachable). Exit codes: 0 all green, 1 amber, 2 red,
    64 bad input, 74 storage failure; a daemon (--interval) exits 0 on SIGINT/SIGTERM.
    """
    from tlspin.monitor.probe import verified_context
    from tlspin.monitor.runner import exit_code
    from tlspin.monitor.targets import load_targets

    if db and collector:
        msg = "--db and --collector exclude each other; pick one"
        raise _UsageError(msg)
    seconds = parse_duration(interval) if interval else None
    pin_policy = load_policy(policy)
    targets = load_targets(pin_policy, endpoints)
    if not targets:
        raise _FailError(
            f"{policy}: nothing to probe: the policy names no exact host and no --endpoints "
            "file lists any", code=EXIT_USAGE,
        )
    try:
        context = verified_context(cafile=cafile)
    except (OSError, ValueError) as exc:
        raise _FailError(f"cannot use the CA file {cafile}: {exc}", code=EXIT_USAGE) from None
    sender = None
    if webhooks:
        from tlspin.collector.alerts import AlertSender

        sender = AlertSender(list(webhooks))
    store = _open_store(db, collector, state, cafile)
    options = {"concurrency": concurrency, "timeout": timeout, "warn_days": warn_days}
    common: dict[str, Any] = {
        "policy": pin_policy, "targets": targets, "context": context, "store": store,
        "sender": sender, "options": options, "as_json": as_json,
        "policy_name": Path(policy).name,
    }

    async def main() -> int:
        if seconds is None:
            return exit_code(await _monitor_once(daemon=False, **common))
        from tlspin.monitor.runner import run_forever

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        async def one() -> None:
            try:
                await _monitor_once(daemon=True, **common)
            except Exception as exc:  # noqa: BLE001 - a daemon outlives one failed run
                warn(f"the monitor run failed: {type(exc).__name__}: {exc}")

        runs = await run_forever(one, interval=seconds, stop=stop)
        info(f"stopped after {runs} runs")
        return 0

    try:
        with _no_violation_logs():
            code = asyncio.run(main())
    finally:
        if sender is not None:
            sender.close(timeout=10)
        close = getattr(store, "close", None)
        if close is not None:
            close()
    click.get_current_context().exit(code)


class _Group(_Command, click.Group):
    """A group whose usage errors exit 64, like its commands."""


@click.group("ct", cls=_Group)
def ct() -> None:
    """Certificate Transparency: find certificates for pinned names with unpinned keys."""


def _print_findings(report: ScanReport) -> None:
    from rich.table import Table

    from tlspin.cli._text import clean, styled

    table = Table(title=styled(f"{clean(report.source)}: {report.records} certificates read"),
                  title_justify="left")
    for column in ("index", "type", "verdict", "names", "key", "issuer", "not after"):
        table.add_column(column, overflow="fold")
    for f in report.findings:
        d = f.as_dict()
        colour = "yellow" if f.verdict == "unchecked" else "red"
        # Names and issuers come from certificates in a public log: shown literally.
        table.add_row(
            styled(str(d["index"])), styled(str(d["entry_type"])), styled((f.verdict, colour)),
            styled("\n".join(clean(n) for n in f.names), multiline=True),
            styled(str(d["pin"] or "-")),
            styled(clean(d["issuer"])), styled(clean(d["not_after"])),
        )
    if report.findings:
        stdout_console().print(table)
    for index, error in report.malformed:
        warn(f"entry {index} skipped: {error}")


@ct.command("check", cls=_Command)
@click.argument("policy", type=click.Path(dir_okay=False))
@click.option("--log", "log_url", metavar="URL", help="RFC 6962 log base URL (before /ct/v1/).")
@click.option("--log-key", type=click.Path(dir_okay=False, exists=True),
              help="The log's PEM public key: verify every signed tree head.")
@click.option("--from-file", type=click.Path(dir_okay=False, exists=True),
              help="A crt.sh-style JSON export instead of a log (its fields: docs/cli.md, "
              "'The export format').")
@click.option("--state", type=click.Path(dir_okay=False),
              help="Remembered log positions [default: $XDG_STATE_HOME/tlspin/ct-state.json].")
@click.option("--start", type=click.IntRange(0), help="Read from this index (ignores the state).")
@click.option("--max-entries", type=click.IntRange(1), help="Read at most this many entries now.")
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=256, show_default=True,
              help="Entries per get-entries request.")
@click.option("--cafile", type=click.Path(dir_okay=False, exists=True),
              help="CA certificates for an HTTPS log.")
@click.option("--timeout", type=click.FloatRange(0.1, 600), default=30.0, show_default=True,
              help="Seconds per log request.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_bad_input_is_64
def ct_check(
    *,
    policy: str, log_url: str | None, log_key: str | None, from_file: str | None,
    state: str | None, start: int | None, max_entries: int | None, batch_size: int,
    cafile: str | None, timeout: float, as_json: bool,
) -> None:
    """Flag certificates for POLICY's pinned names whose keys none of the rule's pins match.

    Reads new entries of an RFC 6962 log (--log; the position is remembered in --state) or a
    crt.sh-style export (--from-file). Exit codes: 0 nothing flagged, 1 flagged certificates,
    2 log unreadable or failing verification, 64 bad input, 74 state file unusable.
    """
    from tlspin.ct.client import CTError, LogClient
    from tlspin.ct.scan import CTState, check_records, scan_log
    from tlspin.monitor.store import StoreError, default_state_path

    if bool(log_url) == bool(from_file):
        msg = "give exactly one of --log URL and --from-file FILE"
        raise _UsageError(msg)
    pin_policy = load_policy(policy)
    if from_file:
        from tlspin.ct.export import read_export

        records, malformed = read_export(from_file)
        report = check_records(pin_policy, records, source=from_file)
        report.malformed += malformed
    else:
        assert log_url is not None
        key = Path(log_key).read_bytes() if log_key else None
        client = LogClient(log_url, timeout=timeout, cafile=cafile, public_key=key)
        store = CTState(state or default_state_path("ct-state.json"))
        try:
            report = scan_log(client, pin_policy, state=store, start=start,
                              max_entries=max_entries, batch_size=batch_size)
        except StoreError as exc:
            raise _FailError(str(exc), code=EXIT_IO) from None
        except CTError as exc:
            raise _FailError(str(exc), code=EXIT_LOG) from None
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=1))
    else:
        _print_findings(report)
        unchecked = len(report.findings) - len(report.flagged)
        summary = f"{report.records} certificates read, {len(report.flagged)} flagged"
        if from_file:
            summary += f", {unchecked} unchecked (no key in the export)"
        info(summary)
    if report.root_verified is False:
        raise _FailError(
            f"{report.source}: the Merkle root of the entries read does not match the signed "
            "tree head; the log served entries other than those it signed", code=EXIT_LOG,
        )
    click.get_current_context().exit(1 if report.flagged else 0)
