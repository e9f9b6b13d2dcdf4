"""The recommended workflow end to end: init, backup-key, lint, then export to every format."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from cli.world import World, invoke, rule
from tlspin.formats import ExportOptions, ExportRefusedError, export
from tlspin.policy import PinInfo, PinPolicy

from .conftest import pins

EVERY_FORMAT = (
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


@pytest.fixture(scope="module")
def recommended(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `tlspin init` writes for the loopback server, plus the backup pin it asks for."""
    directory = tmp_path_factory.mktemp("workflow")
    policy = directory / "pins.toml"
    made = invoke("init", world.target, "--cafile", str(world.root_pem), "--out", str(policy))
    assert made.exit_code == 0, made.stderr
    backup = invoke(
        "backup-key", "--host", "localhost", "--out", str(directory / "keys"), "--add-to",
        str(policy),
    )
    assert backup.exit_code == 0, backup.stderr
    return policy


def test_recommended_policy_lints_clean(recommended: Path) -> None:
    """init's policy with its backup pin has an expiry, a backup and no lint error or warning."""
    result = invoke("lint", str(recommended), "--fail-on", "warning")
    assert result.exit_code == 0, result.stdout


@pytest.mark.parametrize("fmt", [f for f in EVERY_FORMAT if f != "ats"])
def test_recommended_policy_exports_cleanly(recommended: Path, fmt: str) -> None:
    """Every format that can express the recommended policy exports it without --force."""
    result = invoke("export", str(recommended), "--format", fmt)
    assert result.exit_code == 0, result.stderr
    assert "error" not in result.stderr
    assert "--force" not in result.stderr


def test_ats_refusal_says_why_and_what_to_do(recommended: Path) -> None:
    """ATS truly cannot express it (no expiry; CA and leaf pins must both match): the refusal
    explains each, says what to do instead, and offers --force once, at the end."""
    result = invoke("export", str(recommended), "--format", "ats")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: rule")]
    assert len(errors) == 2
    expiry = next(e for e in errors if "no pin expiry" in e)
    assert "Ship an update" in expiry
    assert "trustkit-ios" in expiry
    assert any("match in both" in e and "CA keys only" in e for e in errors)
    assert all("--force" not in e for e in errors)
    assert result.stderr.strip().endswith("--force writes it anyway, with these errors as warnings")
    forced = invoke("export", str(recommended), "--format", "ats", "--force")
    assert forced.exit_code == 0
    assert forced.stderr.count("warning: forced: ") == 2
    assert "--force" not in forced.stderr


TODAY = dt.date(2026, 3, 1)


@pytest.mark.parametrize("fmt", [f for f in EVERY_FORMAT if f != "json"])  # json says it all
def test_no_problem_text_suggests_force(fmt: str) -> None:
    """Whatever a format refuses, its messages never say "pass --force": under --force they are
    printed as warnings, where that advice would be wrong (the CLI offers --force itself)."""
    a, b, c = pins(3)
    policy = PinPolicy(
        [
            rule(["**.example.com"], [a, b]),
            rule(
                ["*.example.org", "api.example.com"],
                [a, c],
                expires=TODAY,
                mode="report",
                deny=[b],
                pin_info={a: PinInfo("leaf"), c: PinInfo("root")},
            ),
        ]
    )
    options = ExportOptions(today=TODAY, host="api.example.com", okhttp_version=3)
    with pytest.raises(ExportRefusedError) as refused:
        export(policy, fmt, options)
    messages = [str(p) for p in refused.value.problems]
    assert messages  # twin: there is something to say
    assert all("--force" not in m for m in messages), messages
