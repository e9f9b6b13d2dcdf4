"""The keygen and bundle commands, run in-process through click."""

from __future__ import annotations

import base64
import datetime as dt
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization

from tlspin.bundles import load_private_key
from tlspin.cli import main

from .conftest import Pki, make

TWO_PINS = """
[[rule]]
hosts = ["api.example.com"]
pins = [
  "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
  "sha256/BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA=",
]
expires = 2099-01-01
"""
ONE_PIN = """
[[rule]]
hosts = ["api.example.com"]
pins = ["sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]
expires = 2099-01-01
"""


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run ``tlspin ARGS`` in-process."""
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with two keys and two policies."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pins.toml").write_text(TWO_PINS)
    (tmp_path / "one.toml").write_text(ONE_PIN)
    for name in ("a", "b"):
        assert run("keygen", "--out", f"{name}.key").exit_code == 0
    return tmp_path


def test_keygen_writes_private_key_0600_and_prints_only_public(tmp_path: Path) -> None:
    """keygen: key file mode 0600, public key and key id printed, private key never printed."""
    result = run("keygen", "--out", str(tmp_path / "signing.key"))
    assert result.exit_code == 0
    key_path = tmp_path / "signing.key"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key = load_private_key(key_path)
    raw_private = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = (tmp_path / "signing.pub").read_text().strip()
    assert f"public key: {public}" in result.stdout
    assert "key id:" in result.stdout
    everything = result.stdout + result.stderr
    assert "PRIVATE KEY" not in everything
    assert base64.b64encode(raw_private).decode() not in everything
    assert raw_private.hex() not in everything
    again = run("keygen", "--out", str(key_path))
    assert again.exit_code == 2
    assert "exists" in again.stderr
    assert load_private_key(key_path).public_key() == key.public_key()  # untouched


def test_keygen_passphrase(tmp_path: Path) -> None:
    """An encrypted key needs its passphrase to load; the wrong one is refused."""
    env = {"PASS": "correct horse"}
    result = run("keygen", "--out", str(tmp_path / "k.key"), "--passphrase-env", "PASS", env=env)
    assert result.exit_code == 0
    assert b"ENCRYPTED" in (tmp_path / "k.key").read_bytes()
    load_private_key(tmp_path / "k.key", passphrase=b"correct horse")
    (tmp_path / "p.toml").write_text(TWO_PINS)
    args = ["bundle", "sign", str(tmp_path / "p.toml"), "-k", str(tmp_path / "k.key")]
    args += ["--version", "1", "-o", str(tmp_path / "b.json"), "--passphrase-env", "PASS"]
    assert run(*args, env={"PASS": "wrong"}).exit_code == 2
    assert run(*args, env=env).exit_code == 0


def sign(*args: str) -> Result:
    """``tlspin bundle sign ARGS``, asserting success."""
    result = run("bundle", "sign", *args)
    assert result.exit_code == 0, result.stderr
    return result


def test_sign_and_verify(workdir: Path) -> None:
    """sign then verify with the right key exits 0; with another key, or too few keys, 1."""
    sign("pins.toml", "--key", "a.key", "--version", "7", "--expires", "30d", "-o", "b.json")
    ok = run("bundle", "verify", "b.json", "--trusted-key", "a.pub")
    assert ok.exit_code == 0
    assert ok.stdout.startswith("OK: bundle version 7")
    bad = run("bundle", "verify", "b.json", "--trusted-key", "b.pub")
    assert bad.exit_code == 1
    assert "REFUSED (threshold)" in bad.stderr
    two = run("bundle", "verify", "b.json", "-t", "a.pub", "-t", "b.pub", "--threshold", "2")
    assert two.exit_code == 1


def test_sign_refuses_lint_errors_unless_forced(workdir: Path) -> None:
    """A policy with lint errors (a single pin) is refused; --force signs it anyway."""
    args = ("one.toml", "--key", "a.key", "--version", "1", "-o", "one.json")
    refused = run("bundle", "sign", *args)
    assert refused.exit_code == 1
    assert "TP001" in refused.stderr
    assert not (workdir / "one.json").exists()
    sign(*args, "--force")
    assert (workdir / "one.json").exists()


def test_verify_exit_codes(workdir: Path, pki: Pki) -> None:
    """Exit 3 for a malformed bundle, 4 for an expired one or an old version, 2 for a bad key."""
    sign("pins.toml", "-k", "a.key", "--version", "5", "-o", "b.json")
    data = (workdir / "b.json").read_bytes()
    (workdir / "cut.json").write_bytes(data[: len(data) // 2])
    assert run("bundle", "verify", "cut.json", "-t", "a.pub").exit_code == 3
    assert run("bundle", "verify", "b.json", "-t", "a.pub", "--min-version", "5").exit_code == 4
    assert run("bundle", "verify", "b.json", "-t", "a.pub", "--min-version", "4").exit_code == 0
    key = load_private_key(workdir / "a.key")
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    old = make(pki.policy(), [key], 1, issued_at=past, lifetime=dt.timedelta(days=1))
    (workdir / "old.json").write_bytes(old.dumps())
    expired = run("bundle", "verify", "old.json", "-t", "a.pub")
    assert expired.exit_code == 4
    assert "expired" in expired.stderr
    assert run("bundle", "verify", "b.json", "-t", "not-a-key").exit_code == 2
    assert run("bundle", "verify", "b.json", "-t", "a.key").exit_code == 2  # a private key file
    unpinned = run("bundle", "verify", "b.json", "-t", "a.pub", "--update-host", "b.example.com")
    assert unpinned.exit_code == 4


@pytest.mark.parametrize("size", [5 << 20, 17 << 20], ids=["over-bundle-cap", "over-input-cap"])
def test_verify_oversized_bundle_is_malformed_data(workdir: Path, size: int) -> None:
    """A bundle file past the size cap is refused as malformed data (exit 3, reason size), not as
    a usage error (exit 2), however large; the same command on a normal bundle exits 0."""
    sign("pins.toml", "-k", "a.key", "--version", "5", "-o", "b.json")
    with (workdir / "huge.json").open("wb") as handle:
        handle.truncate(size)  # sparse: nothing is written
    for command in ("verify", "show"):
        extra = ["-t", "a.pub"] if command == "verify" else []
        refused = run("bundle", command, "huge.json", *extra)
        assert refused.exit_code == 3, refused.stderr
        assert "REFUSED (size)" in refused.stderr
    assert run("bundle", "verify", "b.json", "-t", "a.pub").exit_code == 0


def test_show_and_diff(workdir: Path) -> None:
    """show summarises rules and signatures; --diff lists added and removed pins."""
    sign("pins.toml", "-k", "a.key", "--version", "1", "-o", "v1.json")
    (workdir / "v2.toml").write_text(TWO_PINS.replace("BBBB", "CCCC", 1))
    sign("v2.toml", "-k", "a.key", "--previous", "v1.json", "-o", "v2.json")
    shown = run("bundle", "show", "v2.json", "--diff", "v1.json")
    assert shown.exit_code == 0
    assert "bundle version 2" in shown.stdout
    assert "api.example.com" in shown.stdout
    assert "changes from version 1 to version 2" in shown.stdout
    assert "+ pin sha256/CCCC" in shown.stdout
    assert "- pin sha256/BBBB" in shown.stdout
    same = run("bundle", "show", "v1.json", "--diff", "v1.json")
    assert "no change" in same.stdout
    assert "does not increase" in same.stdout


def test_rotation_with_the_cli(workdir: Path) -> None:
    """Rotate from key A to key B; clients shipping A accept B's next bundle through the chain."""
    sign("pins.toml", "-k", "a.key", "--version", "1", "-o", "v1.json")
    rotate = ("pins.toml", "--previous", "v1.json", "--next-key", "b.pub", "-o", "v2.json")
    half = run("bundle", "sign", *rotate, "-k", "a.key")
    assert half.exit_code == 1
    assert "signed by 1 of them" in half.stderr
    sign(*rotate, "-k", "a.key", "-k", "b.key")
    assert "signing keys now 1 key(s)" in run("bundle", "verify", "v2.json", "-t", "a.pub").stdout
    wrong = run(
        "bundle", "sign", "pins.toml", "-k", "a.key", "--previous", "v2.json", "-o", "v3.json"
    )
    assert wrong.exit_code == 1
    assert "require 1 signature(s)" in wrong.stderr
    sign("pins.toml", "-k", "b.key", "--previous", "v2.json", "-o", "v3.json")
    assert run("bundle", "verify", "v3.json", "-t", "a.pub").exit_code == 0
    assert "carries 1 earlier key rotation" in run("bundle", "show", "v3.json").stdout


def test_sign_refuses_a_small_order_next_key(workdir: Path) -> None:
    """`--next-key` with the identity point (or the all-zero placeholder, of order 4) is
    refused: after such a rotation anyone could sign bundles (R = identity, S = 0). Nothing is
    written. The twin: a real next key rotates."""
    base = ("pins.toml", "-k", "a.key", "--version", "2", "--next-key", "a.pub")
    for weak in (
        "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "7v////////////////////////////////////////8=",
    ):
        refused = run("bundle", "sign", *base, "--next-key", weak, "-o", "rot.json")
        assert refused.exit_code == 2, refused.stderr
        assert "small order" in refused.stderr or "not canonical" in refused.stderr
        assert not (workdir / "rot.json").exists()
    sign(*base, "--next-key", "b.pub", "-k", "b.key", "-o", "rot.json")
    assert "signing keys now 2 key(s)" in run("bundle", "verify", "rot.json", "-t", "a.pub").stdout


def test_sign_refuses_a_wildcard_over_a_public_suffix(workdir: Path) -> None:
    """Verifiers check host patterns for syntax only (no Public Suffix List version may decide
    a verdict), so the guard runs when signing: `bundle sign` refuses *.vercel.app even with
    --force, and so does sign_bundle() given the rules as data. The twin: a registrable domain
    under the same suffix signs."""
    from tlspin.bundles import BundleError, sign_bundle

    from .conftest import seed_key

    pins = [
        "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "sha256/BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA=",
    ]
    for pattern, ok in (("*.vercel.app", False), ("*.myapp.vercel.app", True)):
        (workdir / "s.toml").write_text(f'[[rule]]\nhosts = ["{pattern}"]\npins = {pins}\n')
        args = ("s.toml", "-k", "a.key", "--version", "1", "--force", "-o", "s.json")
        result = run("bundle", "sign", *args)
        assert (result.exit_code == 0) is ok, result.stderr
        assert ok or "public suffix" in result.stderr
        data = {"rule": [{"hosts": [pattern.replace("*.", "**.")], "pins": pins}]}
        if ok:
            sign_bundle(data, keys=[seed_key(1)], version=1)
        else:
            with pytest.raises(BundleError, match="public suffix") as info:
                sign_bundle(data, keys=[seed_key(1)], version=1)
            assert info.value.reason == "policy"


def test_keygen_never_writes_through_a_planted_symlink(tmp_path: Path) -> None:
    """A symbolic link planted where the key goes is refused without --force (even dangling),
    and replaced, not followed, with --force: the link's target never receives the key."""
    victim = tmp_path / "victim.txt"
    key_path = tmp_path / "signing.key"
    key_path.symlink_to(victim)  # dangling: victim.txt does not exist yet
    refused = run("keygen", "--out", str(key_path))
    assert refused.exit_code == 2
    assert not victim.exists()
    victim.write_text("precious")
    victim.chmod(0o644)
    assert run("keygen", "--out", str(key_path), "--force").exit_code == 0
    assert victim.read_text() == "precious"
    assert not key_path.is_symlink()
    assert stat.S_IMODE(key_path.lstat().st_mode) == 0o600
    load_private_key(key_path)


def test_keygen_force_over_a_readable_file_leaves_only_0600(tmp_path: Path) -> None:
    """--force over an existing world-readable key file yields a 0600 file (never 0644)."""
    key_path = tmp_path / "signing.key"
    key_path.write_text("old")
    key_path.chmod(0o644)
    assert run("keygen", "--out", str(key_path), "--force").exit_code == 0
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
