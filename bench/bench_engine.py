"""Benchmark the pin engine: the check itself, and its share of new HTTPS connections.

Run with ``./scripts/bench engine`` (or ``python bench/bench_engine.py``). Prints three tables:

a. ``PinPolicy.check`` for a 3-certificate chain, cached and uncached (best-of-N, µs);
b. new-connection HTTPS GETs on loopback, pinned vs unpinned with the same client (requests,
   httpx, aiohttp), interleaved in rounds; the server runs in a separate process;
c. ``tlspin.integrations.requests.session`` vs a plain ``requests.Session(verify=cafile)``.

Targets: (a) ≤ 5 µs cached, ≤ 15 µs uncached; (b) ratio ≤ 1.02; (c) ratio ≤ 1.0.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import requests
from requests.adapters import HTTPAdapter

import tlspin
import tlspin.pins
from tlspin.hosts import canonical_host
from tlspin.integrations import requests as tp_requests
from tlspin.testing.pki import CA, KeyKind

HOST = "127.0.0.1"
ROUNDS = 30
PER_ROUND = 10
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


# -- (a) the check itself ------------------------------------------------------------------------


def _chain(kind: KeyKind) -> tuple[list[bytes], tlspin.PinPolicy]:
    root = CA.root("bench root", key_kind=kind)
    inter = root.intermediate("bench intermediate", key_kind=kind)
    leaf = inter.issue("api.bench.test", key_kind=kind)
    chain = [leaf.cert_der, inter.cert_der, root.cert_der]
    # The root pin is the last one compared, and a backup pin sits in the same rule.
    policy = tlspin.PinPolicy.from_mapping(
        {"api.bench.test": [CA.root("bench backup").pin, root.pin]}
    )
    return chain, policy


def _fresh(chain: list[bytes]) -> list[bytes]:
    # A handshake yields new bytes objects each time, so the cache must rehash the DER.
    return [bytes(bytearray(der)) for der in chain]


def bench_check_cached(chain: list[bytes], policy: tlspin.PinPolicy, n: int, repeat: int) -> float:
    """Best-of-*repeat* mean µs per check, caches warm, fresh bytes objects per call."""
    policy.check("api.bench.test", chain)
    best = float("inf")
    for _ in range(repeat):
        chains = [_fresh(chain) for _ in range(n)]
        start = time.perf_counter_ns()
        for c in chains:
            policy.check("api.bench.test", c)
        best = min(best, (time.perf_counter_ns() - start) / n / 1000)
    return best


def bench_check_uncached(
    chain: list[bytes], policy: tlspin.PinPolicy, n: int, *, level: str
) -> tuple[float, float]:
    """(best, median) µs of single checks with caches emptied before each one.

    *level* ``"spki"`` empties the SPKI-digest cache only: a known host serving certificates
    not seen before (the issue's "uncached" case). ``"plan"`` also drops the host's merged pin
    sets; ``"host"`` also empties the host-name caches (canonical form, matching rules): the very
    first connection to a host.
    """
    samples = []
    for _ in range(n):
        c = _fresh(chain)
        tlspin.pins._SPKI_CACHE.clear()
        if level in ("plan", "host"):
            policy._plans.clear()
        if level == "host":
            policy._lookup.clear()
            canonical_host.cache_clear()
        start = time.perf_counter_ns()
        policy.check("api.bench.test", c)
        samples.append((time.perf_counter_ns() - start) / 1000)
    return min(samples), statistics.median(samples)


# -- the origin, in its own process ---------------------------------------------------------------


def _serve(chain_path: str, key_path: str, conn: Connection) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(chain_path, key_path)
    ctx.set_alpn_protocols(["http/1.1"])
    listener = socket.create_server((HOST, 0), backlog=128)
    conn.send(listener.getsockname()[1])

    def handle(raw: socket.socket) -> None:
        try:
            with ctx.wrap_socket(raw, server_side=True) as tls:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = tls.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                tls.sendall(RESPONSE)
        except (OSError, ssl.SSLError):
            pass
        finally:
            raw.close()

    while True:
        raw, _ = listener.accept()
        threading.Thread(target=handle, args=(raw,), daemon=True).start()


def start_server(directory: Path, root: CA) -> tuple[multiprocessing.Process, int]:
    """Start the origin process; return it and its port."""
    leaf = root.intermediate("bench origin intermediate").issue(HOST)
    chain_path, key_path = leaf.write(directory)
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.Process(
        target=_serve, args=(str(chain_path), str(key_path), child), daemon=True
    )
    process.start()
    port = parent.recv()
    return process, port


# -- (b) and (c) new connections ------------------------------------------------------------------


class _ContextAdapter(HTTPAdapter):
    """A requests adapter using one given context (the baseline for the pinned adapter)."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self._ctx = ctx
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._ctx
        super().init_poolmanager(*args, **kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        super().cert_verify(conn, url, verify, cert)
        conn.ca_certs = conn.ca_cert_dir = None


def _plain_context(cafile: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def requests_client(ctx: ssl.SSLContext, url: str) -> tuple[Callable[[], None], Callable[[], None]]:
    s = requests.Session()
    s.trust_env = False
    s.mount("https://", _ContextAdapter(ctx))
    headers = {"Connection": "close"}
    return (lambda: s.get(url, headers=headers).content and None), s.close


def httpx_client(ctx: ssl.SSLContext, url: str) -> tuple[Callable[[], None], Callable[[], None]]:
    c = httpx.Client(verify=ctx, headers={"Connection": "close"}, trust_env=False)
    return (lambda: c.get(url).content and None), c.close


class _AioClient:
    def __init__(self, ctx: ssl.SSLContext, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.url = url
        self.session = self.loop.run_until_complete(self._session(ctx))

    async def _session(self, ctx: ssl.SSLContext) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(ssl=ctx, force_close=True)
        return aiohttp.ClientSession(connector=connector, trust_env=False)

    async def _get(self) -> None:
        async with self.session.get(self.url) as response:
            await response.read()

    def get(self) -> None:
        self.loop.run_until_complete(self._get())

    def close(self) -> None:
        self.loop.run_until_complete(self.session.close())
        self.loop.close()


def aiohttp_client(ctx: ssl.SSLContext, url: str) -> tuple[Callable[[], None], Callable[[], None]]:
    client = _AioClient(ctx, url)
    return client.get, client.close


def interleave(
    variants: dict[str, Callable[[], None]], rounds: int, per_round: int
) -> dict[str, list[float]]:
    """Mean ms per call of each variant in every round; the order rotates between rounds."""
    for call in variants.values():  # warm-up: imports, first handshakes, caches
        for _ in range(3):
            call()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter_ns()
            for _ in range(per_round):
                variants[name]()
            samples[name].append((time.perf_counter_ns() - start) / per_round / 1e6)
    return samples


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median of per-round ratios: rounds pair up in time, so slow phases cancel out."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def main() -> int:
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"Python {sys.version.split()[0]}, {ssl.OPENSSL_VERSION}, {os.cpu_count()} CPUs{load}")
    print("\n(a) PinPolicy.check, 3-certificate chain (leaf, intermediate, root; root pinned)")
    print(
        f"{'chain':<10} {'cached':>10} {'uncached SPKI':>24} {'+ host plan':>24}"
        f" {'first use of host':>24}"
    )
    for kind in ("ec256", "rsa2048"):
        chain, policy = _chain(kind)  # type: ignore[arg-type]
        cached = bench_check_cached(chain, policy, n=2000, repeat=7)
        cells = []
        for level in ("spki", "plan", "host"):
            best, median = bench_check_uncached(chain, policy, 3000, level=level)
            cells.append(f"{best:>8.2f} µs (med {median:5.2f})")
        print(f"{kind:<10} {cached:>7.2f} µs " + " ".join(f"{c:>24}" for c in cells))
    print("targets: cached ≤ 5 µs, uncached SPKI ≤ 15 µs (best-of-N)")

    with tempfile.TemporaryDirectory(prefix="tlspin-bench-") as tmp:
        root = CA.root("bench https root")
        cafile = str(root.write(tmp))
        process, port = start_server(Path(tmp), root)
        url = f"https://{HOST}:{port}/"
        policy = tlspin.PinPolicy.from_mapping({HOST: [CA.root("backup").pin, root.pin]})
        try:
            print("\n(b) new-connection GET on loopback, pinned vs unpinned (ms per request)")
            print("    'A/A' compares two identical unpinned clients: the noise floor of this run")
            print(
                f"{'client':<10} {'unpinned':>10} {'pinned':>10} {'ratio':>7} {'A/A':>7}"
                f" {'ratio of best rounds':>22}"
            )
            for name, factory in (
                ("requests", requests_client),
                ("httpx", httpx_client),
                ("aiohttp", aiohttp_client),
            ):
                clients = {
                    "unpinned": factory(_plain_context(cafile), url),
                    "unpinned-again": factory(_plain_context(cafile), url),
                    "pinned": factory(tlspin.create_context(policy, cafile=cafile), url),
                }
                try:
                    got = interleave({k: v[0] for k, v in clients.items()}, ROUNDS, PER_ROUND)
                finally:
                    for _, close in clients.values():
                        close()
                base, pinned = got["unpinned"], got["pinned"]
                print(
                    f"{name:<10} {statistics.median(base):>7.3f} ms"
                    f" {statistics.median(pinned):>7.3f} ms"
                    f" {paired_ratio(pinned, base):>7.3f}"
                    f" {paired_ratio(got['unpinned-again'], base):>7.3f}"
                    f" {min(pinned) / min(base):>22.3f}"
                )
            print("target: ratio ≤ 1.02")

            print(
                "\n(c) requests, new connections: tlspin session vs requests.Session(verify=cafile)"
            )
            ours = tp_requests.session(policy, cafile=cafile)
            theirs = requests.Session()
            theirs.verify = cafile
            # REQUESTS_CA_BUNDLE would override Session.verify (a requests quirk): ignore env.
            ours.trust_env = theirs.trust_env = False
            headers = {"Connection": "close"}
            try:
                got = interleave(
                    {
                        "plain": lambda: theirs.get(url, headers=headers).content and None,
                        "tlspin": lambda: ours.get(url, headers=headers).content and None,
                    },
                    ROUNDS,
                    PER_ROUND,
                )
            finally:
                ours.close()
                theirs.close()
            print(f"{'plain requests':<16} {statistics.median(got['plain']):>7.3f} ms")
            print(f"{'tlspin session':<16} {statistics.median(got['tlspin']):>7.3f} ms")
            ratio = paired_ratio(got["tlspin"], got["plain"])
            best = min(got["tlspin"]) / min(got["plain"])
            print(f"{'ratio':<16} {ratio:>7.3f}  (ratio of best rounds {best:.3f}; target ≤ 1.0)")
        finally:
            process.kill()
            process.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
