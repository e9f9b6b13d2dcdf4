"""``tlspin run --policy P -- COMMAND...``: run a Python program with its TLS clients pinned."""

from __future__ import annotations

import os
import shlex
import sys

import click


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    short_help="Run a Python program with every TLS client in it pinned (no code change).",
)
@click.option(
    "--policy",
    "policy_path",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="The pin policy (TOML, or JSON for *.json).",
)
@click.option(
    "--print-env",
    is_flag=True,
    help="Validate the policy, print the environment variables that pin a program, and exit.",
)
@click.option(
    "--hook-dir",
    is_flag=True,
    help="Print the directory that goes first on PYTHONPATH, and exit.",
)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run(policy_path: str | None, print_env: bool, hook_dir: bool, command: tuple[str, ...]) -> None:
    """Run COMMAND with every TLS connection Python's ssl module makes checked against FILE.

    The policy is validated first: an unreadable or invalid policy stops here with status 2,
    before the program starts. The program then runs in place of this command (same process
    id, signals and exit status) with three variables set, which every Python program it
    starts inherits: PYTHONPATH (tlspin's start-up hook prepended), TLSPIN_POLICY (the
    absolute policy path) and TLSPIN_POLICY_SHA256. If a pinned interpreter cannot apply the
    policy (the file changed and became invalid, or tlspin is not installed for it), it exits
    with status 70 before running any of the program's code.

    Not reached: interpreters started with -I, -E or -S, or with an environment that drops
    PYTHONPATH (env={}, pip's build isolation); TLS outside Python's ssl module. Check a
    program with `tlspin audit --expect-pinned HOST -- tlspin run --policy FILE -- ...`.

    \b
    Examples:
      tlspin run --policy pins.toml -- python app.py
      tlspin run --policy pins.toml -- python -m mypackage --verbose
      tlspin run --policy /etc/tlspin/pins.toml --print-env > /etc/tlspin/env
    """
    from tlspin import _run

    if hook_dir:
        click.echo(str(_run.HOOK_DIR))
        return
    if policy_path is None:
        msg = "expected --policy FILE (the pin policy to apply)"
        raise click.UsageError(msg)
    if not command and not print_env:
        msg = "expected a command to run after --, e.g. -- python app.py"
        raise click.UsageError(msg)
    from tlspin.exceptions import PolicyError

    try:
        path, raw, _policy = _run.read_policy(policy_path)
    except PolicyError as exc:
        click.echo(f"tlspin run: invalid pin policy, not starting the program: {exc}", err=True)
        raise SystemExit(2) from None
    env = _run.environment(path, raw)
    if print_env:
        for name in ("PYTHONPATH", _run.ENV_POLICY, _run.ENV_DIGEST):
            click.echo(f"{name}={env[name]}")
        return
    flag = _run.skipped_by(command)
    if flag is not None:
        click.echo(
            f"tlspin run: {shlex.join(command)} uses {flag}, which makes Python skip tlspin's "
            "start-up hook: the program would run unpinned. Drop that option.",
            err=True,
        )
        raise SystemExit(2)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], list(command), env)  # noqa: S606 - running the user's command is the point
    except OSError as exc:
        click.echo(f"tlspin run: cannot run {command[0]!r}: {exc.strerror or exc}", err=True)
        raise SystemExit(127 if isinstance(exc, FileNotFoundError) else 126) from None
