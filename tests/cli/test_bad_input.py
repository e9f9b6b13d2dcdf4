"""Bad input never produces a traceback or a partial file: one error line and an exit code."""

from __future__ import annotations

from pathlib import Path

import pytest

from .world import World, invoke

A = "sha256/" + "A" * 43 + "="
B = "sha256/" + "B" * 42 + "A="


def _one_line_error(stderr: str) -> None:
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert lines, stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"[[rule]]\nhosts = [\n", "invalid TOML"),
        (b"", "empty"),
        (b"rule = []\n", "empty"),
        (b'[[rule]]\nhosts = ["*.com"]\npins = ["' + A.encode() + b'"]\n', "public suffix"),
        (b'[[rule]]\nhosts = ["a.example.com"]\npins = ["sha1/AAAA"]\n', "SHA-1"),
        (b"\xff\xfe\x00", "not UTF-8"),
    ],
)
@pytest.mark.parametrize("command", ["export", "check"])
def test_bad_policy_files(world: World, content: bytes, needle: str, command: str) -> None:
    """Bad TOML, empty policies, bad patterns, SHA-1 pins and binary junk exit 2 with one line."""
    path = world.write("bad.toml", content)
    if command == "export":
        result = invoke("export", str(path), "--format", "json")
    else:
        result = invoke(
            "check", world.target, "--policy", str(path), "--cafile", str(world.root_pem)
        )
    assert result.exit_code == 2
    _one_line_error(result.stderr)
    assert needle.lower() in result.stderr.lower()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n", "not base64"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n", "no matching END"),
        (b"\x30\x82\x01\x00garbage", "malformed DER"),
        (b"-----BEGIN CERTIFICATE-----\n\x80\x81\n-----END CERTIFICATE-----\n", "binary"),
        (b"hello world\n", "neither"),
        (b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", "X509 CRL"),
    ],
)
def test_bad_certificate_files(world: World, content: bytes, needle: str) -> None:
    """Malformed PEM, truncated DER, mixed binary and unknown blocks exit 2 with one line."""
    path = world.write("bad.pem", content)
    result = invoke("pin", str(path))
    assert result.exit_code == 2
    _one_line_error(result.stderr)
    assert needle in result.stderr


def test_refused_export_writes_no_file(world: World, tmp_path: Path) -> None:
    """A refused export leaves no output file, and an existing one unchanged."""
    policy = world.write(
        "p.toml",
        f'[[rule]]\nhosts = ["a.example.com"]\npins = ["{A}", "{B}"]\nmode = "report"\n',
    )  # OkHttp has no report-only mode
    out = tmp_path / "pinner.java"
    refused = invoke("export", str(policy), "--format", "okhttp-java", "--out", str(out))
    assert refused.exit_code == 1
    assert not out.exists()
    out.write_text("previous")
    again = invoke("export", str(policy), "--format", "okhttp-java", "--out", str(out))
    assert again.exit_code == 1
    assert out.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pinner.java"]
    forced = invoke("export", str(policy), "--format", "okhttp-java", "--out", str(out), "--force")
    assert forced.exit_code == 0, forced.stderr
    assert "forced:" in forced.stderr
    assert out.read_text().startswith("new CertificatePinner.Builder()")


def test_import_bad_inputs(world: World, tmp_path: Path) -> None:
    """Malformed XML, entities, bad plists, headers and sources exit 2 and write no file."""
    out = tmp_path / "imported.toml"
    cases = [
        (b"<network-security-config><domain-config>", "android-nsc", "invalid XML"),
        (
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><network-security-config/>',
            "android-nsc",
            "entity",
        ),
        (b"<plist><dict></plist>", "trustkit-ios", "not a property list"),
        (b"Public-Key-Pins: max-age=100", "hpkp", "--host"),
        (b'.add("a.example.com", pins)', "okhttp-java", "string literals"),
        (b"{", "json", "invalid JSON"),
    ]
    for content, fmt, needle in cases:
        src = world.write("in.txt", content)
        result = invoke("import", str(src), "--from", fmt, "--out", str(out))
        assert result.exit_code == 2, (fmt, result.stdout)
        _one_line_error(result.stderr)
        assert needle in result.stderr, (fmt, result.stderr)
        assert not out.exists()
    missing = invoke("import", str(tmp_path / "nope.xml"), "--from", "android-nsc")
    assert missing.exit_code == 2
    assert "no such" in missing.stderr


def test_import_refuses_to_overwrite(world: World, tmp_path: Path) -> None:
    """import keeps an existing --out file unless --force."""
    src = world.write(
        "p.json", f'{{"rule": [{{"hosts": ["a.example.com"], "pins": ["{A}", "{B}"]}}]}}'
    )
    out = tmp_path / "p.toml"
    out.write_text("mine")
    assert invoke("import", str(src), "--from", "json", "--out", str(out)).exit_code == 2
    assert out.read_text() == "mine"
    assert invoke("import", str(src), "--from", "json", "--out", str(out), "--force").exit_code == 0
    assert A in out.read_text()


def test_unknown_command_options_are_usage_errors(world: World) -> None:
    """click usage errors exit 2."""
    assert invoke("export", "x.toml").exit_code == 2
    assert invoke("lint").exit_code == 2


def test_duplicate_json_keys_are_refused(world: World) -> None:
    """A JSON policy with a duplicated key is refused (two parsers could read it differently)."""
    path = world.write(
        "dup.json",
        f'{{"rule": [{{"hosts": ["a.example.com"], "pins": ["{A}", "{B}"], "pins": ["{A}"]}}]}}',
    )
    result = invoke("export", str(path), "--format", "json")
    assert result.exit_code == 2
    assert "duplicate JSON key" in result.stderr
