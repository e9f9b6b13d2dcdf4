"""``tlspin export`` and ``tlspin import``: one policy to every platform, and back.

Exit codes: 0 done (warnings go to stderr), 1 the target cannot express the policy (export
refused; ``--force`` turns such errors into warnings where the target allows it), 2 bad input.
"""

from __future__ import annotations

import click

from tlspin.cli._common import EXIT_FAIL, fail, guarded, load_policy, read_input, warn, write_output
from tlspin.cli._text import clean, echo

_EXPORTS = (
    "okhttp-kotlin",
    "okhttp-java",
    "android-nsc",
    "trustkit-android",
    "trustkit-ios",
    "ats",
    "hpkp",
    "curl",
    "json",
)
_IMPORTS = ("android-nsc", "trustkit-ios", "trustkit-android", "hpkp", "okhttp-java", "json")


@click.command("export")
@click.argument("policy", type=click.Path(dir_okay=False))
@click.option(
    "--format", "-f", "fmt", type=click.Choice(_EXPORTS), required=True, help="Target format."
)
@click.option("--out", "-o", type=click.Path(dir_okay=False), help="Write here instead of stdout.")
@click.option(
    "--force", is_flag=True, help="Export despite inexpressible rules (they become warnings)."
)
@click.option(
    "--okhttp-version",
    type=click.IntRange(3, 5),
    default=4,
    show_default=True,
    help="OkHttp major version: 3 has no '**.' patterns.",
)
@click.option("--host", help="hpkp/curl: the host to export the pins of.")
@click.option("--report-only", is_flag=True, help="hpkp: write Public-Key-Pins-Report-Only.")
@click.option(
    "--max-age", type=click.IntRange(1), help="hpkp: max-age (s) for rules without expires."
)
@guarded
def export(
    *,
    policy: str,
    fmt: str,
    out: str | None,
    force: bool,
    okhttp_version: int,
    host: str | None,
    report_only: bool,
    max_age: int | None,
) -> None:
    """Export POLICY to a platform's pinning configuration.

    Whatever the target cannot express is an error (exit 1) unless --force, which turns it into a
    warning; nothing is dropped silently. OkHttp code carries the rules' expires itself: after
    that day a rule's pins are left out, as Android does with an expired pin-set.
    """
    from tlspin.formats import ExportOptions, ExportRefusedError
    from tlspin.formats import export as run

    loaded = load_policy(policy)
    options = ExportOptions(
        force=force,
        okhttp_version=okhttp_version,
        host=host,
        report_only=report_only,
        max_age=max_age,
    )
    try:
        result = run(loaded, fmt, options)
    except ExportRefusedError as exc:
        for problem in exc.problems:
            if problem.severity == "error":
                hint = "" if problem.forceable else " (--force cannot override this)"
                echo(f"error: {clean(problem)}{clean(hint)}", err=True)
            else:
                warn(str(problem))
        errors = [p for p in exc.problems if p.severity == "error"]
        forced = (
            "; --force writes it anyway, with these errors as warnings"
            if not force and errors and all(p.forceable for p in errors)
            else ""
        )
        fail(
            f"{fmt} cannot express {policy} as it is; nothing was written{forced}", code=EXIT_FAIL
        )
    for problem in result.problems:
        prefix = "forced: " if problem.severity == "error" else ""
        warn(f"{prefix}{problem}")
    write_output(out, result.text)


@click.command("import")
@click.argument("source", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--from", "fmt", type=click.Choice(_IMPORTS), required=True, help="Format of SOURCE.")
@click.option("--host", help="hpkp: the host that served the header.")
@click.option(
    "--out", "-o", type=click.Path(dir_okay=False), help="Write the policy here (else stdout)."
)
@click.option(
    "--format",
    "out_format",
    type=click.Choice(["toml", "json"]),
    default=None,
    help="Policy format (default: from --out's suffix, else TOML).",
)
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@guarded
def import_(
    *,
    source: str,
    fmt: str,
    host: str | None,
    out: str | None,
    out_format: str | None,
    force: bool,
) -> None:
    """Turn an existing pinning configuration into a tlspin policy (to migrate)."""
    from tlspin._shared.policyio import dumps
    from tlspin.formats import import_policy

    data = read_input(source, what=f"{fmt} file")
    result = import_policy(data, fmt, host=host)
    for problem in result.problems:
        warn(str(problem))
    chosen = out_format or ("json" if out and out.lower().endswith(".json") else "toml")
    text = dumps(
        result.policy,
        format=chosen,  # type: ignore[arg-type]
        header=f"imported by tlspin from {source} ({fmt})",
    )
    write_output(out, text, overwrite=force)
