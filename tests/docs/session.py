"""Run one document's blocks in order, in a sandbox, as a reader would (see test_doc_blocks.py).

A `DocSession` owns a session directory (the blocks' working directory, seeded by
`World.write_files`), the loopback servers behind the docs' names, the sandbox environment,
the document's Python session, and the long-running commands a block started.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from docs.blocks import ROOT, Block, Command
from docs.servers import DocServers
from docs.world import NAMES, World

HOOK = Path(__file__).with_name("hook")
PYSESSION = Path(__file__).with_name("pysession.py")
COMMAND_TIMEOUT = 180.0  # a safety net against a hung command, never a performance check
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
# Ports the docs name, served by the harness (443/8443) or remapped for a block's own server.
HARNESS_PORTS = (443, 8443)
BLOCK_SERVER_PORTS = (8787,)
# Commands that serve until stopped: started in the background, ready when their output shows
# the pattern here and what the doc shows under them; stopped with SIGINT when the block ends or
# the next long-running command starts.
LONG_RUNNING = (
    # uvicorn's line: the collector prints its URLs before it listens.
    (re.compile(r"^tlspin serve\b"), re.compile(r"Application startup complete")),
    (re.compile(r"^tlspin monitor\b.*--interval"), re.compile(r"green \d+, amber \d+, red \d+")),
    (re.compile(r"^(?:tlspin |\./scripts/)demo\b(?!.*--once)"), re.compile(r"press Ctrl-C")),
)
_OK_STOP = (0, 130, -signal.SIGINT)
# Plugins of this venv that a reader's pytest would not have; they cost seconds.
_PYTEST_ARGS = ("-q", "-p", "no:cacheprovider", "-p", "no:schemathesis", "-p",
                "no:hypothesispytest", "-p", "no:anyio")
# Commands run as if typed at a terminal: SIGINT and SIGQUIT back at their defaults (pytest may
# run with them ignored, as scripts/test starts it in the background, and an ignored signal
# stays ignored in every child; bash cannot undo it), then bash.
_LAUNCH = (
    "import os, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
    "signal.signal(signal.SIGQUIT, signal.SIG_DFL)\n"
    "os.execvp('bash', ['bash', '-o', 'pipefail', '-c', sys.argv[1]])\n"
)


def shell(command: str) -> list[str]:
    """The argv that runs *command* like a terminal would."""
    return [sys.executable, "-S", "-c", _LAUNCH, command]


@dataclass(frozen=True)
class Result:
    """What one block did: ok, and the story of its run (commands, output, errors)."""

    ok: bool
    log: str


def free_port() -> int:
    """A port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _normal(line: str) -> str:
    return " ".join(line.split())


def unmatched(expected: tuple[str, ...], output: str) -> str | None:
    """The first expected line not found in *output* (in order), or None when all are.

    Each expected line must equal a later output line, whitespace runs aside, where ``…`` in
    the expected line stands for any text.
    """
    lines = [_normal(line) for line in output.splitlines()]
    position = 0
    for want in expected:
        parts = _normal(want).split("…")
        pattern = re.compile(".*?".join(re.escape(p) for p in parts))
        while position < len(lines) and not pattern.fullmatch(lines[position]):
            position += 1
        if position == len(lines):
            return want
        position += 1
    return None


class _Background:
    """A long-running command of a block."""

    def __init__(self, command: Command, out: Path, env: dict[str, str], cwd: Path) -> None:
        self.command = command
        self.out = out
        self.file = out.open("wb")
        self.proc = subprocess.Popen(
            shell(command.text), cwd=cwd, env=env,
            stdin=subprocess.DEVNULL, stdout=self.file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.out.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, ready: re.Pattern[str]) -> str | None:
        """None once the expected output (or *ready*) shows, else why it never did."""
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            text = self.output()
            if ready.search(text) and unmatched(self.command.expected, text) is None:
                return None
            if self.proc.poll() is not None:
                return f"exited with status {self.proc.returncode} before it was ready"
            if time.monotonic() > deadline:
                missing = ready.pattern if not ready.search(text) else \
                    unmatched(self.command.expected, text)
                return f"not ready after {READY_TIMEOUT:.0f} s (waiting for {missing!r})"
            time.sleep(0.1)

    def stop(self) -> str | None:
        """Stop it like Ctrl-C; None when it exits cleanly, else what went wrong."""
        problem = None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                problem = f"did not stop within {STOP_TIMEOUT:.0f} s of SIGINT"
        if problem is None and self.proc.returncode not in _OK_STOP:
            problem = f"exited with status {self.proc.returncode} when stopped"
        self.file.close()
        return problem


class _PySession:
    """The document's Python process (pysession.py)."""

    def __init__(self, env: dict[str, str], cwd: Path, out: Path) -> None:
        self.out = out
        self.file = out.open("wb")
        read, write = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, str(PYSESSION), str(write)], cwd=cwd, env=env,
            stdin=subprocess.PIPE, stdout=self.file, stderr=subprocess.STDOUT, pass_fds=[write],
        )
        os.close(write)
        self.results: IO[str] = os.fdopen(read, encoding="utf-8")

    def run(self, block: Block) -> tuple[bool, str]:
        start = self.out.stat().st_size
        assert self.proc.stdin is not None
        request = {"file": str(ROOT / block.doc), "line": block.line, "code": block.text}
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return False, "the document's Python session is gone (an earlier block ended it)"
        ready, _, _ = select.select([self.results], [], [], COMMAND_TIMEOUT)
        line = self.results.readline() if ready else ""
        output = self.out.read_bytes()[start:].decode("utf-8", "replace")
        if not line:
            self.proc.kill()
            return False, f"no answer within {COMMAND_TIMEOUT:.0f} s\n{output}"
        answer = json.loads(line)
        log = output + (answer["error"] or "") + "".join(f"{p}\n" for p in answer["problems"])
        return answer["error"] is None and not answer["problems"], log

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.results.close()
        self.file.close()


class DocSession:
    """Runs the blocks of one document, in order, each at most once."""

    def __init__(self, doc: str, blocks: list[Block], root: Path, world: World) -> None:
        slug = re.sub(r"\W+", "-", doc)
        self.doc = doc
        self.dir = root / slug
        self.home = root / f"{slug}-home"
        for path in (self.dir, self.home):
            path.mkdir(parents=True)
        world.write_files(self.dir)
        self.servers = DocServers(world, self.dir)
        self.steps = [b for b in blocks if b.action not in ("show", "illustrative")]
        self.results: dict[int, Result] = {}
        self._done = 0
        self._python: _PySession | None = None
        self._background: list[_Background] = []
        self._outputs = 0
        self.env = self._environment(root / f"{slug}-ca.pem", world)

    # -- environment ------------------------------------------------------------------------
    def _environment(self, cafile: Path, world: World) -> dict[str, str]:
        cafile.write_bytes(world.root.cert_pem)
        ports4 = dict.fromkeys(HARNESS_PORTS, self.servers.port4)
        ports4.update({p: free_port() for p in BLOCK_SERVER_PORTS})
        ports6 = dict.fromkeys(HARNESS_PORTS, self.servers.port6)
        env = {
            "PATH": os.pathsep.join((str(Path(sys.executable).parent), os.environ["PATH"])),
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
            "PYTHONPATH": str(HOOK),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "COLUMNS": "200",  # rich wraps at 80 columns without a terminal
            "TERM": "dumb",
            "NO_COLOR": "1",
            "SSL_CERT_FILE": str(cafile),
            "CURL_HOME": str(self.home),
            "TLSPIN_DOCS_NET": json.dumps({"names": [*NAMES, "db"], "ports4": ports4,
                                           "ports6": ports6}),
        }
        curlrc = [f'cacert = "{cafile}"']
        for host in (*NAMES, "127.0.0.1", "localhost"):
            curlrc += [f"connect-to = {host}:{p}:127.0.0.1:{to}" for p, to in ports4.items()]
        (self.home / ".curlrc").write_text("\n".join(curlrc) + "\n", encoding="utf-8")
        # libpq resolves host names itself, past the hook: with PGHOSTADDR it resolves none,
        # and 'db' in the docs' URLs is the suite's PostgreSQL (or a closed port without one).
        parts = urllib.parse.urlsplit(os.environ.get("TLSPIN_TEST_PG_URL") or "postgresql://_@127.0.0.1:1/")
        env.update({"PGHOSTADDR": parts.hostname or "127.0.0.1", "PGPORT": str(parts.port or 5432),
                    "PGCONNECT_TIMEOUT": "10"})
        return env

    def _prepare_postgres(self, block: Block) -> None:
        """Create the roles and databases the block's postgresql://USER@db/NAME URLs name."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(os.environ["TLSPIN_TEST_PG_URL"], autocommit=True) as conn:
            for user, name in set(re.findall(r"postgresql://(\w+)@db/(\w+)", block.text)):
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,))
                if exists.fetchone() is None:
                    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(user)))
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)))
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(user)))

    # -- running ----------------------------------------------------------------------------
    def run_through(self, block: Block) -> Result:
        """Run every step of the document up to *block* (once each) and return its result."""
        index = next(i for i, step in enumerate(self.steps) if step.line == block.line)
        while self._done <= index:
            step = self.steps[self._done]
            self._done += 1
            try:
                self.results[step.line] = self._run(step)
            except Exception as exc:
                self.results[step.line] = Result(False, f"harness error: {exc!r}")
        result = self.results[block.line]
        failed = [s.id for s in self.steps[:index] if not self.results[s.line].ok]
        if not result.ok and failed:
            result = Result(False, f"{result.log}\n(earlier blocks of {self.doc} failed too: "
                                   f"{', '.join(failed)}; they may be the cause)")
        return result

    def _run(self, block: Block) -> Result:
        if "postgresql://" in block.text:
            if not os.environ.get("TLSPIN_TEST_PG_URL"):
                # Its own test skips (or fails under CI); later blocks run without it.
                return Result(False, "not run: TLSPIN_TEST_PG_URL is not set")
            self._prepare_postgres(block)
        if block.action == "file":
            (self.dir / block.markers["file"]).write_text(block.text, encoding="utf-8")
            return Result(True, f"wrote {block.markers['file']}")
        if block.action == "policy":
            return self._policy(block)
        if block.action == "pytest":
            return self._pytest(block)
        if block.action == "python":
            if self._python is None:
                self._python = _PySession(self.env, self.dir, self._output_file("python"))
            ok, log = self._python.run(block)
            return Result(ok, log)
        return self._shell(block)

    def _output_file(self, what: str) -> Path:
        self._outputs += 1
        return self.home.parent / f"{self.home.name}-{self._outputs}-{what}.out"

    def _policy(self, block: Block) -> Result:
        from tlspin.policy import PinPolicy

        path = self.home / f"block-{block.line}.toml"
        path.write_text(block.text, encoding="utf-8")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                policy = PinPolicy.load(path)
            except ValueError as exc:  # PolicyError: the message names the line and the key
                return Result(False, f"PinPolicy.load refused the policy: {exc}")
        if caught:
            return Result(False, "".join(f"PinPolicy.load warned: {w.category.__name__}: "
                                         f"{w.message}\n" for w in caught))
        return Result(True, f"loaded {len(policy.rules)} rule(s)")

    def _pytest(self, block: Block) -> Result:
        path = self.dir / f"test_doc_block_{block.line}.py"
        path.write_text(block.text, encoding="utf-8")
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", *_PYTEST_ARGS, path.name], cwd=self.dir,
            env=self.env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=COMMAND_TIMEOUT, check=False,
        )
        return Result(proc.returncode == 0, f"$ pytest {path.name}\n{proc.stdout}{proc.stderr}")

    def _shell(self, block: Block) -> Result:
        log: list[str] = []
        ok = True
        started: list[_Background] = []
        for command in block.commands():
            began = time.monotonic()
            log.append(f"$ {command.text}   # {self.doc}:{command.line}")
            ready = next((r for pattern, r in LONG_RUNNING if pattern.search(command.text)), None)
            if ready is not None:
                for background in started:
                    ok = self._stop(background, log) and ok
                started = []
                background = _Background(command, self._output_file("bg"), self.env, self.dir)
                started.append(background)
                problem = background.wait_ready(ready)
                log.append(f"{background.output()}(ready after {time.monotonic() - began:.1f} s)")
                if problem is not None:
                    log.append(f"FAILED: the long-running command {problem}")
                    ok = False
                    break
                continue
            try:
                proc = subprocess.run(
                    shell(command.text), cwd=self.dir, env=self.env,
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    timeout=COMMAND_TIMEOUT, check=False,
                )
            except subprocess.TimeoutExpired as exc:
                log.append(f"{exc.output or b''!r}\nFAILED: still running after "
                           f"{COMMAND_TIMEOUT:.0f} s")
                ok = False
                break
            output = proc.stdout.decode("utf-8", "replace")
            log.append(f"{output}({time.monotonic() - began:.1f} s)")
            if proc.returncode != 0:
                log.append(f"FAILED: exit status {proc.returncode}")
                ok = False
                break
            missing = unmatched(command.expected, output)
            if missing is not None:
                log.append(f"FAILED: the output has no line matching the doc's {missing!r}")
                ok = False
                break
        for background in started:
            ok = self._stop(background, log) and ok
        return Result(ok, "\n".join(log))

    def _stop(self, background: _Background, log: list[str]) -> bool:
        began = time.monotonic()
        problem = background.stop()
        log.append(f"(stopped in {time.monotonic() - began:.1f} s: "
                   f"{background.command.text.splitlines()[0]})")
        if problem is None:
            return True
        log.append(f"{background.output()}\nFAILED: the long-running command {problem}")
        return False

    def close(self) -> None:
        """Stop everything the session started."""
        if self._python is not None:
            self._python.close()
        self.servers.close()
