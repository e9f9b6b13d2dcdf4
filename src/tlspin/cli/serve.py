"""``tlspin serve``: run the report collector (FastAPI on uvicorn).

Exit codes: 0 after a clean shutdown, 2 for bad options (including a non-loopback address
without a token) or a database that cannot be opened or migrated.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import secrets
from pathlib import Path

import click

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


def _read_token(token: str | None, token_file: str | None) -> str | None:
    if token_file is not None:
        try:
            value = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            fail(f"{token_file}: cannot read the token file: {exc.strerror or exc}")
        if not value:
            fail(f"{token_file}: the token file is empty")
        return value
    return token or None


@click.command()
@click.option("--db", "db_url", default="sqlite:///tlspin.db", show_default=True,
              help="Database URL: sqlite:///FILE or postgresql://USER@HOST/DB.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8787, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on.")
@click.option("--token", envvar=_TOKEN_ENV, default=None, show_envvar=True,
              help="Token for the dashboard and query API (prefer the environment variable or "
              "--token-file: command lines are visible to other local users).")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="Read the token from this file.")
@click.option("--drop-client-ip", is_flag=True, help="Do not store senders' IP addresses.")
@click.option("--webhook", "webhooks", multiple=True, metavar="URL",
              help="Alert webhook (repeatable): new incidents, host rate over threshold.")
@click.option("--alert-rate", default=None, metavar="COUNT/SECONDS",
              help="Alert when one host gets more than COUNT reports within SECONDS.")
@click.option("--ip-rate-limit", default="300/60", show_default=True, metavar="COUNT/SECONDS",
              help="Reports accepted per client IP; more get HTTP 429.")
@click.option("--trust-forwarded-for", is_flag=True,
              help="Take the client IP from X-Forwarded-For (only behind your own proxy).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes (they share nothing but the database).")
@click.option("--certfile", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Serve HTTPS with this certificate chain (PEM).")
@click.option("--keyfile", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Private key for --certfile (PEM).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@guarded
def serve(  # noqa: PLR0917 - click passes every option positionally by name
    db_url: str, host: str, port: int, token: str | None, token_file: str | None,
    drop_client_ip: bool, webhooks: tuple[str, ...], alert_rate: str | None,
    ip_rate_limit: str, trust_forwarded_for: bool, workers: int, certfile: str | None,
    keyfile: str | None, log_level: str,
) -> None:
    """Run the report collector: intake at POST /reports, dashboard at /dashboard.

    Report intake is public. The dashboard and /api need the token; without one, the
    collector only starts on a loopback address, with a token it generates and prints.
    """
    import uvicorn

    from tlspin.collector import Settings, create_app
    from tlspin.collector.storage import Database

    if (certfile is None) != (keyfile is None):
        fail("--certfile and --keyfile go together; pass both or neither")
    secret = _read_token(token, token_file)
    loopback = is_loopback(host)
    generated = False
    if secret is None:
        if not loopback:
            fail(
                f"refusing to listen on {host} without a token: the dashboard and query API "
                f"would be open to the network. Set {_TOKEN_ENV} (or --token-file), or bind "
                "127.0.0.1"
            )
        secret = secrets.token_urlsafe(24)
        generated = True
    settings = Settings(
        db_url=db_url,
        token=secret,
        drop_client_ip=drop_client_ip,
        webhooks=webhooks,
        ip_rate_limit=_pair(ip_rate_limit, "--ip-rate-limit") or (300, 60.0),
        trust_forwarded_for=trust_forwarded_for,
        alert_rate_threshold=_pair(alert_rate, "--alert-rate"),
    )
    database = Database(db_url)
    try:
        database.migrate()
    except Exception as exc:  # noqa: BLE001 - drivers raise many types; one line
        fail(f"cannot open or migrate the database: {type(exc).__name__}: {exc}")
    finally:
        database.dispose()

    scheme = "https" if certfile else "http"
    shown = f"[{host}]" if ":" in host else host
    base = f"{scheme}://{shown}:{port}"
    info(f"tlspin collector: reports go to {base}/reports; dashboard at {base}/dashboard")
    if generated:
        # Printed only because this process made it up and nobody else can reach the port.
        info(f"no token was set, so this run generated one (shown because the collector listens "
             f"on loopback only): {secret}")
        info(f"log in at {base}/login with it, or send 'Authorization: Bearer <token>' to /api")
    else:
        source = "--token-file" if token_file else f"{_TOKEN_ENV} / --token"
        info(f"log in at {base}/login with the token from {source}; the API takes "
             "'Authorization: Bearer <token>'")
    if not loopback and certfile is None:
        warn(f"serving plain HTTP on {host}: put a TLS proxy in front, or pass --certfile")

    ssl_options = {"ssl_certfile": certfile, "ssl_keyfile": keyfile} if certfile else {}
    if workers == 1:
        config = uvicorn.Config(
            create_app(dataclasses.replace(settings, migrate=False)),
            host=host, port=port, log_level=log_level, server_header=False,
            proxy_headers=False, **ssl_options,  # type: ignore[arg-type]
        )
        uvicorn.Server(config).run()
        return
    # Worker processes rebuild the settings from the environment (the token in its own
    # variable, never on a command line).
    env = dataclasses.replace(settings, migrate=False).to_env()
    os.environ.update(env)
    uvicorn.run(
        "tlspin.collector:create_app_from_env", factory=True, host=host, port=port,
        workers=workers, log_level=log_level, server_header=False, proxy_headers=False,
        **ssl_options,  # type: ignore[arg-type]
    )

