"""Benchmark start-up: ``tlspin --help`` and the core's import, against a bare interpreter.

Run with ``./scripts/bench startup`` (or ``python bench/bench_startup.py``). Each round runs every
command once, in turn (the order reversed every other round), as a real process (``tlspin`` is
the installed console script), so load on the machine hits all of them alike. The table gives
the median and best wall time over the rounds, the ratio to bare ``python -c pass`` (the
baseline, measured in the same rounds) and the milliseconds added to it, and the median CPU
time (user + system), which a busy machine disturbs less than wall time.

Rows: the baseline; ``import tlspin`` (lazy: loads no submodule); loading a two-rule TOML policy
by its path (the core: pins, hosts, policy, verify, policyfile); ``import click``, the floor of
any click command line and what ``tlspin``, ``tlspin -h`` and ``tlspin --help`` skip (their help
is printed from a copy, see ``tlspin._entry``); and ``tlspin lint --help``, click plus one
command's module. The target for the group's help is 60 ms (``TLSPIN_BENCH_RUNS`` sets the
number of rounds).
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROUNDS = int(os.environ.get("TLSPIN_BENCH_RUNS", "31"))
TARGET_MS = 60.0
BASELINE = "python -c pass (baseline)"
HELP_ROWS = ("tlspin", "tlspin -h", "tlspin --help")


def run(cmd: list[str], ok: int) -> tuple[float, float]:
    """Wall and CPU time of one run of *cmd*, in seconds; exits if its status is not *ok*."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != ok:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def main() -> None:
    """Print the table."""
    tlspin = shutil.which("tlspin", path=str(Path(sys.executable).parent)) or shutil.which("tlspin")
    if tlspin is None:
        raise SystemExit("the tlspin console script is not installed in this environment")
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="tlspin-bench-") as tmp:
        policy = Path(tmp, "pins.toml")
        pins = ", ".join(f'"sha256/{c * 43}="' for c in "AB")
        policy.write_text(f'[[rule]]\nhosts = ["api.example.com"]\npins = [{pins}]\n')
        load = f"import tlspin; tlspin.PinPolicy.load({str(policy)!r})"
        # name -> (command, expected exit status)
        commands = {
            BASELINE: ([python, "-c", "pass"], 0),
            "python -c 'import tlspin'": ([python, "-c", "import tlspin"], 0),
            "python -c '… PinPolicy.load(…)'": ([python, "-c", load], 0),
            "python -c 'import click'": ([python, "-c", "import click"], 0),
            "tlspin": ([tlspin], 2),  # no command: a usage error that prints the help
            "tlspin -h": ([tlspin, "-h"], 0),
            "tlspin --help": ([tlspin, "--help"], 0),
            "tlspin lint --help": ([tlspin, "lint", "--help"], 0),
        }
        # The group's help is printed as is only on a wide terminal (or none): pipes here.
        os.environ.pop("COLUMNS", None)
        times: dict[str, list[float]] = {name: [] for name in commands}
        cpus: dict[str, list[float]] = {name: [] for name in commands}
        for cmd, ok in commands.values():  # warm the page cache
            run(cmd, ok)
        items = list(commands.items())
        for i in range(ROUNDS):
            for name, (cmd, ok) in items if i % 2 == 0 else reversed(items):
                wall, cpu = run(cmd, ok)
                times[name].append(wall)
                cpus[name].append(cpu)
    load_avg = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    base = statistics.median(times[BASELINE])
    base_cpu = statistics.median(cpus[BASELINE])
    print(f"Python {sys.version.split()[0]}: start-up, {ROUNDS} interleaved rounds{load_avg}")
    print(
        f"{'command':34} {'best ms':>8} {'median ms':>10} {'x baseline':>11} {'added ms':>9} "
        f"{'cpu ms':>7} {'cpu added':>10}"
    )
    for name, samples in times.items():
        median = statistics.median(samples)
        cpu = statistics.median(cpus[name])
        print(
            f"{name:34} {1000 * min(samples):8.1f} {1000 * median:10.1f} "
            f"{median / base:11.2f} {1000 * (median - base):+9.1f} "
            f"{1000 * cpu:7.1f} {1000 * (cpu - base_cpu):+10.1f}"
        )
    for name in HELP_ROWS:
        helped = 1000 * statistics.median(times[name])
        verdict = "within" if helped <= TARGET_MS else "OVER"
        print(
            f"{name}: median {helped:.1f} ms ({helped - 1000 * base:+.1f} ms on the baseline), "
            f"{verdict} the {TARGET_MS:.0f} ms target"
        )


if __name__ == "__main__":
    main()
