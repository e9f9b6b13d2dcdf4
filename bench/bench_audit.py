"""Benchmark what ``tlspin audit`` adds to a program's run.

Run with ``./scripts/bench audit`` (or ``python bench/bench_audit.py``). The program is a small
Python script making N HTTPS requests with requests (a new connection each, so every request
pays a TLS handshake) to a loopback origin. Each round runs it twice, in alternating order:

* direct: ``python client.py`` trusting the origin's CA plus the usual CAs (the same number of
  CAs the audit's bundle holds, so both runs pay the same trust-store loading);
* audited: ``tlspin audit --upstream-cafile CA -- python client.py`` (forged TLS to the
  program, verified TLS from the proxy to the origin).

Reported (medians over the rounds): the wall time of the whole run (the audit's own start-up
included), the script's time for its request loop, and the ratios audited/direct.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tlspin.audit import write_trust_bundle
from tlspin.testing.pki import CA
from tlspin.testing.servers import TLSServer

CLIENT = """
import sys, time, requests
url, count = sys.argv[1], int(sys.argv[2])
start = time.perf_counter()
for _ in range(count):
    with requests.Session() as session:
        assert session.get(url, timeout=30).status_code == 200
print(time.perf_counter() - start)
"""


def run(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run *command*; return (wall seconds, the loop seconds the client printed).

    Under ``tlspin audit --json`` the client's stdout goes to stderr, so both are searched.
    """
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):  # audit exits 1: the client is (rightly) not pinned
        sys.exit(f"{command[:4]}... failed ({proc.returncode}):\n{proc.stderr}")
    numbers = [line for line in (proc.stdout + "\n" + proc.stderr).splitlines()
               if line.replace(".", "", 1).isdigit()]
    if not numbers:
        sys.exit(f"no timing printed by {command[:4]}...:\n{proc.stdout}\n{proc.stderr}")
    return wall, float(numbers[-1])


def main() -> None:
    """Measure and print the table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20, help="requests per run")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (direct + audited)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()

    root = CA.root("bench origin root")
    leaf = root.issue("localhost", "127.0.0.1")
    with tempfile.TemporaryDirectory() as tmp, TLSServer(leaf) as origin:
        cafile = root.write(tmp, name="origin")
        script = Path(tmp, "client.py")
        script.write_text(CLIENT)
        url = origin.url_for("localhost", "/bench")
        client = [sys.executable, str(script), url, str(args.requests)]
        env = {k: v for k, v in os.environ.items() if "PROXY" not in k.upper()}
        # Like the audit's bundle (its CA + the usual CAs), so both runs load as many CAs.
        bundle = Path(tmp, "direct-bundle.pem")
        bundle.write_bytes(write_trust_bundle(root.cert_pem, tmp, base_env=env).read_bytes())
        direct_env = dict(env, REQUESTS_CA_BUNDLE=str(bundle), SSL_CERT_FILE=str(bundle))
        audited = [sys.executable, "-m", "tlspin", "audit", "--json",
                   "--upstream-cafile", str(cafile), "--", *client]
        samples: dict[str, list[tuple[float, float]]] = {"direct": [], "audited": []}
        for round_ in range(args.rounds):
            order = ["direct", "audited"] if round_ % 2 == 0 else ["audited", "direct"]
            for kind in order:
                if kind == "direct":
                    samples[kind].append(run(client, direct_env))
                else:
                    samples[kind].append(run(audited, env))
        expected = args.rounds * args.requests * 2
        if len(origin.requests) != expected:
            sys.exit(f"the origin saw {len(origin.requests)} requests, expected {expected}")

    def median(kind: str, index: int) -> float:
        return statistics.median(sample[index] for sample in samples[kind])

    result = {
        "requests_per_run": args.requests,
        "rounds": args.rounds,
        "wall_direct_s": round(median("direct", 0), 3),
        "wall_audited_s": round(median("audited", 0), 3),
        "loop_direct_s": round(median("direct", 1), 3),
        "loop_audited_s": round(median("audited", 1), 3),
    }
    result["wall_ratio"] = round(result["wall_audited_s"] / result["wall_direct_s"], 2)
    result["loop_ratio"] = round(result["loop_audited_s"] / result["loop_direct_s"], 2)
    result["per_request_added_ms"] = round(
        (result["loop_audited_s"] - result["loop_direct_s"]) / args.requests * 1000, 2
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"tlspin audit overhead: {args.requests} new-connection HTTPS requests per run, "
          f"median of {args.rounds} rounds (interleaved)")
    print(f"{'':24}{'direct':>10}{'audited':>10}{'ratio':>8}")
    print(f"{'whole run (wall, s)':24}{result['wall_direct_s']:>10.3f}"
          f"{result['wall_audited_s']:>10.3f}{result['wall_ratio']:>8.2f}")
    print(f"{'request loop (s)':24}{result['loop_direct_s']:>10.3f}"
          f"{result['loop_audited_s']:>10.3f}{result['loop_ratio']:>8.2f}")
    print(f"added per request: {result['per_request_added_ms']} ms "
          "(CONNECT + forged handshake + verified upstream handshake)")


if __name__ == "__main__":
    main()
