"""``tlspin pin`` and ``tlspin check`` against files and loopback servers."""

from __future__ import annotations

import json
import subprocess
import sys

from cryptography.hazmat.primitives import serialization

from tlspin.pins import Pin

from .world import World, invoke

FAKE = "sha256/" + "A" * 43 + "="


def test_pin_pem_bundle_prints_one_line_per_certificate(world: World) -> None:
    """A PEM bundle prints one pin per certificate, leaf first, matching each certificate."""
    path = world.write("chain.pem", world.leaf.chain_pem)
    result = invoke("pin", str(path))
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [world.leaf_pin, world.inter_pin]
    assert "CN=localhost" in lines[0]


def test_pin_der_key_csr_and_json(world: World) -> None:
    """DER certificates, PEM private keys and CSRs all print the same key's pin (JSON form)."""
    from tlspin.testing.pki import backup_key

    key, csr = backup_key(names=["localhost"])
    der = world.write("leaf.der", world.leaf.cert_der)
    keyfile = world.write("leaf.key", world.leaf.key_pem)
    csrfile = world.write("b.csr", csr.public_bytes(serialization.Encoding.PEM))
    result = invoke("pin", "--json", str(der), str(keyfile), str(csrfile))
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["kind"] for r in rows] == ["certificate", "private key", "certificate request"]
    assert rows[0]["pin"] == rows[1]["pin"] == world.leaf_pin
    assert rows[2]["pin"] == str(Pin.from_private_key(key)) != world.leaf_pin


def test_pin_encrypted_key_needs_passphrase(world: World) -> None:
    """An encrypted key is refused without its passphrase and pinned with it."""
    pem = world.leaf.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret"),
    )
    keyfile = world.write("enc.key", pem)
    refused = invoke("pin", str(keyfile))
    assert refused.exit_code == 2
    assert "passphrase" in refused.stderr
    pwfile = world.write("pw", "s3cret\n")
    ok = invoke("pin", "--passphrase-file", str(pwfile), str(keyfile), "--form", "hpkp")
    assert ok.exit_code == 0, ok.stderr
    assert ok.stdout.split()[0] == Pin.parse(world.leaf_pin).hpkp


def test_pin_host_shows_verified_chain_table(world: World) -> None:
    """`tlspin pin HOST:PORT` prints the verified chain (leaf, intermediate, root) with pins."""
    result = invoke("pin", world.target, "--cafile", str(world.root_pem))
    assert result.exit_code == 0, result.stderr
    for pin in (world.leaf_pin, world.inter_pin, world.root_pin):
        assert pin in result.stdout
    for header in ("depth", "subject", "issuer", "not after", "pin"):
        assert header in result.stdout


def test_pin_url_json_is_leaf_first(world: World) -> None:
    """An https:// URL works too; --json lists objects with pin and subject, leaf first."""
    url = f"https://localhost:{world.server.port}/some/path"
    result = invoke("pin", url, "--cafile", str(world.root_pem), "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["pin"] for r in rows] == [world.leaf_pin, world.inter_pin, world.root_pin]
    assert rows[0]["subject"].startswith("CN=localhost")
    assert [r["depth"] for r in rows] == [0, 1, 2]


def test_pin_host_untrusted_ca_exits_3(world: World) -> None:
    """A server whose CA is not trusted is a TLS error: exit 3, one line, no table."""
    result = invoke("pin", world.rogue_target, "--cafile", str(world.root_pem))
    assert result.exit_code == 3
    assert result.stdout == ""
    assert result.stderr.startswith("error: certificate verification failed")
    assert len(result.stderr.strip().splitlines()) == 1


def test_check_pass_with_intermediate_pin(world: World) -> None:
    """check passes (exit 0) when the intermediate's pin is given, and marks it in the table."""
    result = invoke(
        "check", world.target, "--cafile", str(world.root_pem), "--pin", world.inter_pin
    )
    assert result.exit_code == 0, result.stderr
    assert "PASS" in result.stdout
    assert "pinned" in result.stdout


def test_check_root_pin_not_sent_by_server_passes(world: World) -> None:
    """A root pin passes although the server sends only leaf and intermediate."""
    result = invoke(
        "check", world.target, "--cafile", str(world.root_pem), "--pin", world.root_pin, "--json"
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["result"] == "pass"
    assert [row["match"] for row in report["chain"]] == [None, None, "pinned"]


def test_check_wrong_pin_exits_1(world: World) -> None:
    """A pin that is not in the chain fails with exit 1 and says why."""
    result = invoke("check", world.target, "--cafile", str(world.root_pem), "--pin", FAKE)
    assert result.exit_code == 1
    assert "FAIL" in result.stdout
    assert "no key of the verified chain matches" in result.stdout


def test_check_mitm_with_trusted_rogue_ca_exits_1(world: World) -> None:
    """A forged leaf from a second CA the client trusts passes CA checks but fails the pins."""
    pins = ["--pin", world.leaf_pin, "--pin", world.inter_pin]
    real = invoke("check", world.target, "--cafile", str(world.both_pem), *pins)
    forged = invoke("check", world.rogue_target, "--cafile", str(world.both_pem), *pins)
    assert real.exit_code == 0, real.stderr
    assert forged.exit_code == 1


def test_check_with_policy_file(world: World) -> None:
    """--policy FILE passes for the real server and fails for the forged one."""
    path = world.write(
        "p.toml",
        f'[[rule]]\nhosts = ["localhost"]\npins = ["{world.leaf_pin}", "{world.backup_pin}"]\n',
    )
    assert (
        invoke(
            "check", world.target, "--cafile", str(world.both_pem), "--policy", str(path)
        ).exit_code
        == 0
    )
    assert (
        invoke(
            "check", world.rogue_target, "--cafile", str(world.both_pem), "--policy", str(path)
        ).exit_code
        == 1
    )


def test_check_deny_pin_fails(world: World) -> None:
    """A deny pin matching the intermediate fails the check even though another pin matches."""
    path = world.write(
        "d.toml",
        f'[[rule]]\nhosts = ["localhost"]\npins = ["{world.leaf_pin}", "{world.backup_pin}"]\n'
        f'deny = ["{world.inter_pin}"]\n',
    )
    result = invoke("check", world.target, "--cafile", str(world.root_pem), "--policy", str(path))
    assert result.exit_code == 1
    assert "DENIED" in result.stdout


def test_check_report_only_failure_exits_1(world: World) -> None:
    """A report-only rule that does not match is reported as a failure (exit 1)."""
    path = world.write(
        "r.toml", f'[[rule]]\nhosts = ["localhost"]\npins = ["{FAKE}"]\nmode = "report"\n'
    )
    result = invoke("check", world.target, "--cafile", str(world.root_pem), "--policy", str(path))
    assert result.exit_code == 1
    assert "report-only" in result.stdout


def test_check_usage_errors_exit_2(world: World) -> None:
    """No pins, both --policy and --pin, a bad pin or an uncovered host are usage errors (2)."""
    base = ["check", world.target, "--cafile", str(world.root_pem)]
    path = world.write(
        "o.toml",
        f'[[rule]]\nhosts = ["other.example.com"]\npins = ["{FAKE}", "{world.leaf_pin}"]\n',
    )
    for extra in (
        [],
        ["--pin", FAKE, "--policy", str(path)],
        ["--pin", "sha256/AAAA"],
        ["--policy", str(path)],
    ):
        result = invoke(*base, *extra)
        assert result.exit_code == 2, extra
        assert result.stderr.startswith("error: ")
        assert len(result.stderr.strip().splitlines()) == 1


def test_check_unreachable_exits_3(world: World) -> None:
    """A port nobody listens on is a connection error: exit 3."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = invoke("check", f"localhost:{port}", "--cafile", str(world.root_pem), "--pin", FAKE)
    assert result.exit_code == 3
    assert "cannot connect" in result.stderr


def test_console_script_runs_without_traceback(world: World) -> None:
    """`python -m tlspin pin` works as a real process, and bad input gives one error line."""
    path = world.write("c.pem", world.leaf.cert_pem)
    ok = subprocess.run(
        [sys.executable, "-m", "tlspin", "pin", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split()[0] == world.leaf_pin
    bad = world.write(
        "bad.pem", "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"
    )
    failed = subprocess.run(
        [sys.executable, "-m", "tlspin", "pin", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert failed.returncode == 2
    assert "Traceback" not in failed.stderr
    assert failed.stderr.startswith("error: ")


def test_check_expired_rule_fails_open_with_warning(world: World) -> None:
    """An expired rule is not enforced: check passes, says so, and prints the expiry warning."""
    path = world.write(
        "e.toml",
        f'[[rule]]\nhosts = ["localhost"]\npins = ["{FAKE}", "{world.backup_pin}"]\n'
        "expires = 2020-01-01\n",
    )
    result = invoke("check", world.target, "--cafile", str(world.root_pem), "--policy", str(path))
    assert result.exit_code == 0, result.stderr
    assert "every rule for this host has expired" in result.stdout
    assert "warning: " in result.stderr
    assert "expired" in result.stderr
    live = world.write(
        "l.toml", f'[[rule]]\nhosts = ["localhost"]\npins = ["{FAKE}", "{world.backup_pin}"]\n'
    )
    assert (
        invoke(
            "check", world.target, "--cafile", str(world.root_pem), "--policy", str(live)
        ).exit_code
        == 1
    )


def test_pin_host_on_a_private_ca_suggests_cafile(world: World) -> None:
    """Without --cafile a privately issued server fails verification, and the one-line error
    says it does not verify against the system store and suggests --cafile."""
    result = invoke("pin", world.target)
    assert result.exit_code == 3
    assert "unable to get local issuer certificate" in result.stderr
    assert "system trust store" in result.stderr
    assert "--cafile" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_pin_host_with_cafile_needs_no_hint(world: World) -> None:
    """Twin: with --cafile the same server's chain is printed; an untrusted one gets no hint."""
    assert invoke("pin", world.target, "--cafile", str(world.root_pem)).exit_code == 0
    rogue = invoke("pin", world.rogue_target, "--cafile", str(world.root_pem))
    assert rogue.exit_code == 3
    assert "--cafile" not in rogue.stderr
