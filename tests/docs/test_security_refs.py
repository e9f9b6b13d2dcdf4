"""docs/security.md names the test behind each guarantee: every name must stay a real test."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECURITY = ROOT / "docs" / "security.md"
_REF = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?")


def _references() -> list[tuple[str, str | None]]:
    return sorted(set(_REF.findall(SECURITY.read_text(encoding="utf-8"))), key=str)


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    functions = (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))
    return {f.name for f in functions if f.name.startswith("test_")}


def test_security_md_names_tests() -> None:
    """The threat model cites a good number of tests (a broken pattern would find none)."""
    assert len(_references()) >= 40


@pytest.mark.parametrize(("file", "name"), [(f, n or None) for f, n in _references()])
def test_each_cited_test_exists(file: str, name: str | None) -> None:
    """A guarantee whose test was renamed or deleted must not keep citing it."""
    path = ROOT / file
    assert path.is_file(), f"docs/security.md cites {file}, which does not exist"
    if name:
        assert name in _test_names(path), f"docs/security.md cites {file}::{name}, not a test there"


def test_a_missing_test_is_caught(tmp_path: Path) -> None:
    """Failure twin: a made-up name is not found among a file's tests."""
    names = _test_names(ROOT / "tests" / "test_context.py")
    assert "test_mispinned_socket_raises_pin_mismatch" in names
    assert "test_this_test_does_not_exist" not in names
