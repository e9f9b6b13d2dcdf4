"""Benchmark: ``tlspin monitor`` probing 500 endpoints on loopback.

Twenty :class:`~tlspin.testing.servers.TLSServer` instances run in a child process (so the
servers' handshake work does not share the monitor's core), each answering 25 SNI names with
its own certificate. The parent then

1. runs the monitor over all 500 endpoints (probe, verify, judge), and
2. runs the same number of bare asyncio TLS handshakes to the same endpoints,

reporting endpoints per second and the monitor's CPU per probe (``time.process_time`` of the
parent only) against the CPU of a bare handshake. Target: ≥ 200 endpoints/s on 2 cores.

Run: ``python bench/bench_monitor.py [--endpoints 500] [--servers 20] [--concurrency 100]``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import platform
import ssl
import sys
import time
from multiprocessing.connection import Connection
from typing import Any


def serve(conn: Connection, servers: int, names_per_server: int) -> None:
    """Child process: make the PKI, start the servers, report, and wait for "stop"."""
    from tlspin.testing.pki import CA
    from tlspin.testing.servers import TLSServer

    root = CA.root("bench root")
    issuing = root.intermediate("bench issuing CA")
    running: list[TLSServer] = []
    endpoints: list[tuple[str, int]] = []
    for s in range(servers):
        names = [f"h{s}-{n}.bench.example.test" for n in range(names_per_server)]
        default = issuing.issue(f"default{s}.bench.example.test")
        sni = {name: issuing.issue(name, key=default.key) for name in names}
        server = TLSServer(default, sni=sni, idle_timeout=5).start()
        running.append(server)
        endpoints += [(name, server.port) for name in names]
    conn.send({"root_pem": root.cert_pem.decode(), "pin": issuing.pin,
               "backup": CA.root("bench backup").pin, "endpoints": endpoints})
    conn.recv()
    for server in running:
        server.stop()


async def bare_handshakes(endpoints: list[tuple[str, int]], ctx: ssl.SSLContext,
                          concurrency: int) -> int:
    """Plain asyncio TLS handshakes (verified, no pin logic); return how many succeeded."""
    limit = asyncio.Semaphore(concurrency)
    ok = 0

    async def one(name: str, port: int) -> None:
        nonlocal ok
        async with limit:
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, server_hostname=name
            )
            writer.transport.abort()
            ok += 1

    await asyncio.gather(*(one(n, p) for n, p in endpoints))
    return ok


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=500)
    parser.add_argument("--servers", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    per_server = max(1, args.endpoints // args.servers)

    from tlspin.monitor import Target, run_once, verified_context
    from tlspin.policy import PinPolicy, PinRule

    context = mp.get_context("spawn")
    parent, child = context.Pipe()
    proc = context.Process(target=serve, args=(child, args.servers, per_server), daemon=True)
    proc.start()
    try:
        setup: dict[str, Any] = parent.recv()
        endpoints = setup["endpoints"]
        policy = PinPolicy([PinRule(["**.bench.example.test"], [setup["pin"], setup["backup"]])])
        ctx = verified_context(cadata=setup["root_pem"])
        targets = [Target(name, port, "127.0.0.1") for name, port in endpoints]

        # Warm-up: imports, context, first handshakes.
        asyncio.run(run_once(policy, targets[:20], context=ctx, concurrency=args.concurrency))

        cpu0, wall0 = time.process_time(), time.perf_counter()
        run = asyncio.run(run_once(policy, targets, context=ctx, concurrency=args.concurrency))
        monitor_cpu, monitor_wall = time.process_time() - cpu0, time.perf_counter() - wall0

        cpu0, wall0 = time.process_time(), time.perf_counter()
        ok = asyncio.run(bare_handshakes(endpoints, ctx, args.concurrency))
        bare_cpu, bare_wall = time.process_time() - cpu0, time.perf_counter() - wall0
        parent.send("stop")
        proc.join(30)
    finally:
        if proc.is_alive():
            proc.kill()

    count = len(targets)
    statuses = {s: sum(1 for r in run.results if r.status == s) for s in ("green", "amber", "red")}
    per_probe = monitor_cpu / count * 1e3
    per_bare = bare_cpu / max(ok, 1) * 1e3
    print(f"python {platform.python_version()}, {mp.cpu_count()} CPUs, "
          f"{args.servers} servers (child process), concurrency {args.concurrency}")
    print(f"monitor: {count} endpoints in {monitor_wall:.2f} s = {count / monitor_wall:.0f} "
          f"endpoints/s; statuses {statuses}")
    print(f"bare handshakes: {ok} in {bare_wall:.2f} s = {ok / bare_wall:.0f} handshakes/s")
    print(f"client CPU per probe: monitor {per_probe:.2f} ms, bare handshake {per_bare:.2f} ms "
          f"(x{per_probe / per_bare:.2f})")
    target_met = count / monitor_wall >= 200
    print(f"target >= 200 endpoints/s: {'met' if target_met else 'NOT met'}")
    return 0 if statuses["green"] == count else 1


if __name__ == "__main__":
    sys.exit(main())
