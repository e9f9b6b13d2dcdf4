"""``tlspin init`` and ``tlspin backup-key``."""

from __future__ import annotations

import datetime as dt
import json
import socket
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tlspin.pins import Pin
from tlspin.policyfile import load

from .world import World, invoke


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_init_pins_leaf_and_issuer(world: World, tmp_path: Path) -> None:
    """init writes a loadable policy with the leaf and intermediate pins, roles and expiry."""
    out = tmp_path / "policy.toml"
    result = invoke(
        "init",
        "localhost",
        "--port",
        str(world.server.port),
        "--cafile",
        str(world.root_pem),
        "--out",
        str(out),
        "--expires-days",
        "90",
    )
    assert result.exit_code == 0, result.stderr
    text = out.read_text()
    assert "TODO: add a backup pin" in text
    policy = load(out)
    (rule,) = policy.rules
    assert [str(p) for p in rule.pins] == [world.leaf_pin, world.inter_pin]
    roles = [rule.info(p).role for p in rule.pins]  # type: ignore[union-attr]
    assert roles == ["leaf", "intermediate"]
    assert rule.expires == dt.datetime.now(dt.UTC).date() + dt.timedelta(days=90)
    assert "backup" in result.stderr


def test_init_refuses_to_overwrite_and_unreachable_hosts(world: World, tmp_path: Path) -> None:
    """init keeps existing files without --force; an unreachable host exits 3 and writes nothing."""
    out = tmp_path / "p.toml"
    out.write_text("keep me")
    kept = invoke("init", world.target, "--cafile", str(world.root_pem), "--out", str(out))
    assert kept.exit_code == 2
    assert out.read_text() == "keep me"
    fresh = tmp_path / "new.toml"
    down = invoke(
        "init",
        world.target,
        f"localhost:{_free_port()}",
        "--cafile",
        str(world.root_pem),
        "--out",
        str(fresh),
    )
    assert down.exit_code == 3
    assert not fresh.exists()
    assert list(tmp_path.iterdir()) == [out]


def test_init_json_and_stdout(world: World) -> None:
    """init prints TOML to stdout by default."""
    result = invoke("init", world.target, "--cafile", str(world.root_pem))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("[[rule]]") == 1
    assert world.leaf_pin in result.stdout


def test_backup_key_ec_default(tmp_path: Path) -> None:
    """backup-key makes an EC P-256 key (0600, warned unencrypted) and a CSR with the same pin."""
    result = invoke(
        "backup-key",
        "--host",
        "api.example.com",
        "--host",
        "127.0.0.1",
        "--out",
        str(tmp_path / "keys"),
    )
    assert result.exit_code == 0, result.stderr
    key_file = next((tmp_path / "keys").glob("*.key"))
    csr_file = next((tmp_path / "keys").glob("*.csr"))
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    pin = result.stdout.strip()
    assert pin == str(Pin.from_private_key(key)) == str(Pin.from_csr(csr_file.read_bytes()))
    assert "not encrypted" in result.stderr
    assert "offline" in result.stderr
    # The key never reaches the terminal.
    body = key_file.read_text().splitlines()[1]
    assert body not in result.stdout + result.stderr
    assert "PRIVATE KEY" not in result.stdout + result.stderr


def test_backup_key_rsa_encrypted_from_file(tmp_path: Path) -> None:
    """--key-type rsa with --passphrase-file writes an encrypted RSA key that opens only with it."""
    secret = tmp_path / "pass"
    secret.write_text("correct horse\n")
    result = invoke(
        "backup-key",
        "--host",
        "api.example.com",
        "--out",
        str(tmp_path / "k"),
        "--key-type",
        "rsa",
        "--rsa-bits",
        "2048",
        "--passphrase-file",
        str(secret),
    )
    assert result.exit_code == 0, result.stderr
    data = next((tmp_path / "k").glob("*.key")).read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in data
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(data, password=None)
    key = serialization.load_pem_private_key(data, password=b"correct horse")
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048
    assert result.stdout.strip() == str(Pin.from_private_key(key))


def test_backup_key_passphrase_from_env_and_prompt(tmp_path: Path) -> None:
    """--passphrase-env reads $VAR; --ask-passphrase prompts twice; a missing VAR is exit 2."""
    env = invoke(
        "backup-key",
        "--host",
        "a.example.com",
        "--out",
        str(tmp_path / "e"),
        "--passphrase-env",
        "TLSPIN_TEST_PASS",
        env={"TLSPIN_TEST_PASS": "from-env"},
    )
    assert env.exit_code == 0, env.stderr
    data = next((tmp_path / "e").glob("*.key")).read_bytes()
    serialization.load_pem_private_key(data, password=b"from-env")
    asked = invoke(
        "backup-key",
        "--host",
        "a.example.com",
        "--out",
        str(tmp_path / "p"),
        "--ask-passphrase",
        input="typed\ntyped\n",
    )
    assert asked.exit_code == 0, asked.stderr
    serialization.load_pem_private_key(
        next((tmp_path / "p").glob("*.key")).read_bytes(), password=b"typed"
    )
    missing = invoke(
        "backup-key",
        "--host",
        "a.example.com",
        "--out",
        str(tmp_path / "m"),
        "--passphrase-env",
        "TLSPIN_TEST_UNSET_VAR",
    )
    assert missing.exit_code == 2
    assert not (tmp_path / "m").exists()


def test_backup_key_refuses_to_overwrite(tmp_path: Path) -> None:
    """A second run on the same day does not replace the existing key."""
    first = invoke("backup-key", "--host", "a.example.com", "--out", str(tmp_path))
    key_file = next(tmp_path.glob("*.key"))
    before = key_file.read_bytes()
    second = invoke("backup-key", "--host", "a.example.com", "--out", str(tmp_path))
    assert first.exit_code == 0
    assert second.exit_code == 2
    assert key_file.read_bytes() == before


def test_backup_key_add_to_policy(world: World, tmp_path: Path) -> None:
    """--add-to appends the pin with role backup; lint --live then finds no missing backup."""
    policy = tmp_path / "p.toml"
    invoke("init", world.target, "--cafile", str(world.root_pem), "--out", str(policy))
    live_lint = (
        "lint",
        str(policy),
        "--live",
        "--cafile",
        str(world.root_pem),
        "--port",
        str(world.server.port),
    )
    before = invoke(*live_lint)
    assert "TP002" in before.stdout
    result = invoke(
        "backup-key",
        "--host",
        "localhost",
        "--out",
        str(tmp_path / "keys"),
        "--add-to",
        str(policy),
    )
    assert result.exit_code == 0, result.stderr
    (rule,) = load(policy).rules
    new_pin = rule.pins[-1]
    assert str(new_pin) == result.stdout.strip()
    assert rule.info(new_pin).role == "backup"  # type: ignore[union-attr]
    after = invoke(*live_lint)
    assert "TP002" not in after.stdout, after.stdout
    assert after.exit_code == 0, after.stdout


def test_backup_key_add_to_uncovered_host_writes_nothing(world: World, tmp_path: Path) -> None:
    """--add-to a policy without a rule for the host fails before any key is made."""
    policy = world.write(
        "p.toml",
        f'[[rule]]\nhosts = ["a.example.com"]\npins = ["{world.leaf_pin}", "{world.inter_pin}"]\n',
    )
    before = policy.read_bytes()
    result = invoke(
        "backup-key",
        "--host",
        "b.example.org",
        "--out",
        str(tmp_path / "k"),
        "--add-to",
        str(policy),
    )
    assert result.exit_code == 2
    assert "no rule covers" in result.stderr
    assert not (tmp_path / "k").exists()
    assert policy.read_bytes() == before


def test_init_keeps_the_port_for_lint_check_and_monitor(world: World, tmp_path: Path) -> None:
    """init HOST:PORT writes the port into the rule, and lint --live, check and monitor use it
    with no --port or endpoints file."""
    out = tmp_path / "policy.toml"
    cafile = str(world.root_pem)
    made = invoke("init", world.target, "--cafile", cafile, "--out", str(out))
    assert made.exit_code == 0, made.stderr
    assert f"ports = [{world.server.port}]" in out.read_text()
    assert load(out).rules[0].ports == (world.server.port,)
    linted = invoke("lint", str(out), "--live", "--cafile", cafile, "--json")
    found = {f["code"]: f["message"] for f in json.loads(linted.stdout)["findings"]}
    assert "TP017" not in found, found
    assert f"live chain of {world.target}" in found["TP002"]  # reached: all pins are live
    checked = invoke("check", "localhost", "--policy", str(out), "--cafile", cafile)
    assert checked.exit_code == 0, checked.stderr
    assert f"PASS {world.target}" in checked.stdout
    monitored = invoke(
        "monitor", str(out), "--cafile", cafile, "--json", "--state", str(tmp_path / "s.json")
    )
    results = json.loads(monitored.stdout)["results"]
    assert [(r["endpoint"], r["status"]) for r in results] == [(world.target, "green")]


def test_an_explicit_port_still_wins(world: World, tmp_path: Path) -> None:
    """Twin: HOST:PORT and --port override the policy's ports; several ports need a choice."""
    out = tmp_path / "policy.toml"
    cafile = str(world.root_pem)
    assert invoke("init", world.target, "--cafile", cafile, "--out", str(out)).exit_code == 0
    rogue = str(world.rogue_server.port)
    linted = invoke("lint", str(out), "--live", "--cafile", cafile, "--port", rogue, "--json")
    codes = {f["code"] for f in json.loads(linted.stdout)["findings"]}
    assert "TP017" in codes  # the forging server on the other port does not verify
    checked = invoke("check", world.rogue_target, "--policy", str(out), "--cafile", cafile)
    assert checked.exit_code == 3
    assert f"localhost:{rogue}" in checked.stderr
    both = tmp_path / "both.toml"
    both.write_text(
        out.read_text().replace(f"ports = [{world.server.port}]", f"ports = [{rogue}, 1]")
    )
    ambiguous = invoke("check", "localhost", "--policy", str(both), "--cafile", cafile)
    assert ambiguous.exit_code == 2
    assert "give one as HOST:PORT" in ambiguous.stderr

