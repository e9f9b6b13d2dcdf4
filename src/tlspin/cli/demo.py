"""``tlspin demo``: the five-step pinning story, live on loopback."""

from __future__ import annotations

import logging

import click

__all__ = ["demo"]


@click.command(short_help="Show pinning, an attack, reports and a rotation, live on loopback.")
@click.option("--once", is_flag=True, help="Run the story and exit (for scripts and tests).")
def demo(once: bool) -> None:
    """Start an HTTPS API, an attacker's proxy and the report collector on 127.0.0.1, then
    show, step by step, what pinning does: pinned requests succeed, the attacker is refused and
    reported, report-only mode, a rotation to the backup key, and the dashboard.

    Every claim is checked; the exit status is 1 if one does not hold. Without --once the
    dashboard keeps running until Ctrl-C. Its login token is never printed: it is in a mode-0600
    file in the demo's temporary directory (the demo prints the path), deleted when it stops.
    """
    from rich.console import Console

    try:
        import fastapi  # noqa: F401
        import requests  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        msg = (
            f"tlspin demo runs the collector and a requests client, and needs {exc.name}: "
            "pip install 'tlspin[all]'"
        )
        raise click.ClickException(msg) from None
    from tlspin.demo import run_demo

    # The engine logs each violation; the story shows them itself.
    logging.getLogger("tlspin").addHandler(logging.NullHandler())

    raise SystemExit(run_demo(once=once, console=Console()))
