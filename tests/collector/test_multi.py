"""Several ``tlspin serve`` processes on one PostgreSQL database, as the README promises:
nothing acknowledged is lost, incidents are grouped once, every process shows the same data,
and the per-IP rate limit is per process (as documented)."""

from __future__ import annotations

import http.client
import json
import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import select

from tlspin.collector.models import Incident, Report
from tlspin.collector.storage import Database

from .conftest import PKI, TOKEN, unique_host
from .proc import Collector, free_port

pytestmark = pytest.mark.postgres

COLLECTORS = 3
SENDERS = 6
PER_SENDER = 40
RATE_LIMIT = 20  # reports per client IP per hour, in each process


class RoundRobinSender(threading.Thread):
    """Posts its reports to each collector in turn, over one keep-alive connection to each,
    each report from its own client address (X-Forwarded-For)."""

    def __init__(self, ports: list[int], bodies: list[tuple[str, bytes]], tag: int) -> None:
        super().__init__(daemon=True)
        self.ports, self.bodies, self.tag = ports, bodies, tag
        self.acked: dict[str, int] = {}  # marker -> stored report id
        self.failures: list[str] = []

    def run(self) -> None:
        connections = [http.client.HTTPConnection("127.0.0.1", p, timeout=30)
                       for p in self.ports]
        try:
            for n, (marker, body) in enumerate(self.bodies):
                conn = connections[(n + self.tag) % len(connections)]
                try:
                    conn.request("POST", "/reports", body=body, headers={
                        "Content-Type": "application/json",
                        "X-Forwarded-For": f"10.{self.tag}.{n // 250}.{n % 250 + 1}"})
                    response = conn.getresponse()
                    answer = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    self.failures.append(f"{marker}: {exc!r}")
                    conn.close()
                    continue
                if response.status == 201:
                    self.acked[marker] = json.loads(answer)["id"]
                else:
                    self.failures.append(f"{marker}: HTTP {response.status} {answer[:100]!r}")
        finally:
            for conn in connections:
                conn.close()


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def test_three_collectors_share_one_postgresql(
    pg_url: str, make_report: Any, pki: PKI, collectors: list[Collector]
) -> None:
    """Three ``tlspin serve`` processes, started together on an empty database, under six
    concurrent senders: every 201 is stored under its id, each incident exists once with the
    count of its reports, and each process's dashboard and API show the same counts."""
    from tlspin.reporting import _pem

    with ThreadPoolExecutor(COLLECTORS) as pool:  # started at once: migrations race too
        started = list(pool.map(
            lambda _: Collector(pg_url, free_port(), args=[
                "--trust-forwarded-for", "--ip-rate-limit", f"{RATE_LIMIT}/3600"]),
            range(COLLECTORS)))
    collectors.extend(started)
    ports = [c.port for c in started]

    # Four incidents: two hosts, each with the MITM chain and with the genuine chain.
    hosts = [unique_host(), unique_host()]
    chains = {"mitm": None, "good": [_pem(d) for d in pki.good_chain]}
    variants = [(h, c) for h in hosts for c in chains]

    def body(variant: tuple[str, str], marker: str) -> bytes:
        host, chain = variant
        fields: dict[str, Any] = {"hostname": host, "app_version": marker}
        if chains[chain] is not None:
            fields["served_certificate_chain"] = chains[chain]
        return json.dumps(make_report(**fields)).encode()

    variant_of = {f"s{t}-{n}": variants[(n + t) % len(variants)]
                  for t in range(SENDERS) for n in range(PER_SENDER)}
    senders = [RoundRobinSender(ports, [(f"s{t}-{n}", body(variant_of[f"s{t}-{n}"],
                                                            f"s{t}-{n}"))
                                        for n in range(PER_SENDER)], t)
               for t in range(SENDERS)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(300)
    assert [f for s in senders for f in s.failures] == []
    acked = {m: i for s in senders for m, i in s.acked.items()}
    assert len(acked) == SENDERS * PER_SENDER

    db = Database(pg_url)
    try:
        with db.read() as conn:
            stored = dict(conn.execute(select(Report.app_version, Report.id)).all())
            incidents = conn.execute(select(Incident)).all()
            members: dict[int, set[str]] = {}
            for incident_id, marker in conn.execute(
                    select(Report.incident_id, Report.app_version)):
                members.setdefault(incident_id, set()).add(marker)
    finally:
        db.dispose()
    assert stored == acked  # every acknowledged report, under its id, and nothing else
    # One incident per (host, chain), holding exactly that variant's reports, counted right.
    grouped = {frozenset({variant_of[m] for m in members[i.id]}): (i.count, len(members[i.id]))
               for i in incidents}
    assert len(incidents) == len(grouped) == len(variants)
    assert {next(iter(k)) for k in grouped if len(k) == 1} == set(variants)
    assert all(count == size for count, size in grouped.values())

    for port in ports:  # each process: the API and the dashboard agree with the database
        status, page = _get(port, "/dashboard")
        assert status == 200
        assert f'<strong id="total">{len(acked)}</strong>' in page
        assert f'<strong id="open-incidents">{len(variants)}</strong>' in page
        for incident in incidents:
            status, api = _get(port, f"/api/incidents/{incident.id}")
            assert (status, json.loads(api)["count"]) == (200, incident.count)
            status, html = _get(port, f"/incidents/{incident.id}")
            shown = re.search(r"(\d+) reports · first seen", html)
            assert status == 200
            assert shown is not None
            assert int(shown.group(1)) == incident.count

    # The per-IP rate limit lives in each process (documented): one address sending to all
    # three gets RATE_LIMIT reports accepted by each, and 429 after.
    flood = [body(variants[0], f"flood-{n}") for n in range(COLLECTORS * RATE_LIMIT + 6)]
    assert Counter(_flood(ports, flood)) == {201: COLLECTORS * RATE_LIMIT, 429: 6}


def _flood(ports: list[int], bodies: list[bytes]) -> list[int]:
    """POST *bodies* round-robin from one client address; the status codes."""
    connections = [http.client.HTTPConnection("127.0.0.1", p, timeout=30) for p in ports]
    codes = []
    try:
        for n, body in enumerate(bodies):
            conn = connections[n % len(connections)]
            conn.request("POST", "/reports", body=body, headers={
                "Content-Type": "application/json", "X-Forwarded-For": "198.51.100.7"})
            response = conn.getresponse()
            response.read()
            codes.append(response.status)
    finally:
        for conn in connections:
            conn.close()
    return codes
