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
