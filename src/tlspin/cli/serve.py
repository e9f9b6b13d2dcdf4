"""``tlspin serve``: run the report collector (FastAPI on uvicorn).

The token is never printed or logged. Without a configured one, the collector reads it from a
mode-0600 token file, generating the file on first use, and prints the file's path.

Exit codes: 0 after a clean shutdown, 2 for bad options (including a non-loopback address
without a token or a database URL that is neither SQLite nor PostgreSQL), a missing
``collector`` extra, an unsafe or unreadable token file, or a database that cannot be opened or
migrated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
from pathlib import Path

import click
from click.core import ParameterSource

from tlspin.cli._common import fail, guarded, info, warn

__all__ = ["serve"]

_TOKEN_ENV = "TLSPIN_COLLECTOR_TOKEN"  # noqa: S105 - a variable name, not a secret


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _pair(text: str | None, option: str) -> tuple[int, float] | None:
    if text is None:
        return None
    count, sep, per = text.partition("/")
    try:
        pair = (int(count), float(per))
    except ValueError:
        pair = (0, 0.0)
    if not sep or pair == (0, 0.0):
        fail(f"{option} expects COUNT/SECONDS (e.g. 100/300), found {text!r}")
    if pair[0] < 1 or pair[1] <= 0:
        fail(f"{option} expects a positive COUNT and SECONDS, found {text!r}")
    return pair


@click.command()
@click.option("--db", "db_url", default="sqlite:///tlspin.db", show_default=True,
              help="Database URL: sqlite:///FILE or postgresql://USER@HOST/DB.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8787, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on.")
@click.option("--token", envvar=_TOKEN_ENV, default=None, show_envvar=True,
              help="Token for the dashboard and query API (prefer --token-file or the "
              "environment variable: command lines are visible to other local users).")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="File holding the token (mode 0600, owner only). Created with a new token "
              "if missing. Default without a token: tlspin-collector.token next to the SQLite "
              "file, or in $XDG_STATE_HOME/tlspin/.")
@click.option("--drop-client-ip", is_flag=True, help="Do not store senders' IP addresses.")
@click.option("--webhook", "webhooks", multiple=True, metavar="URL",
              help="Alert webhook (repeatable): new incidents, host rate over threshold.")
@click.option("--alert-rate", default=None, metavar="COUNT/SECONDS",
              help="Alert when one host gets more than COUNT reports within SECONDS.")
@click.option("--ip-rate-limit", default="300/60", show_default=True, metavar="COUNT/SECONDS",
              help="Reports accepted per client IP; more get HTTP 429.")
@click.option("--trust-forwarded-for", is_flag=True,
              help="Take the client IP from X-Forwarded-For (only behind your own proxy).")
@click.option("--forwarded-hops", default=1, show_default=True, type=click.IntRange(1, 16),
              metavar="N", help="With --trust-forwarded-for: how many of your proxies append to "
              "X-Forwarded-For (the client IP is the entry N places from the end).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes (they share nothing but the database).")
@click.option("--certfile", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Serve HTTPS with this certificate chain (PEM).")
@click.option("--keyfile", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Private key for --certfile (PEM).")
@click.option("--max-connections-per-ip", default=32, show_default=True,
              type=click.IntRange(0, 100_000), metavar="N",
              help="Open connections one client IP may hold at once; more get HTTP 429 "
              "(0: no limit; not applied with --trust-forwarded-for).")
@click.option("--body-timeout", default=20.0, show_default=True,
              type=click.FloatRange(0, 3600, min_open=True), metavar="SECONDS",
              help="Time a client has to send a whole request body; a slower one gets 408.")
@click.option("--header-timeout", default=20.0, show_default=True,
              type=click.FloatRange(0, 3600, min_open=True), metavar="SECONDS",
              help="Time a connection has to send a request head; a slower one is closed.")
@click.option("--metrics-token-file", type=click.Path(dir_okay=False), default=None,
              help="File holding a second token (mode 0600) that opens /metrics only, for a "
              "Prometheus scraper. Created with a new token if missing.")
@click.option("--metrics-public", is_flag=True,
              help="Serve /metrics without a token (for scrapers on a private network).")
@click.option("--secure-cookies", is_flag=True,
              help="Mark the session cookie Secure even over plain HTTP (behind a proxy that "
              "terminates TLS).")
@click.option("--retention-days", type=click.FloatRange(0, 100_000, min_open=True),
              default=None, metavar="DAYS",
              help="Delete reports older than DAYS (and incidents last seen before then), "
              "hourly in the background. Default: keep everything.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@guarded
def serve(  # noqa: PLR0917 - click passes every option positionally by name
    db_url: str, host: str, port: int, token: str | None, token_file: str | None,
    drop_client_ip: bool, webhooks: tuple[str, ...], alert_rate: str | None,
    ip_rate_limit: str, trust_forwarded_for: bool, forwarded_hops: int, workers: int,
    certfile: str | None,
    keyfile: str | None, max_connections_per_ip: int, body_timeout: float,
    header_timeout: float, metrics_token_file: str | None, metrics_public: bool,
    secure_cookies: bool, retention_days: float | None, log_level: str,
) -> None:
    """Run the report collector: intake at POST /reports, dashboard at /dashboard.

    Report intake is public. The dashboard and /api need the token, which is never printed:
    without --token or TLSPIN_COLLECTOR_TOKEN it is read from the token file, generated into
    it (mode 0600) on first use, and the command prints the file's path. Without any token
    option, the collector only starts on a loopback address. /metrics needs the token (or
    the --metrics-token-file token) unless --metrics-public is given.
    """
    try:
        import uvicorn

        from tlspin.collector import Settings, create_app, logs
        from tlspin.collector.limits import GuardedHTTP, server_ssl_context
        from tlspin.collector.storage import Database, check_url
        from tlspin.collector.tokenfile import (
            default_token_path,
            load_or_create_token,
            read_token_file,
        )
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] == "tlspin":
            raise  # Defensive: a broken installation of tlspin itself, not a missing extra
        fail(f"tlspin serve needs the collector extra ({exc.name} is not installed): "
             "pip install 'tlspin[collector]'")

    # The collector's own warnings (a report it could not store, suppressed alerts…) go to
    # standard error, cleaned of control characters; the CLI's NullHandler would drop them.
    logs.configure(log_level)
    try:
        check_url(db_url)
    except ValueError as exc:
        fail(f"--db: {exc}")
    if (certfile is None) != (keyfile is None):
        fail("--certfile and --keyfile go together; pass both or neither")
    if certfile is not None and keyfile is not None:
        try:
            server_ssl_context(certfile, keyfile)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            fail(f"--certfile/--keyfile: cannot load the certificate and key: {exc}")
    token_source = click.get_current_context().get_parameter_source("token")
    secret = token or None
    if secret is not None and token_file is not None:
        given = "--token" if token_source is ParameterSource.COMMANDLINE else _TOKEN_ENV
        fail(f"expected one token source, found both {given} and --token-file; pass one")
    loopback = is_loopback(host)
    if secret is None and token_file is None and not loopback:
        fail(
            f"refusing to listen on {host} without a token: the dashboard and query API "
            f"would be open to the network. Pass --token-file FILE (created with a new token "
            f"if missing), set {_TOKEN_ENV}, or bind 127.0.0.1"
        )
    path: Path | None = None  # the token file in use, if any
    created = False
    if token_file is not None and Path(token_file).exists():
        # Read (and vet) an existing file before touching the database: fail fast.
        path = Path(token_file)
        secret = read_token_file(path)
    metrics_path = Path(metrics_token_file) if metrics_token_file is not None else None
    metrics_secret = None
    if metrics_path is not None and metrics_path.exists():
        metrics_secret = read_token_file(metrics_path)
    settings = Settings(
        db_url=db_url,
        token=secret,
        drop_client_ip=drop_client_ip,
        webhooks=webhooks,
        ip_rate_limit=_pair(ip_rate_limit, "--ip-rate-limit") or (300, 60.0),
        trust_forwarded_for=trust_forwarded_for,
        forwarded_hops=forwarded_hops,
        alert_rate_threshold=_pair(alert_rate, "--alert-rate"),
        max_connections_per_ip=max_connections_per_ip or None,
        body_timeout=body_timeout,
        header_timeout=header_timeout,
        metrics_token=metrics_secret,
        metrics_public=metrics_public,
        secure_cookies=secure_cookies,
        retention_days=retention_days,
        certfile=certfile,
        keyfile=keyfile,
    )
    try:
        database = Database(db_url)
    except ValueError as exc:
        fail(f"--db: {exc}")
    try:
        database.migrate()
    except Exception as exc:  # noqa: BLE001 - drivers raise many types; one line
        fail(f"cannot open or migrate the database: {type(exc).__name__}: {exc}")
    finally:
        database.dispose()
    if secret is None:
        # Only now, with a working database, may a new token file appear.
        if token_file is not None:
            path = Path(token_file)
            secret, created = load_or_create_token(path)
        else:
            path = default_token_path(db_url)
            secret, created = load_or_create_token(path, make_parents=True)
        settings = dataclasses.replace(settings, token=secret)
    metrics_created = False
    if metrics_path is not None and metrics_secret is None:
        metrics_secret, metrics_created = load_or_create_token(metrics_path)
        settings = dataclasses.replace(settings, metrics_token=metrics_secret)

    scheme = "https" if certfile else "http"
    shown = f"[{host}]" if ":" in host else host
    base = f"{scheme}://{shown}:{port}"
    info(f"tlspin collector: reports go to {base}/reports; dashboard at {base}/dashboard")
    # The token itself is never printed: it would outlive this run in scroll-back and logs.
    if path is None:
        source = "--token" if token_source is ParameterSource.COMMANDLINE else _TOKEN_ENV
        info(f"a token was configured ({source}); log in at {base}/login with it")
        if token_source is ParameterSource.COMMANDLINE:
            warn(f"--token on the command line is visible to other local users (ps); prefer "
                 f"--token-file or {_TOKEN_ENV}")
    else:
        shown_path = path.absolute()
        if token_file is not None:
            if created:
                info(f"--token-file {shown_path} did not exist, so this run generated a new "
                     "token into it (mode 0600)")
        elif created:
            info(f"no token was configured, so this run generated one into {shown_path} "
                 "(mode 0600); later runs reuse it, delete the file for a new one")
        else:
            info(f"no token was configured, so the token is the one an earlier run generated "
                 f"into {shown_path}")
        info(f"log in at {base}/login: paste the token from {shown_path}")
    if metrics_public:
        info(f"{base}/metrics is served to anybody (--metrics-public)")
    elif metrics_path is not None:
        made = ", generated by this run (mode 0600)" if metrics_created else ""
        info(f"{base}/metrics also takes the token in {metrics_path.absolute()}{made}")
    info("the query API and /metrics take 'Authorization: Bearer <token>'")
    if not loopback and certfile is None:
        warn(f"serving plain HTTP on {host}: put a TLS proxy in front, or pass --certfile")

    # No TLS options for uvicorn: with --certfile, GuardedHTTP does the handshake itself,
    # after counting the connection against its IP's cap and within the head deadline.
    # uvicorn shuts down gracefully on Ctrl-C, then raises it again: after that clean shutdown
    # the exit status is 0 (as documented), not click's 'Aborted!' (1).
    clean_exit_on_ctrl_c = contextlib.suppress(KeyboardInterrupt)
    # GuardedHTTP caps connections per IP and times out slow request heads; it forwards the
    # plain asyncio.Protocol calls only, so WebSocket upgrades (unused) stay off.
    if workers == 1:
        config = uvicorn.Config(
            create_app(dataclasses.replace(settings, migrate=False)),
            host=host, port=port, log_level=log_level, server_header=False,
            proxy_headers=False, http=GuardedHTTP, ws="none",
        )
        with clean_exit_on_ctrl_c:
            uvicorn.Server(config).run()
        return
    # Worker processes rebuild the settings from the environment (the token in its own
    # variable, never on a command line).
    env = dataclasses.replace(settings, migrate=False).to_env()
    env[logs.ENV_LOG_LEVEL] = log_level
    os.environ.update(env)
    with clean_exit_on_ctrl_c:
        uvicorn.run(
            "tlspin.collector:create_app_from_env", factory=True, host=host, port=port,
            workers=workers, log_level=log_level, server_header=False, proxy_headers=False,
            http=GuardedHTTP, ws="none",
        )

