"""Benchmark start-up: ``tlspin --help`` against a bare interpreter, measured in the same run.

Run with ``./scripts/bench startup`` (or ``python bench/bench_startup.py``). Each round runs every
command once, in turn, as a real process (``tlspin`` is the installed console script), so load on
the machine hits all of them alike; the table gives the median and best wall time over the
rounds, the ratio to bare ``python -c pass`` and the milliseconds added to it, and the median CPU
time (user + system), which a busy machine disturbs less than wall time. ``import click`` is the
floor for any click command line. The target for ``tlspin --help`` is 60 ms, against about 10 ms
for a bare interpreter on an idle machine.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROUNDS = int(os.environ.get("TLSPIN_BENCH_RUNS", "21"))
TARGET_MS = 60.0


def run(cmd: list[str]) -> tuple[float, float]:
    """Wall and CPU time of one run of *cmd*, in seconds; exits if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def main() -> None:
    """Print the table."""
    tlspin = shutil.which("tlspin", path=str(Path(sys.executable).parent)) or shutil.which("tlspin")
    if tlspin is None:
        raise SystemExit("the tlspin console script is not installed in this environment")
    commands = {
        "python -c pass (baseline)": [sys.executable, "-c", "pass"],
        "python -c 'import tlspin'": [sys.executable, "-c", "import tlspin"],
        "python -c 'import click'": [sys.executable, "-c", "import click"],
        "tlspin --help": [tlspin, "--help"],
        "tlspin lint --help": [tlspin, "lint", "--help"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    for cmd in commands.values():  # warm the page cache
        run(cmd)
    for _ in range(ROUNDS):
        for name, cmd in commands.items():
            wall, cpu = run(cmd)
            times[name].append(wall)
            cpus[name].append(cpu)
    base = statistics.median(times["python -c pass (baseline)"])
    print(f"start-up, {ROUNDS} interleaved rounds")
    print(
        f"{'command':30} {'best ms':>8} {'median ms':>10} {'x baseline':>11} {'added ms':>9} "
        f"{'cpu ms':>7}"
    )
    for name, samples in times.items():
        median = statistics.median(samples)
        print(
            f"{name:30} {1000 * min(samples):8.1f} {1000 * median:10.1f} "
            f"{median / base:11.1f} {1000 * (median - base):9.1f} "
            f"{1000 * statistics.median(cpus[name]):7.1f}"
        )
    helped = 1000 * statistics.median(times["tlspin --help"])
    verdict = "within" if helped <= TARGET_MS else "OVER"
    print(f"tlspin --help: median {helped:.1f} ms, {verdict} the {TARGET_MS:.0f} ms target")


if __name__ == "__main__":
    main()
