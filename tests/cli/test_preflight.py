"""``tlspin preflight``: the rotation scenarios that brick or spare clients in the field."""

from __future__ import annotations

import json

import pytest

from tlspin.testing.pki import Leaf

from .world import World, invoke

FAKE = "sha256/" + "F" * 42 + "A="


def _policy(world: World, name: str, *pins: str, extra: str = "") -> str:
    body = ", ".join(f'"{p}"' for p in pins)
    return str(world.write(name, f'[[rule]]\nhosts = ["localhost"]\npins = [{body}]\n{extra}'))


def _run(world: World, leaf: Leaf, *policies: str, extra: tuple[str, ...] = ()) -> tuple[int, dict]:  # type: ignore[type-arg]
    chain = world.write("new-chain.pem", leaf.chain_pem)
    args = ["preflight", "--chain", str(chain), "--cafile", str(world.root_pem), "--json", *extra]
    for p in policies:
        args += ["--policy", p]
    result = invoke(*args)
    assert result.exit_code in (0, 1), result.stderr
    return result.exit_code, json.loads(result.stdout)


def _verdicts(report: dict) -> list[bool]:  # type: ignore[type-arg]
    return [v["passed"] for v in report["versions"]]


def test_reissued_leaf_same_key_passes(world: World) -> None:
    """A leaf re-issued with the same key passes a leaf-pinned policy."""
    policy = _policy(world, "leaf.toml", world.leaf_pin, world.backup_pin)
    code, report = _run(world, world.inter.reissue(world.leaf, same_key=True), policy)
    assert code == 0
    assert _verdicts(report) == [True]
    assert "matches pin" in report["versions"][0]["hosts"][0]["rules"][0]["reason"]


def test_new_key_without_backup_fails(world: World) -> None:
    """A leaf with a new key fails a policy pinning only the old leaf key and an unrelated key."""
    policy = _policy(world, "nobackup.toml", world.leaf_pin, FAKE)
    code, report = _run(world, world.inter.reissue(world.leaf, same_key=False), policy)
    assert code == 1
    assert _verdicts(report) == [False]
    host = report["versions"][0]["hosts"][0]
    assert "refuse" in host["reason"]
    assert "none of its 2 pins" in host["rules"][0]["reason"]


def test_rotation_to_backup_passes_only_where_backup_shipped(world: World) -> None:
    """Rotating to the backup key passes the version that shipped its pin, fails the older one."""
    old = _policy(world, "v1.toml", world.leaf_pin, FAKE)
    new = _policy(world, "v2.toml", world.leaf_pin, world.backup_pin)
    rotated = world.inter.issue("localhost", "127.0.0.1", key=world.backup)
    code, report = _run(world, rotated, old, new)
    assert code == 1
    assert _verdicts(report) == [False, True]
    code_new_only, _ = _run(world, rotated, new)
    assert code_new_only == 0


@pytest.mark.parametrize(("pinned", "passes"), [("root", True), ("intermediate", False)])
def test_new_intermediate_under_same_root(world: World, pinned: str, passes: bool) -> None:
    """A new intermediate and leaf key under one root pass root pins, fail intermediate pins."""
    pin = world.root_pin if pinned == "root" else world.inter_pin
    policy = _policy(world, f"{pinned}.toml", pin, world.backup_pin)
    new_inter = world.root.intermediate("tlspin cli test intermediate 2")
    code, report = _run(world, new_inter.issue("localhost", "127.0.0.1"), policy)
    assert (code == 0) is passes
    assert _verdicts(report) == [passes]


def test_expired_rule_fails_open(world: World) -> None:
    """An expired rule is not enforced (fail-open), so even a foreign key passes, and says why."""
    policy = _policy(world, "exp.toml", FAKE, world.backup_pin, extra="expires = 2020-01-01\n")
    code, report = _run(world, world.inter.reissue(world.leaf, same_key=False), policy)
    assert code == 0
    assert "expired" in report["versions"][0]["hosts"][0]["rules"][0]["reason"]


def test_chain_that_does_not_verify_fails(world: World) -> None:
    """A chain from a CA clients do not trust fails every pinned version, whatever the pins."""
    policy = _policy(world, "any.toml", world.rogue_leaf.pin, world.backup_pin)
    code, report = _run(world, world.rogue_leaf, policy)
    assert code == 1
    assert "does not verify" in report["versions"][0]["hosts"][0]["reason"]


def test_live_comparison(world: World) -> None:
    """--live HOST lines up today's chain with the planned one and checks today's chain too."""
    policy = _policy(world, "live.toml", world.inter_pin, world.backup_pin)
    planned = world.inter.reissue(world.leaf, same_key=False)
    code, report = _run(world, planned, policy, extra=("--live", world.target))
    assert code == 0
    diff = report["live"]["diff"]
    assert [row["same_key"] for row in diff] == [False, True, True]
    assert report["live"]["current_verdicts"] == {policy: "pass"}


def test_human_output_names_each_version(world: World) -> None:
    """The table names each policy version and ends with a verdict per version."""
    old = _policy(world, "h1.toml", world.leaf_pin, FAKE)
    chain = world.write("c.pem", world.inter.reissue(world.leaf, same_key=False).chain_pem)
    result = invoke(
        "preflight", "--policy", old, "--chain", str(chain), "--cafile", str(world.root_pem)
    )
    assert result.exit_code == 1
    assert f"{old}: WOULD BREAK" in " ".join(result.stdout.split())


@pytest.mark.parametrize("kind", ["key", "ca-first", "empty", "garbage"])
def test_bad_chain_files_exit_2(world: World, kind: str) -> None:
    """Keys in a chain, a CA first, an empty file or garbage are exit 2 with one error line."""
    content = {
        "key": world.leaf.cert_pem + world.leaf.key_pem,
        "ca-first": world.inter.cert_pem + world.leaf.cert_pem,
        "empty": b"",
        "garbage": b"\x30\x03\x02\x01",
    }[kind]
    chain = world.write("bad.pem", content)
    policy = _policy(world, "p.toml", world.leaf_pin, world.backup_pin)
    result = invoke(
        "preflight", "--policy", policy, "--chain", str(chain), "--cafile", str(world.root_pem)
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_live_unreachable_exits_3(world: World) -> None:
    """--live against the rogue server (untrusted CA) is a TLS error: exit 3."""
    policy = _policy(world, "p3.toml", world.leaf_pin, world.backup_pin)
    chain = world.write("c3.pem", world.leaf.chain_pem)
    result = invoke(
        "preflight",
        "--policy",
        policy,
        "--chain",
        str(chain),
        "--cafile",
        str(world.root_pem),
        "--live",
        world.rogue_target,
    )
    assert result.exit_code == 3


def test_private_ca_without_cafile_says_system_store_and_suggests_cafile(world: World) -> None:
    """Without --cafile the chain is checked against the system store; on a private CA the
    reason says so (not cryptography's "candidates exhausted") and --cafile is suggested."""
    policy = _policy(world, "p.toml", world.leaf_pin, world.backup_pin)
    chain = world.write("chain.pem", world.leaf.chain_pem)
    result = invoke("preflight", "--chain", str(chain), "--policy", policy, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    why = report["errors"]["localhost"]
    assert why.startswith("no path to a root in the system trust store")
    assert "issued by CN=tlspin cli test root" in why
    assert "candidates exhausted" not in result.stdout
    assert "--cafile" in result.stderr
    trusted = invoke(
        "preflight", "--chain", str(chain), "--policy", policy, "--cafile", str(world.root_pem)
    )
    assert trusted.exit_code == 0  # twin: the same chain against its root passes
    assert "--cafile" not in trusted.stderr


def test_missing_intermediate_is_named(world: World) -> None:
    """A chain file without its intermediate is told which issuer it lacks."""
    policy = _policy(world, "p.toml", world.leaf_pin, world.backup_pin)
    code, _ = _run(world, world.leaf, policy)
    assert code == 0  # twin: the full chain verifies
    chain = world.write("leaf-only.pem", world.leaf.cert_pem)
    result = invoke(
        "preflight", "--chain", str(chain), "--policy", policy, "--cafile", str(world.root_pem),
        "--json",
    )
    why = json.loads(result.stdout)["errors"]["localhost"]
    assert f"no path to a root in the roots of {world.root_pem}" in why
    assert "issued by CN=tlspin cli test intermediate" in why
    assert "intermediate missing" in why
