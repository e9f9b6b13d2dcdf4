"""The conformance vectors (tests/vectors/bundles): committed as generated, met by this verifier.

clients/java runs the same vectors (its build script, and test_java_client.py, which also
compares the two verifiers' answers directly).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .vectors import VECTORS, build, canonical_result, evaluate, load_manifest

MANIFEST = load_manifest()


def test_committed_vectors_are_what_the_script_writes(tmp_path: Path) -> None:
    """generate.py reproduces every committed file byte for byte, and nothing else is there."""
    build(tmp_path)
    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    committed = {
        p.relative_to(VECTORS)
        for p in VECTORS.rglob("*")
        if p.is_file()
        and p.name not in ("generate.py", "README.md")
        and "__pycache__" not in p.parts
    }
    assert written == committed
    changed = [
        str(p) for p in sorted(written) if (tmp_path / p).read_bytes() != (VECTORS / p).read_bytes()
    ]
    assert changed == [], "run tests/vectors/bundles/generate.py and commit the result"


def test_vectors_cover_every_refusal_reason() -> None:
    """Every reason a served document can get (all but key and store) has vectors."""
    from tlspin.bundles import REASONS

    found = {v["expect"].get("reason", v["expect"]["verdict"]) for v in MANIFEST["vectors"]}
    assert found >= set(REASONS) - {"key", "store"}
    assert {"accepted", "unchanged"} <= found


@pytest.mark.parametrize("vector", MANIFEST["vectors"], ids=lambda v: v["name"])
def test_python_verifier_meets_vector(vector: dict[str, Any]) -> None:
    """Same verdict, reason, policy, trust state and OkHttp pins as the committed expectation."""
    assert evaluate(vector) == vector["expect"], vector["about"]


@pytest.mark.parametrize("case", MANIFEST["canonical"], ids=lambda c: c["name"])
def test_python_canonical_form_meets_vector(case: dict[str, Any]) -> None:
    """Strict parsing and the RFC 8785 form give the committed text or reason."""
    assert canonical_result((VECTORS / case["input"]).read_bytes()) == case["expect"]
