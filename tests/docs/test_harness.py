"""The doc-block harness itself: each way a block can fail is caught, and the legitimate run of
the same block passes (the failure twins of test_doc_blocks.py)."""

from __future__ import annotations

import errno
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from docs.blocks import parse
from docs.session import DocSession, Result, unmatched
from docs.world import World

Run = Callable[[str], list[Result]]


@pytest.fixture(scope="module")
def world() -> World:
    """The certificates and files of this run."""
    return World.build()


@pytest.fixture
def run(world: World, tmp_path: Path) -> Iterator[Run]:
    """Run a made-up document through a fresh session; return each runnable block's result."""
    sessions: list[DocSession] = []

    def go(text: str) -> list[Result]:
        blocks = [b for b in parse("made-up.md", text) if b.action not in ("show", "illustrative")]
        session = DocSession("made-up.md", blocks, tmp_path / f"s{len(sessions)}", world)
        sessions.append(session)
        return [session.run_through(b) for b in blocks]

    yield go
    for session in sessions:
        session.close()


BUNDLE = """```console
tlspin keygen --out signing.key
tlspin bundle sign pins.toml --key signing.key --version 7 --expires 30d -o bundle.json
tlspin bundle verify bundle.json --trusted-key {pub}
```
"""


def test_the_old_readme_bundle_commands_fail(run: Run) -> None:
    """Regression: the README verified with signing.key.pub, a file keygen never writes."""
    [result] = run(BUNDLE.format(pub="signing.key.pub"))
    assert not result.ok
    assert "FAILED: exit status 2" in result.log
    assert "signing.key.pub" in result.log


def test_the_fixed_bundle_commands_run(run: Run) -> None:
    """Twin: with signing.pub, the file keygen writes, the same commands pass."""
    [result] = run(BUNDLE.format(pub="signing.pub"))
    assert result.ok, result.log
    assert "OK: bundle version 7" in result.log


def test_shown_output_must_appear(run: Run) -> None:
    """Output lines under a prompted command must be printed, in order; … matches any text."""
    good, bad = run(
        "```console\n$ echo 'hello   brave new world'; echo second\nhello … world\nsecond\n```\n\n"
        "```console\n$ echo hello\ngoodbye\n```\n"
    )
    assert good.ok, good.log
    assert not bad.ok
    assert "the output has no line matching the doc's 'goodbye'" in bad.log


def test_unmatched_keeps_order() -> None:
    """Expected lines match in order, each at most once."""
    assert unmatched(("a", "b"), "a\nb\n") is None
    assert unmatched(("b", "a"), "a\nb\n") == "a"
    assert unmatched(("x…z",), "xyz\n") is None
    assert unmatched(("x…z",), "xyz!\n") == "x…z"


def test_a_failing_command_fails_its_block(run: Run) -> None:
    """Every command must exit 0; a pipeline fails when any part does (pipefail)."""
    ok, failing, piped = run("```console\ntrue\n```\n\n```console\nfalse\n```\n\n"
                             "```console\nfalse | cat\n```\n")
    assert ok.ok
    assert not failing.ok
    assert "FAILED: exit status 1" in failing.log
    assert not piped.ok


def test_python_blocks_share_a_namespace_and_fail_on_errors(run: Run) -> None:
    """Python blocks run in order in one interpreter; an exception, a warning or a WARNING log
    record in the block's thread fails the block, and the traceback names the doc's line."""
    define, use, raises, warns, logs = run(
        "```python\nanswer = 41\n```\n\n"
        "```python\nassert answer + 1 == 42\n```\n\n"
        "```python\nx = 1\nraise RuntimeError('boom')\n```\n\n"
        "```python\nimport warnings\nwarnings.warn('careful')\n```\n\n"
        "```python\nimport logging\nlogging.getLogger('tlspin').warning('odd')\n```\n"
    )
    assert define.ok, define.log
    assert use.ok, use.log
    assert not raises.ok
    assert 'made-up.md", line 11' in raises.log
    assert "RuntimeError: boom" in raises.log
    assert not warns.ok
    assert "warning UserWarning: careful" in warns.log
    assert not logs.ok
    assert "log WARNING tlspin: odd" in logs.log


def test_policy_blocks_load(run: Run) -> None:
    """A toml block loads as a policy; a bad one, or one that warns, fails with the message."""
    leaf, backup = (f'"sha256/{p}="' for p in ("fo4mCxrz/tUER2CMAWrsDksFJ0eQiqOIcJzjIbnurj4",
                                                "n6bLfit52nvPTJVpBYQHtbj4KLp/8SB+cnkZ0YICcs8"))
    good, bad, single = run(
        f'```toml\n[[rule]]\nhosts = ["api.example.com"]\npins = [{leaf}, {backup}]\n```\n\n'
        '```toml\n[[rule]]\nhosts = ["api.example.com"]\npins = ["sha256/…"]\n```\n\n'
        f'```toml\n[[rule]]\nhosts = ["api.example.com"]\npins = [{leaf}]\n```\n'
    )
    assert good.ok, good.log
    assert not bad.ok
    assert "PinPolicy.load refused the policy" in bad.log
    assert not single.ok
    assert "PinPolicy.load warned: SinglePinWarning" in single.log


def test_pytest_blocks_must_pass(run: Run) -> None:
    """A block defining a test runs under pytest; a failing test fails the block."""
    passing, failing = run("```python\ndef test_fine():\n    assert True\n```\n\n"
                           "```python\ndef test_wrong():\n    assert 1 == 2\n```\n")
    assert passing.ok, passing.log
    assert not failing.ok
    assert "1 failed" in failing.log


def test_file_blocks_feed_later_blocks(run: Run) -> None:
    """A block marked as a file is written to the session directory for later commands."""
    written, read = run("<!-- file: note.txt -->\n```text\nfrom the doc\n```\n\n"
                        "```console\n$ cat note.txt\nfrom the doc\n```\n")
    assert written.ok
    assert read.ok, read.log


def test_a_long_running_command_that_dies_fails(run: Run) -> None:
    """A server that exits before it is ready fails its block (and says so)."""
    [result] = run("```console\ntlspin serve --db sqlite:///nowhere/x.db\n```\n")
    assert not result.ok
    assert "before it was ready" in result.log


def test_a_long_running_command_serves_the_next_commands(run: Run) -> None:
    """Twin: a server that comes up serves the block's next command, then stops cleanly."""
    [result] = run("```console\ntlspin serve --db sqlite:///c.db\n"
                   "curl -sS http://127.0.0.1:8787/health\n```\n")
    assert result.ok, result.log
    assert "(stopped in" in result.log


def test_blocks_reach_only_the_harness(run: Run) -> None:
    """In a block, the docs' names reach the harness's server; other names do not resolve and
    other addresses are refused, before any packet leaves."""
    [result] = run(
        "```python\nimport socket, urllib.request\n"
        "print(urllib.request.urlopen('https://api.example.com/').read().decode())\n"
        "for name in ('example.org', '0.0.0.1'):\n"
        "    try:\n"
        "        socket.create_connection((name, 443), timeout=5)\n"
        "    except OSError as exc:\n"
        "        print('refused:', exc)\n```\n"
    )
    assert result.ok, result.log
    assert "hello from api.example.com" in result.log
    assert "'example.org' is not one of the names the harness serves" in result.log
    assert "refusing to connect to 0.0.0.1 (loopback only)" in result.log


# --- the hook's logic, against a tripwire standing in for the kernel ---------------------------


@pytest.fixture
def hooked(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Install the sandbox hook in this process over tripwires; return what reached them."""
    import importlib.util

    reached: list[tuple[str, Any]] = []

    def real_getaddrinfo(host: Any, port: Any, *args: Any) -> Any:
        reached.append(("getaddrinfo", (host, port)))
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (host, port))]

    def real(name: str) -> Callable[..., Any]:
        def call(_sock: socket.socket, address: Any) -> int:
            reached.append((name, address))
            return 0
        return call

    monkeypatch.setattr(socket, "getaddrinfo", real_getaddrinfo)
    for name in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(socket.socket, name, real(name))
    config = {"names": ["api.example.com"], "ports4": {"443": 40443, "8787": 48787},
              "ports6": {"443": 40444}}
    monkeypatch.setenv("TLSPIN_DOCS_NET", json.dumps(config))
    spec = importlib.util.spec_from_file_location(
        "docs_sandbox_hook", Path(__file__).with_name("hook") / "sitecustomize.py")
    assert spec is not None
    assert spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    return reached


def test_hook_maps_names_and_ports(hooked: list[tuple[str, Any]]) -> None:
    """Doc names resolve to loopback; doc ports and documentation addresses go to the harness."""
    socket.getaddrinfo("API.example.com.", 443)
    with socket.socket() as sock:
        sock.connect(("127.0.0.1", 443))
        sock.connect(("192.0.2.10", 443))
        sock.connect(("127.0.0.1", 5000))
        sock.bind(("0.0.0.0", 8787))
    with socket.socket(socket.AF_INET6) as sock6:
        sock6.connect(("2001:db8::10", 443, 0, 0))
    assert hooked == [
        ("getaddrinfo", ("127.0.0.1", 443)),
        ("connect", ("127.0.0.1", 40443)),
        ("connect", ("127.0.0.1", 40443)),
        ("connect", ("127.0.0.1", 5000)),
        ("bind", ("127.0.0.1", 48787)),
        ("connect", ("::1", 40444, 0, 0)),
    ]


def test_hook_refuses_other_names_and_addresses(hooked: list[tuple[str, Any]]) -> None:
    """Twin: any other name or address is refused before it reaches the kernel."""
    with pytest.raises(socket.gaierror, match="not one of the names the harness serves"):
        socket.getaddrinfo("example.org", 443)
    with socket.socket() as sock:
        with pytest.raises(OSError, match="loopback only") as refused:
            sock.connect(("10.1.2.3", 443))
        assert refused.value.errno == errno.ENETUNREACH
    assert hooked == []
