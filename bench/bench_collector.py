"""Benchmark: collector ingest rate against its own no-op endpoint, and dashboard load time.

For each database (SQLite, and PostgreSQL when ``TLSPIN_TEST_PG_URL`` is set or a throwaway
cluster can be started from ``/usr/lib/postgresql/*/bin``):

1. start the collector with uvicorn in a child process on 127.0.0.1, with
   ``benchmark_noop`` on, so ``POST /reports/noop`` runs the same framework path and body read as
   ``POST /reports`` but stores nothing;
2. post the same real reports (built from real pin violations) with N concurrent keep-alive
   senders (8, 16, 32 and 64 by default), after a warm-up of both paths, alternating no-op and
   ingest rounds; the ratio is the median over the rounds of each ingest round's rate over the
   no-op round just before it (the two ran under the same machine conditions), and the best
   rates are shown too. Rounds are long (2,000 reports) and many (16) because single rounds on
   a shared 2-core VM moved between 0.33 and 0.95;
3. check zero loss: every 201 from ``/reports`` is a stored row, and nothing else is.

Target: ingest ≥ 0.6 × the no-op rate under load (16 or more concurrent senders), with zero
loss. A no-op request is answered at once, while a report is answered only after its
transaction commits; with only a few senders, each one waits for its commit, so their rate
measures commit latency rather than what the collector can absorb. Those runs are shown too.

Durability is the same on both databases: SQLite in WAL mode with ``synchronous=NORMAL`` and
the throwaway PostgreSQL with ``synchronous_commit=on`` but ``fsync=off`` keep every committed
report through a crash of the database process or of the collector, not of the machine.

The load generator is one thread driving raw sockets, so that it takes little of the
machine's CPU from the server it measures.

Then, on SQLite (and PostgreSQL), bulk-insert 100,000 reports over 30 days and time the
dashboard pages (``/dashboard`` for 24 h, 7 d and 30 d, an incident page, ``/api/reports``).

Run: ``python bench/bench_collector.py [--reports 2000] [--rounds 16] [--senders 8,16,32,64]
[--in-process] [--rows 100000]``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TOKEN = "bench-token-" + "b" * 24
#: The fewest concurrent senders that load the ingest path: the 0.6 target applies from here.
LOADED = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reports(count: int) -> list[bytes]:
    """Real tlspin reports (a MITM chain failing the pins), each with a unique marker."""
    import warnings

    import tlspin
    from tlspin.exceptions import SinglePinWarning
    from tlspin.reporting import build_report
    from tlspin.testing.pki import CA

    root = CA.root("bench root")
    leaf = root.intermediate("bench issuing CA").issue("api.bench.test")
    mitm = CA.root("mitmproxy")
    seen: list[tlspin.Violation] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinglePinWarning)
        rule = tlspin.PinRule("api.bench.test", [tlspin.Pin.parse(root.pin)], mode="report")
    tlspin.PinPolicy([rule], observers=[seen.append]).check(
        "api.bench.test", [mitm.issue("api.bench.test").cert_der, mitm.cert_der], port=443)
    del leaf
    base = build_report(seen[0], app_id="com.bench.app")
    return [json.dumps({**base, "app-version": f"m{i}"}).encode() for i in range(count)]


class Server:
    """uvicorn in a child process serving ``tlspin.collector:create_app_from_env``."""

    def __init__(self, db_url: str, *, intake_process: bool = True,
                 refresh_seconds: int = 30) -> None:
        from tlspin.collector import Settings

        self.port = _free_port()
        # The connection limits stay on, as under tlspin serve (GuardedHTTP, body and head
        # deadlines), with a cap above the most senders one run uses.
        settings = Settings(db_url=db_url, token=TOKEN, benchmark_noop=True,
                            ip_rate_limit=(10**9, 1.0), max_connections_per_ip=1000,
                            intake_process=intake_process, refresh_seconds=refresh_seconds)
        env = {**os.environ, **settings.to_env()}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "tlspin.collector:create_app_from_env", "--factory",
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
             "--no-access-log", "--http", "tlspin.collector.limits:GuardedHTTP", "--ws", "none"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not self._up():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"collector did not start for {db_url}")
            time.sleep(0.1)

    def _up(self) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            conn.request("GET", "/healthz")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


def _blast(port: int, path: str, bodies: list[bytes], senders: int) -> tuple[float, dict[str, int]]:
    """POST every body over *senders* keep-alive connections; return (rate, acked marker→id).

    The load generator is one thread driving raw sockets with ready-made requests, so that it
    costs the machine little next to the server it measures: on a 2-core machine, a
    generator built on ``http.client`` threads spent about as much CPU per request as the
    no-op endpoint, and the two compete for the same cores.
    """
    import selectors

    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json\r\nContent-Length: ").encode()
    wire = [head + str(len(b)).encode() + b"\r\n\r\n" + b for b in bodies]
    markers = [json.loads(b)["app-version"] for b in bodies] if path == "/reports" else []
    acked: dict[str, int] = {}
    answers: list[tuple[int, bytes]] = []
    failures: list[str] = []
    pending = list(range(len(bodies) - 1, -1, -1))  # next report: pop() from the end
    selector = selectors.DefaultSelector()
    state: dict[socket.socket, list[Any]] = {}  # socket -> [buffer, report index]
    for _ in range(min(senders, len(bodies))):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        state[sock] = [b"", -1]
        selector.register(sock, selectors.EVENT_READ)
    began = time.perf_counter()
    for sock, st in state.items():
        st[1] = pending.pop()
        sock.sendall(wire[st[1]])
    open_conns = len(state)
    while open_conns:
        for key, _ in selector.select(30):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            st = state[sock]
            data = sock.recv(65536)
            if not data:
                raise SystemExit("the collector closed a connection")
            buf = st[0] + data
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                st[0] = buf
                continue
            headers = buf[:end].lower()
            at = headers.find(b"content-length:")
            length = int(headers[at + 15 : headers.find(b"\r\n", at)]) if at >= 0 else 0
            if len(buf) < end + 4 + length:
                st[0] = buf
                continue
            status = int(buf[9:12])
            body = buf[end + 4 : end + 4 + length]
            st[0] = buf[end + 4 + length :]
            if status != 201:
                failures.append(f"{status} {body[:100]!r}")
            elif markers:
                answers.append((st[1], body))  # decoded after the clock stops
            if pending:
                st[1] = pending.pop()
                sock.sendall(wire[st[1]])
            else:
                selector.unregister(sock)
                sock.close()
                open_conns -= 1
    elapsed = time.perf_counter() - began
    selector.close()
    for index, body in answers:
        acked[markers[index]] = json.loads(body)["id"]
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, e.g. {failures[0]}")
    return len(bodies) / elapsed, acked


def ingest(db_url: str, label: str, count: int, senders: int, rounds: int, *,
           intake_process: bool = True) -> dict[str, Any]:
    """Alternate no-op and ingest rounds; return the median paired ratio, the best rates and
    the loss check."""
    from sqlalchemy import func, select

    from tlspin.collector.models import Report
    from tlspin.collector.storage import Database

    bodies = _reports(count * rounds + 200)
    warm, bodies = bodies[-200:], bodies[:-200]
    server = Server(db_url, intake_process=intake_process)
    try:
        # Warm-up of both paths, so that no round pays for a start: the first report starts
        # the intake worker. The warm-up reports count in the loss check like any other.
        _blast(server.port, "/reports/noop", bodies[:200], senders)
        _, acked = _blast(server.port, "/reports", warm, senders)
        noop, real = [], []
        for r in range(rounds):
            chunk = bodies[r * count : (r + 1) * count]
            noop.append(_blast(server.port, "/reports/noop", chunk, senders)[0])
            rate, got = _blast(server.port, "/reports", chunk, senders)
            real.append(rate)
            acked.update(got)
    finally:
        server.stop()
    db = Database(db_url)
    with db.read() as conn:
        stored = dict(conn.execute(select(Report.app_version, Report.id)).all())
        total = conn.execute(select(func.count()).select_from(Report)).scalar_one()
    db.dispose()
    lost = sum(1 for m, i in acked.items() if stored.get(m) != i)
    # Each ingest round against the no-op round just before it: the two ran under the same
    # machine conditions. The median of those ratios shrugs off a noisy round; the ratio of
    # the best rates is shown too.
    pairs = [r / n for n, r in zip(noop, real, strict=True)]
    result = {
        "db": label, "reports": len(acked), "senders": senders,
        "intake": "worker process" if intake_process else "in-process",
        "noop_per_s": round(max(noop)), "ingest_per_s": round(max(real)),
        "ratio": round(statistics.median(pairs), 2),
        "ratio_of_best": round(max(real) / max(noop), 2),
        "round_ratios": [round(p, 2) for p in pairs], "lost": lost,
        "stored_equals_accepted": total == len(acked),
    }
    print(f"  {label:10} {senders:3} senders  no-op {result['noop_per_s']:6}/s  "
          f"ingest {result['ingest_per_s']:6}/s  "
          f"ratio {result['ratio']:.2f} (median of {rounds} paired rounds; best/best "
          f"{result['ratio_of_best']:.2f})  accepted {len(acked)}  stored {total}  lost {lost}")
    return result


def _bulk(db_url: str, rows: int) -> tuple[int, int]:
    """Insert *rows* reports over the last 30 days into a migrated database, fast."""
    from sqlalchemy import insert, select

    from tlspin.collector.formats import parse_report
    from tlspin.collector.models import Incident, Report
    from tlspin.collector.storage import Database

    parsed = parse_report(_reports(1)[0])
    db = Database(db_url)
    db.migrate()
    now = dt.datetime.now(dt.UTC)
    rng = random.Random(7)
    hosts = [f"api{i}.bench.test" for i in range(20)]
    issuers = ["CN=mitmproxy,O=mitmproxy", "CN=Corp Proxy CA,O=Example Corp",
               "CN=R11,O=Let's Encrypt,C=US", "CN=Zscaler Root CA,O=Zscaler Inc."]
    with db.write() as conn:
        incident_ids = []
        for i, host in enumerate(hosts):
            incident_ids.append(conn.execute(insert(Incident).values(
                key=f"bench-{i}", hostname=host, observed_pins=parsed.observed_pins,
                expected_pins=list(parsed.known_pins), first_seen=now - dt.timedelta(days=30),
                last_seen=now, count=rows // len(hosts), status="open", opened_at=now,
            ).returning(Incident.id)).scalar_one())
        batch = []
        for n in range(rows):
            i = n % len(hosts)
            batch.append({
                "received_at": now - dt.timedelta(seconds=rng.uniform(0, 30 * 86400)),
                "client_time": None, "kind": "tlspin", "hostname": hosts[i], "port": 443,
                "noted_hostname": hosts[i], "include_subdomains": False, "mode": "report",
                "reason": "mismatch", "app_id": f"com.bench.app{n % 5}", "app_version": "1",
                "client_ip": None, "observed_pins": parsed.observed_pins,
                "known_pins": list(parsed.known_pins), "chain": parsed.chain,
                "issuer": issuers[n % len(issuers)], "incident_id": incident_ids[i],
                "raw": parsed.raw,
            })
            if len(batch) == 5000:
                conn.execute(insert(Report), batch)
                batch = []
        if batch:
            conn.execute(insert(Report), batch)
        count = conn.execute(select(Report.id).order_by(Report.id.desc()).limit(1)).scalar_one()
    with db.write() as conn:
        # What autovacuum (PostgreSQL) or a long-running collector would have done by now.
        conn.exec_driver_sql("ANALYZE")
    db.dispose()
    return int(count), incident_ids[0]


def dashboard(db_url: str, label: str, rows: int) -> dict[str, Any]:
    """Bulk-load *rows* reports, then time the dashboard pages: the median of 5 loads that each
    compute the page (spaced past the overview cache's lifetime, after one warm-up load), and
    the median of 4 loads in quick succession (which the collector answers from the overview
    it computed at most half a refresh interval ago)."""
    began = time.perf_counter()
    _, incident = _bulk(db_url, rows)
    loaded = time.perf_counter() - began
    server = Server(db_url, refresh_seconds=4)  # the overview is cached for 2 s
    timings: dict[str, float] = {}
    first: dict[str, float] = {}
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        pages = {"dashboard 24h": "/dashboard?range=24h", "dashboard 7d": "/dashboard?range=7d",
                 "dashboard 30d": "/dashboard?range=30d", "incident": f"/incidents/{incident}",
                 "api reports": "/api/reports?limit=100", "health": "/health"}
        def load(path: str) -> float:
            t = time.perf_counter()
            conn.request("GET", path, headers=auth)
            response = conn.getresponse()
            response.read()
            assert response.status == 200, (path, response.status)
            return time.perf_counter() - t

        for name, path in pages.items():
            load(path)  # warm-up: templates, first queries
            computed = []
            for _ in range(5):
                time.sleep(2.2)  # past the overview cache's 2 s
                computed.append(load(path))
            first[name] = statistics.median(computed) * 1000
            timings[name] = statistics.median([load(path) for _ in range(4)]) * 1000
        conn.close()
    finally:
        server.stop()
    print(f"  {label:10} bulk insert of {rows} reports: {loaded:.1f}s; median page load, "
          "computed and in quick succession:")
    for name, ms in timings.items():
        print(f"    {name:14} {first[name]:8.1f} ms {ms:8.1f} ms")
    return {"db": label, "rows": rows, "bulk_insert_s": round(loaded, 1),
            "computed_page_ms": {k: round(v, 1) for k, v in first.items()},
            "page_ms": {k: round(v, 1) for k, v in timings.items()}}


@contextlib.contextmanager
def postgres() -> Iterator[str | None]:
    """TLSPIN_TEST_PG_URL, else a throwaway loopback cluster, else None."""
    url = os.environ.get("TLSPIN_TEST_PG_URL")
    if url:
        yield url
        return
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not bins:
        yield None
        return
    bindir = bins[-1].parent
    root = Path(tempfile.mkdtemp(prefix="tlspin-bench-pg-"))
    user = "postgres" if os.geteuid() == 0 else None
    run_as = ["runuser", "-u", user, "--"] if user else []
    port = _free_port()
    try:
        (root / "sock").mkdir()
        if user:
            shutil.chown(root, user)
            shutil.chown(root / "sock", user)
        subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(root / "data"), "-U",
                        "postgres", "-A", "trust", "--no-sync"], check=True,
                       capture_output=True, cwd=root)
        with (root / "data" / "postgresql.conf").open("a") as conf:
            conf.write(f"\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = "
                       f"'{root / 'sock'}'\nfsync = off\n")
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(root / "data"), "-l",
                        str(root / "log"), "-w", "-o", f"-p {port}", "start"], check=True,
                       capture_output=True, cwd=root)
        subprocess.run([*run_as, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port),
                        "-U", "postgres", "bench"], check=True, capture_output=True, cwd=root)
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"  (no PostgreSQL: could not start a throwaway cluster: {exc})")
        shutil.rmtree(root, ignore_errors=True)
        yield None
        return
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/bench"
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m",
                        "immediate", "stop"], capture_output=True, cwd=root, check=False)
        shutil.rmtree(root, ignore_errors=True)


def _fresh_pg(base: str, name: str) -> str:
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        conn.execute(f"CREATE SCHEMA {name}")
    return f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{name}"


def main() -> None:
    """Run both benchmarks and print a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=2000, help="reports per round")
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--senders", default="8,16,32,64",
                        help="concurrent keep-alive senders; a comma-separated list runs each")
    parser.add_argument("--in-process", action="store_true",
                        help="intake in the app's process instead of the worker process")
    parser.add_argument("--rows", type=int, default=100_000,
                        help="reports for the page test (0: skip the page test)")
    args = parser.parse_args()
    sender_counts = [int(n) for n in str(args.senders).split(",")]
    results: dict[str, Any] = {"ingest": [], "dashboard": []}
    with tempfile.TemporaryDirectory() as tmp, postgres() as pg:
        print("ingest (reports/s; ratio = median over rounds of ingest ÷ the no-op round before)")
        for senders in sender_counts:
            results["ingest"].append(ingest(
                f"sqlite:///{tmp}/ingest-{senders}.db", "sqlite", args.reports, senders,
                args.rounds, intake_process=not args.in_process))
            if pg:
                results["ingest"].append(ingest(
                    _fresh_pg(pg, f"bench_ingest_{senders}"), "postgresql", args.reports,
                    senders, args.rounds, intake_process=not args.in_process))
        if args.rows:
            print("dashboard with stored reports")
            results["dashboard"].append(dashboard(f"sqlite:///{tmp}/dash.db", "sqlite",
                                                  args.rows))
        if pg and args.rows:
            results["dashboard"].append(dashboard(_fresh_pg(pg, "bench_dash"), "postgresql",
                                                  args.rows))
    print(json.dumps(results, indent=2))
    bad = [r for r in results["ingest"] if r["lost"] or not r["stored_equals_accepted"]]
    if bad:
        raise SystemExit(f"report loss: {bad}")
    # The target is about capacity: the ingest rate under load. With fewer concurrent senders
    # than LOADED, every sender waits for its own report's commit, so the rate measures the
    # commit latency; those runs are shown, and named here, but not held to the target.
    loaded = [r for r in results["ingest"] if r["senders"] >= LOADED]
    slow = [f"{r['db']} ({r['senders']} senders)" for r in loaded if r["ratio"] < 0.6]
    light = [f"{r['db']} {r['senders']}: {r['ratio']:.2f}" for r in results["ingest"]
             if r["senders"] < LOADED]
    if light:
        print(f"latency-bound runs (under {LOADED} senders; not held to the target): "
              f"{', '.join(light)}")
    if slow:
        print(f"below the 0.6 target under load on: {', '.join(slow)}")
    elif loaded:
        print(f"under load ({LOADED}+ senders) every ratio meets the 0.6 target")


if __name__ == "__main__":
    main()
