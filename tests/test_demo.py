"""`tlspin demo --once`: the story runs, verifies its own claims, and fails when they are false."""

from __future__ import annotations

import io
import re
import subprocess
import sys

from rich.console import Console

from tlspin.demo import run_demo


def test_demo_once_tells_the_whole_story() -> None:
    """The demo runs all five steps on loopback, every check passes, and it exits 0."""
    proc = subprocess.run(
        [sys.executable, "-m", "tlspin", "demo", "--once"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for number in range(1, 6):
        assert f"Step {number} · " in out
    assert "Certificate pinning failure!" in out
    assert "✓ the attacker read no request, and the API received 0 bytes" in out
    assert "✓ the collector stored the violation report" in out
    assert "✓ the collector stored a report-only report" in out
    assert "✓ the app pinned to leaf + backup still gets 200 OK" in out
    assert re.search(r"dashboard +http://127\.0\.0\.1:\d+/dashboard", out)
    assert re.search(r"All \d+ checks passed\.", out)
    assert "FAILED" not in out
    assert proc.stderr == "", "nothing but the story is printed"


def test_demo_fails_when_its_claims_are_false() -> None:
    """Twin: with the app's pins removed, the demo's own checks catch it and it returns 1."""
    buffer = io.StringIO()
    status = run_demo(
        once=True, console=Console(file=buffer, width=200), sabotage=frozenset({"no-pins"})
    )
    out = buffer.getvalue()
    assert status == 1
    assert "✗ FAILED: the pinned request was refused with a pinning failure" in out
    assert "✗ FAILED: the attacker read no request, and the API received 0 bytes" in out
    assert re.search(r"\d+ of \d+ checks failed\.", out)
