"""Benchmark interpreter start under tlspin's start-up hook (``tlspin run``, TLSPIN_POLICY).

Run with ``./scripts/bench run`` (or ``python bench/bench_run.py``). Each row starts the venv's
Python many times (``TLSPIN_BENCH_RUNS``, default 25), interleaved with two baselines measured in
the same rounds: the same command with no hook, and a bare ``python -c pass``. It reports
median wall and CPU times, the median of the paired differences with the unhooked command
(what the hook adds: tlspin's own cost) and the median added to ``python -c pass``:

* ``-c pass`` and ``-c "import ssl"`` with the environment ``tlspin run`` sets (policy
  validated by the parent: the child pins at its first ``import ssl``);
* the same without ``TLSPIN_POLICY_SHA256`` (the bare environment form: the child validates
  the policy at start, before any of the program's code);
* ``TLSPIN_POLICY`` alone, no ``PYTHONPATH`` (``tlspin-startup.pth`` pins; ``-I`` too);
* the whole ``tlspin run --policy P -- python -c pass``, the tlspin command included.

Then the audit hook a pinned interpreter keeps for its whole life (ns per audited event, e.g.
each ``sys._getframe()`` of logging or each ``open()``), and the cost of
``tlspin-startup.pth`` in every interpreter of the environment when
``TLSPIN_POLICY`` is unset: ``site.addpackage`` on it against an empty ``.pth`` (µs, best of 5).

Target: no more than 40 ms added to ``python -c pass`` under the hook; about 0 for the ``.pth``
when the variable is unset.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tlspin import _run
from tlspin.testing.pki import CA

RUNS = int(os.environ.get("TLSPIN_BENCH_RUNS", "25"))


def _time(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall ms, CPU ms) of one run; CPU time (user + system, the process and what it execs)
    hardly depends on what else the machine is doing, wall time does."""
    start = time.perf_counter_ns()
    process = subprocess.Popen(command, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    wall = (time.perf_counter_ns() - start) / 1e6
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command)
    return wall, (usage.ru_utime + usage.ru_stime) * 1000


def compare(
    bare: tuple[list[str], dict[str, str]],
    base: tuple[list[str], dict[str, str]],
    other: tuple[list[str], dict[str, str]],
    runs: int,
) -> dict[str, float]:
    """Medians of wall and CPU ms for *base* and *other* (the hooked command), of their paired
    differences, and of *other*'s over *bare* (``python -c pass``), in interleaved rounds."""
    jobs = [bare, base, other]
    for command, env in jobs:  # warm-up: page cache, bytecode
        _time(command, env)
    samples: list[list[tuple[float, float]]] = [[], [], []]
    for i in range(runs):
        order = [0, 1, 2] if i % 2 == 0 else [2, 1, 0]
        for k in order:
            samples[k].append(_time(*jobs[k]))
    z, a, b = samples
    out: dict[str, float] = {}
    for k, kind in enumerate(("wall", "cpu")):
        out[f"{kind} base"] = statistics.median(x[k] for x in a)
        out[f"{kind} hooked"] = statistics.median(y[k] for y in b)
        out[f"{kind} added"] = statistics.median(y[k] - x[k] for x, y in zip(a, b, strict=True))
        out[f"{kind} over bare"] = statistics.median(
            y[k] - x[k] for x, y in zip(z, b, strict=True)
        )
    return out


def main() -> int:
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs{load}, {RUNS} runs per row")
    plain_env = {k: v for k, v in os.environ.items() if not k.startswith(("TLSPIN_", "PYTHON"))}
    with tempfile.TemporaryDirectory(prefix="tlspin-bench-") as tmp:
        policy = Path(tmp, "pins.toml")
        policy.write_text(
            '[[rule]]\nhosts = ["api.example.com"]\n'
            f'pins = ["{CA.root("a").pin}", "{CA.root("b").pin}"]\n'
        )
        path, raw, _ = _run.read_policy(policy)
        hooked = _run.environment(path, raw, plain_env)
        bare = {k: v for k, v in hooked.items() if k != _run.ENV_DIGEST}
        python = sys.executable
        rows = [
            ("-c pass, tlspin run env", [python, "-c", "pass"], hooked),
            ('-c "import ssl", tlspin run env', [python, "-c", "import ssl"], hooked),
            ("-c pass, TLSPIN_POLICY only", [python, "-c", "pass"], bare),
            ('-c "import ssl", TLSPIN_POLICY only', [python, "-c", "import ssl"], bare),
            (
                '-I -c "import ssl", TLSPIN_POLICY alone',
                [python, "-I", "-c", "import ssl"],
                {**plain_env, _run.ENV_POLICY: str(path)},
            ),
        ]
        print(
            "\n'plain': the same command without the hook; 'added': hooked minus plain (tlspin's"
            " cost); 'on bare': hooked minus `python -c pass`, measured in the same rounds"
        )
        print(
            f"{'command':<40} {'wall: plain':>11} {'hooked':>9} {'added':>9} {'on bare':>9}"
            f" {'CPU: plain':>11} {'hooked':>9} {'added':>9} {'on bare':>9}"
        )
        whole = [python, "-m", "tlspin", "run", "--policy", str(policy), "--", python, "-c", "pass"]
        rows.append(("tlspin run -- python -c pass", whole, plain_env))
        bare_pass = ([python, "-c", "pass"], plain_env)
        for name, command, env in rows:
            base_cmd = [python, "-c", "pass"] if command is whole else command
            got = compare(bare_pass, (base_cmd, plain_env), (command, env), RUNS)
            cells = [
                f"{got[f'{kind} base']:>8.1f} ms {got[f'{kind} hooked']:>6.1f} ms"
                f" {got[f'{kind} added']:>+6.1f} ms {got[f'{kind} over bare']:>+6.1f} ms"
                for kind in ("wall", "cpu")
            ]
            print(f"{name:<40} {cells[0]}  {cells[1]}")
        print("target: ≤ 40 ms added to `python -c pass` under the hook (first row)")
        print(
            "\naudit hook of a pinned interpreter (tlspin run env; an audit hook stays for the life"
            f" of the process): best of 5 runs in each child, medians of {AUDIT_ROUNDS} "
            "interleaved children"
        )
        states = (("ssl", "after import ssl (pinned)"), ("none", "no import ssl (waiting)"))
        for state, label in states:
            plain, with_hook = audit_cost(python, state, plain_env, hooked)
            for k, what in enumerate(_AUDIT_OPS):
                print(
                    f"  {label:<27} {what:<40} plain {plain[k]:7.3f} µs  hooked"
                    f" {with_hook[k]:7.3f} µs  x{with_hook[k] / plain[k]:.2f}"
                )
        ours, empty = pth_cost(Path(tmp))
        print(
            f"\ntlspin-startup.pth, TLSPIN_POLICY unset: {ours:.1f} µs per interpreter start "
            f"(an empty .pth: {empty:.1f} µs; added {ours - empty:+.1f} µs)"
        )
    return 0


AUDIT_ROUNDS = 5
_AUDIT_OPS = ("sys._getframe() (one audited event)", "logger.info() writing a record",
              "open() + close() of /dev/null")
_AUDIT_CHILD = """
import logging, os, sys, timeit
if sys.argv[1] == "ssl":
    import ssl
handler = logging.StreamHandler(open(os.devnull, "w"))
log = logging.getLogger("bench")
log.addHandler(handler)
log.setLevel(logging.INFO)
log.propagate = False
def best(fn, n):
    return min(timeit.Timer(fn).repeat(5, n)) / n * 1e6
print(best(sys._getframe, 200_000), best(lambda: log.info("hello %s", 1), 20_000),
      best(lambda: open(os.devnull, "rb").close(), 20_000))
"""


def audit_cost(
    python: str, state: str, plain_env: dict[str, str], hooked: dict[str, str]
) -> tuple[list[float], list[float]]:
    """µs per operation of `_AUDIT_OPS` without and with tlspin's start-up audit hook, medians
    over interleaved child interpreters."""
    samples: tuple[list[list[float]], list[list[float]]] = ([], [])
    for i in range(AUDIT_ROUNDS):
        for k in ((0, 1) if i % 2 == 0 else (1, 0)):
            env = plain_env if k == 0 else hooked
            out = subprocess.run([python, "-c", _AUDIT_CHILD, state], env=env, check=True,
                                 capture_output=True, text=True).stdout
            samples[k].append([float(x) for x in out.split()])
    return (
        [statistics.median(run[j] for run in samples[0]) for j in range(len(_AUDIT_OPS))],
        [statistics.median(run[j] for run in samples[1]) for j in range(len(_AUDIT_OPS))],
    )


def pth_cost(tmp: Path) -> tuple[float, float]:
    """µs for site to process tlspin-startup.pth, and an empty .pth, with TLSPIN_POLICY unset."""
    import site
    import timeit

    source = Path(_run.__file__).resolve().parents[2] / "tlspin-startup.pth"
    sitedir = tmp / "site"
    sitedir.mkdir()
    (sitedir / "tlspin-startup.pth").write_bytes(source.read_bytes())
    (sitedir / "empty.pth").write_bytes(b"")
    saved = os.environ.pop("TLSPIN_POLICY", None)
    try:
        out = []
        for name in ("tlspin-startup.pth", "empty.pth"):
            timer = timeit.Timer(lambda n=name: site.addpackage(str(sitedir), n, set()))
            out.append(min(timer.repeat(5, 2000)) / 2000 * 1e6)
    finally:
        if saved is not None:
            os.environ["TLSPIN_POLICY"] = saved
    return out[0], out[1]


if __name__ == "__main__":
    sys.exit(main())
