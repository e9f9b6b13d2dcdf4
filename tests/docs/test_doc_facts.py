"""Facts the README states about the code, checked against the code."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import tlspin

README = Path(__file__).resolve().parents[2] / "README.md"


def _violation_fields_in(text: str) -> list[str]:
    match = re.search(r"`tlspin\.Violation` \(((?:`\w+`,?\s*)+)\)", text)
    assert match, "the README no longer lists the fields of `tlspin.Violation` as (`a`, `b`, …)"
    return re.findall(r"`(\w+)`", match.group(1))


def test_readme_lists_the_violation_fields() -> None:
    """The README names every field of tlspin.Violation, in order, by its real name."""
    assert dataclasses.is_dataclass(tlspin.Violation)
    expected = [f.name for f in dataclasses.fields(tlspin.Violation)]
    assert _violation_fields_in(README.read_text(encoding="utf-8")) == expected


def test_field_list_check_sees_a_wrong_name() -> None:
    """Twin: a list with the old wrong name ('host') does not pass for the real fields."""
    text = "a `tlspin.Violation` (`host`, `port`) for the policy's observers"
    assert _violation_fields_in(text) == ["host", "port"]
    assert _violation_fields_in(text) != [f.name for f in dataclasses.fields(tlspin.Violation)]


def _project_version() -> str:
    import tomllib

    pyproject = README.with_name("pyproject.toml").read_text(encoding="utf-8")
    return str(tomllib.loads(pyproject)["project"]["version"])


def test_readme_names_the_files_the_build_writes() -> None:
    """The README's install commands name dist/ files of the version pyproject.toml builds."""
    named = re.findall(r"dist/tlspin-([^-\s'\"`]+?)(?:\.tar\.gz|-py3-none-any\.whl)",
                       README.read_text(encoding="utf-8"))
    assert named, "the README no longer names the built sdist and wheel"
    assert set(named) == {_project_version()}


def _failure_example() -> list[str]:
    from docs.blocks import parse

    for block in parse("README.md"):
        if block.lang == "text" and block.text.startswith("Certificate pinning failure!"):
            return block.text.splitlines()
    raise AssertionError("the README no longer shows what a pin failure looks like")


def _real_failure_message(tmp_path: Path) -> list[str]:
    """The message tlspin raises when Corporate Inspection CA forges api.example.com."""
    import socket

    from docs.world import World, pin
    from tlspin.testing.servers import TLSServer

    world = World.build()
    cafile = tmp_path / "trusted.pem"
    cafile.write_bytes(world.root.cert_pem + world.inspection.cert_pem)
    policy = tlspin.PinPolicy.from_mapping({"api.example.com": [pin("api-leaf"),
                                                                pin("api-backup")]})
    context = tlspin.create_context(policy, cafile=str(cafile))
    with TLSServer(world.forged) as server, socket.create_connection(
        ("127.0.0.1", server.port)
    ) as raw:
        try:
            context.wrap_socket(raw, server_hostname="api.example.com").close()
        except tlspin.PinMismatchError as exc:
            return str(exc).splitlines()
    raise AssertionError("the forged chain was accepted")


def _same_shape(shown: list[str], real: list[str]) -> bool:
    """Line for line equal, where … in a shown line stands for any text."""
    return len(shown) == len(real) and all(
        re.fullmatch(".*?".join(re.escape(p) for p in want.split("…")), got)
        for want, got in zip(shown, real, strict=True)
    )


def test_readme_failure_example_is_the_real_message(tmp_path: Path) -> None:
    """The README's 'What a failure looks like' is what tlspin says, line for line, when an
    inspection CA the client trusts forges api.example.com (pins elided with … aside)."""
    assert _same_shape(_failure_example(), _real_failure_message(tmp_path))


def test_failure_example_check_sees_a_difference(tmp_path: Path) -> None:
    """Twin: a shown message with another pinned key does not pass for the real one."""
    shown = [line.replace("fo4mCxrz", "r/mIkG3e") for line in _failure_example()]
    assert not _same_shape(shown, _real_failure_message(tmp_path))


def test_key_table_lists_the_committed_keys() -> None:
    """tests/docs/keys/README.md gives each committed key's real pin."""
    from docs.world import KEYS, pin

    table = dict(re.findall(r"^\| `([\w-]+)\.pem` \|.*\| `(sha256/[^`]+)` \|$",
                            (KEYS / "README.md").read_text(encoding="utf-8"), flags=re.MULTILINE))
    assert table == {p.stem: pin(p.stem) for p in KEYS.glob("*.pem")}
