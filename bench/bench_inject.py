"""Benchmark tlspin.inject(): new HTTPS connections with the process pinned vs not pinned.

Run with ``./scripts/bench inject`` (or ``python bench/bench_inject.py``). Each client is built
once, before any injection (as in a real program), and makes new-connection GETs to an origin in
a separate process. Rounds interleave three variants, in rotating order: ``plain`` and
``plain-again`` (nothing injected: the A/A noise floor of the run) and ``injected``
(``tlspin.inject(policy)`` before the round, ``tlspin.extract()`` after; neither is timed).
The origin's host is pinned (root pin, so the whole check runs); a second table uses a policy
that does not cover the host.

Target: ratio injected/plain ≤ 1.02 (median of per-round ratios). The client's CPU time per
request is shown too: on a loaded machine it is the steadier of the two.
"""

from __future__ import annotations

import http.client
import os
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_engine import (
    HOST,
    aiohttp_client,
    httpx_client,
    paired_ratio,
    requests_client,
    start_server,
)

import tlspin
from tlspin.testing.pki import CA

ROUNDS = 40
PER_ROUND = 10


def stdlib_client(ctx: ssl.SSLContext, url: str) -> tuple[Callable[[], None], Callable[[], None]]:
    port = int(url.rsplit(":", 1)[1].strip("/"))

    def get() -> None:
        conn = http.client.HTTPSConnection(HOST, port, context=ctx)
        try:
            conn.request("GET", "/", headers={"Connection": "close"})
            conn.getresponse().read()
        finally:
            conn.close()

    return get, lambda: None


def interleave(
    call: Callable[[], None], policy: tlspin.PinPolicy, rounds: int, per_round: int
) -> dict[str, list[float]]:
    """Mean ms per call in every round for each variant; the order rotates between rounds.

    ``"<variant> cpu"`` holds this process's CPU time per call (the client's side only: the
    origin runs in another process), which depends far less on the machine's load.
    """
    names = ["plain", "plain-again", "injected"]
    for name in names:  # warm-up: first handshakes, caches, composed classes
        if name == "injected":
            tlspin.inject(policy)
        for _ in range(3):
            call()
        tlspin.extract()
    samples: dict[str, list[float]] = {n: [] for name in names for n in (name, f"{name} cpu")}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            if name == "injected":
                tlspin.inject(policy)
            start, cpu = time.perf_counter_ns(), time.process_time_ns()
            for _ in range(per_round):
                call()
            samples[f"{name} cpu"].append((time.process_time_ns() - cpu) / per_round / 1e6)
            samples[name].append((time.perf_counter_ns() - start) / per_round / 1e6)
            tlspin.extract()
    return samples


def creation_cost(policy: tlspin.PinPolicy, n: int = 3000, repeat: int = 7) -> dict[str, float]:
    """Best-of-*repeat* µs to create a client TLS object (no handshake), injected or not.

    What inject() adds to every connection before the pin check itself: the class lookup
    (descriptor), and the snapshot of the verification settings under the context's lock.
    """
    import socket

    ctx = ssl.create_default_context()
    results: dict[str, float] = {}
    for injected in (False, True, False, True):
        if injected:
            tlspin.inject(policy)
        for kind in ("wrap_bio", "wrap_socket"):
            best = float("inf")
            for _ in range(repeat):
                if kind == "wrap_bio":
                    start = time.perf_counter_ns()
                    for _ in range(n):
                        ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname=HOST)
                    elapsed = time.perf_counter_ns() - start
                else:
                    pairs = [socket.socketpair() for _ in range(n // 10)]
                    start = time.perf_counter_ns()
                    for a, _b in pairs:
                        ctx.wrap_socket(a, server_hostname=HOST, do_handshake_on_connect=False)
                    elapsed = time.perf_counter_ns() - start
                    for a, b in pairs:
                        a.close()
                        b.close()
                    elapsed *= 10
                best = min(best, elapsed / n / 1000)
            key = f"{kind} {'injected' if injected else 'plain'}"
            results[key] = min(results.get(key, float("inf")), best)
        tlspin.extract()
    return results


def main() -> int:
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"Python {sys.version.split()[0]}, {ssl.OPENSSL_VERSION}, {os.cpu_count()} CPUs{load}")
    with tempfile.TemporaryDirectory(prefix="tlspin-bench-") as tmp:
        root = CA.root("bench inject root")
        cafile = str(root.write(tmp))
        process, port = start_server(Path(tmp), root)
        url = f"https://{HOST}:{port}/"
        pinned = tlspin.PinPolicy.from_mapping({HOST: [CA.root("backup").pin, root.pin]})
        other = tlspin.PinPolicy.from_mapping(
            {"api.elsewhere.test": [root.pin, CA.root("other backup").pin]}
        )
        try:
            cost = creation_cost(pinned)
            print("\ncreating a client TLS object, no handshake (best of 7, µs)")
            for kind in ("wrap_bio", "wrap_socket"):
                plain, injected = cost[f"{kind} plain"], cost[f"{kind} injected"]
                print(f"{kind:<12} plain {plain:6.2f}  injected {injected:6.2f}  "
                      f"added {injected - plain:+.2f} µs")
            for title, policy in (("host pinned", pinned), ("host not covered", other)):
                print(f"\nnew-connection GET on loopback, injected vs not ({title}; ms/request)")
                print(
                    f"{'client':<11} {'plain':>9} {'injected':>9} {'ratio':>6} {'A/A':>6}"
                    f"  {'client CPU ratio':>16} {'A/A':>6}"
                )
                for name, factory in (
                    ("http.client", stdlib_client),
                    ("requests", requests_client),
                    ("httpx", httpx_client),
                    ("aiohttp", aiohttp_client),
                ):
                    ctx = ssl.create_default_context(cafile=cafile)
                    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
                    call, close = factory(ctx, url)
                    try:
                        got = interleave(call, policy, ROUNDS, PER_ROUND)
                    finally:
                        close()
                    base, cpu = got["plain"], got["plain cpu"]
                    print(
                        f"{name:<11} {statistics.median(base):>6.3f} ms"
                        f" {statistics.median(got['injected']):>6.3f} ms"
                        f" {paired_ratio(got['injected'], base):>6.3f}"
                        f" {paired_ratio(got['plain-again'], base):>6.3f}"
                        f"  {paired_ratio(got['injected cpu'], cpu):>16.3f}"
                        f" {paired_ratio(got['plain-again cpu'], cpu):>6.3f}"
                    )
            print("target: ratio ≤ 1.02")
        finally:
            process.kill()
            process.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
