"""`tlspin demo`: the story runs, verifies its own claims, fails when they are false, and keeps its
collector token in a private file instead of printing it."""

from __future__ import annotations

import io
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from rich.console import Console

from tlspin.demo import run_demo

_SERVING = "press Ctrl-C to stop."


def _api_status(collector: str, token: str) -> int:
    request = urllib.request.Request(
        f"{collector}/api/incidents", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_demo_tells_the_whole_story_and_keeps_the_token_in_a_private_file() -> None:
    """The demo runs all five steps on loopback, every check passes, the login token is only in a
    0600 file (never in the output) that works until Ctrl-C, and then it exits 0."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tlspin", "demo"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    assert proc.stderr is not None
    stdout, stderr = proc.stdout, proc.stderr

    def read() -> None:
        for line in stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any(_SERVING in line for line in lines):
            assert proc.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.05)
        out = "".join(lines)
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

        collector = re.search(r"log in at +(http://127\.0\.0\.1:\d+)/login", out)
        where = re.search(r"token: in +(\S+) +\(mode 0600\)", out)
        assert collector, out
        assert where, out
        token_file = Path(where.group(1))
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
        token = token_file.read_text().strip()
        assert len(token) >= 32
        assert token not in out, "the token itself is never printed"
        assert _api_status(collector.group(1), token) == 200
        assert _api_status(collector.group(1), token[::-1]) == 401
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
        reader.join(10)
        err = stderr.read()
        stdout.close()
        stderr.close()
    assert code == 0, err
    assert err == "", "nothing but the story is printed"
    assert token not in "".join(lines)
    assert not token_file.exists(), "the token file goes away with the demo"


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
    where = re.search(r"token: in +(\S+) +\(mode 0600\)", out)
    assert where, out
    assert not Path(where.group(1)).exists(), "a --once run leaves no token file behind"


def test_demo_once_runs_the_story_and_exits_zero() -> None:
    """`tlspin demo --once` (what scripts use) runs all five steps, passes every check, points to
    the token file instead of printing the token, and exits 0."""
    done = subprocess.run(
        [sys.executable, "-m", "tlspin", "demo", "--once"],
        capture_output=True, text=True, timeout=180, check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    for step in range(1, 6):
        assert f"Step {step}" in out, out
    assert "Certificate pinning failure!" in out
    assert re.search(r"All \d+ checks passed", out), out
    where = re.search(r"token: in\s+(\S+)", out)
    assert where is not None, out
    assert not Path(where.group(1)).exists(), "a --once run leaves no token file behind"


def test_demo_stops_on_ctrl_c_even_when_started_with_sigint_ignored() -> None:
    """A demo started from a script's background job (SIGINT inherited as ignored) still stops
    cleanly on Ctrl-C and on SIGTERM, removing its token file."""
    for stop in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tlspin", "demo"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # noqa: PLW1509
        )
        assert proc.stdout is not None
        out = ""
        for line in proc.stdout:
            out += line
            if _SERVING in line:
                break
        where = re.search(r"token: in +(\S+)", out)
        assert where is not None, out
        proc.send_signal(stop)
        try:
            assert proc.wait(60) == 0
        finally:
            proc.kill()
            proc.stdout.close()
        assert not Path(where.group(1)).exists()
