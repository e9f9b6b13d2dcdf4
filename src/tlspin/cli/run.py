"""``tlspin run --policy P -- COMMAND...``: run a Python program with its TLS clients pinned."""

from __future__ import annotations

import os
import shlex
import sys

import click

from tlspin.cli._common import fail, guarded


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
@guarded
def run(policy_path: str | None, print_env: bool, hook_dir: bool, command: tuple[str, ...]) -> None:
    """Run COMMAND with every TLS connection Python's ssl module makes checked against FILE.

    The policy is validated first: an unreadable, invalid or empty policy stops here with
    status 2, before the program starts. The program then runs in place of this command (same
    process id, signals and exit status) with three variables set, which every Python program
    it starts inherits: PYTHONPATH (tlspin's start-up hook prepended), TLSPIN_POLICY (the
    absolute policy path) and TLSPIN_POLICY_SHA256. If a pinned interpreter cannot apply the
    policy (the file changed and became invalid, or tlspin is not installed for it), it exits
    with status 70 before running any of the program's code.

    An interpreter with tlspin installed is pinned through its site-packages even when it
    ignores PYTHONPATH (-E, -I). COMMAND is refused with status 2 when it would start Python
    unpinned: -S (no site), -I or -E for an interpreter without tlspin installed, env -i;
    on the command line, after env, or on the shebang line of the script it names.

    Not reached: what a wrapper shell script or a compiled launcher adds (-S); an environment
    that drops TLSPIN_POLICY (env={}, pip's build isolation); TLS outside Python's ssl module.
    Check a program with `tlspin audit --expect-pinned HOST -- tlspin run --policy FILE -- ...`.

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
    import warnings

    from tlspin.exceptions import PolicyError, SinglePinWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinglePinWarning)  # `tlspin lint` reports those (TP001)
        try:
            path, raw, policy = _run.read_policy(policy_path)
        except PolicyError as exc:
            fail(f"invalid pin policy, not starting the program: {exc}")
    if not policy.rules:
        fail(f"{path}: the policy is empty (no [[rule]]), not starting the program")
    env = _run.environment(path, raw)
    if print_env:
        for name in ("PYTHONPATH", _run.ENV_POLICY, _run.ENV_DIGEST):
            click.echo(f"{name}={env[name]}")
        return
    why = _run.skipped_by(command, env)
    if why is not None:
        fail(f"not starting {shlex.join(command)}: {why}")
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], list(command), env)  # noqa: S606 - running the user's command is the point
    except OSError as exc:
        code = 127 if isinstance(exc, FileNotFoundError) else 126
        fail(f"cannot run {command[0]!r}: {exc.strerror or exc}", code=code)
