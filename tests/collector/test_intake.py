"""POST /reports on a live collector: storage, incidents, size cap, rate limit, bad input."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from tlspin.collector.models import Incident, Report

from .conftest import HOST, PKI, LiveServer, unique_host


def test_report_is_stored_with_its_incident(shared: LiveServer, make_report: Any) -> None:
    """A valid report gets 201, is stored raw and normalised, and opens an incident."""
    server = shared
    host = unique_host()
    with server.client(token=None) as client:
        response = client.post("/reports", json=make_report(hostname=host))
    assert response.status_code == 201, response.text
    body = response.json()
    with server.state.db.read() as conn:
        row = conn.execute(select(Report).where(Report.id == body["id"])).one()
        incident = conn.execute(select(Incident).where(Incident.id == body["incident"])).one()
    assert (row.hostname, row.kind, row.app_id, row.client_ip) == (
        host, "tlspin", "com.example.app", "127.0.0.1"
    )
    assert json.loads(row.raw) == make_report(hostname=host)
    assert (incident.count, incident.status, incident.hostname) == (1, "open", host)


def test_identical_failures_share_an_incident(
    shared: LiveServer, make_report: Any, pki: PKI
) -> None:
    """Reports with the same host, chain and pins are counted on one incident; others open new."""
    from tlspin.reporting import _pem

    server = shared
    host = unique_host()
    with server.client(token=None) as client:
        ids = {client.post("/reports", json=make_report(hostname=host, app_version=str(i)))
               .json()["incident"] for i in range(3)}
        other = client.post("/reports", json=make_report(
            hostname=host, served_certificate_chain=[_pem(d) for d in pki.good_chain]
        )).json()["incident"]
    assert len(ids) == 1
    assert other not in ids
    with server.state.db.read() as conn:
        counts = dict(conn.execute(
            select(Incident.id, Incident.count).where(Incident.hostname == host)).all())
    assert counts == {ids.pop(): 3, other: 1}


def test_drop_client_ip(
    serve: Callable[..., LiveServer], make_report: Any, tmp_path: Any
) -> None:
    """With drop_client_ip the sender's address is not stored; without it, it is."""
    keep = serve(db_url=f"sqlite:///{tmp_path}/keep.db")
    drop = serve(db_url=f"sqlite:///{tmp_path}/drop.db", drop_client_ip=True)
    for server, expected in ((keep, "127.0.0.1"), (drop, None)):
        with server.client(token=None) as client:
            report_id = client.post("/reports", json=make_report()).json()["id"]
        with server.state.db.read() as conn:
            ip = conn.execute(select(Report.client_ip).where(Report.id == report_id)).scalar()
        assert ip == expected


def test_size_cap_gives_413(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any
) -> None:
    """A body over 64 KiB gets 413; one streamed without a length (chunked) gets 411 whatever
    its size; nothing is stored."""
    server = serve(db_url=sqlite_url)
    big = json.dumps(make_report(padding="x" * 70_000)).encode()
    with server.client(token=None) as client:
        declared = client.post("/reports", content=big,
                               headers={"Content-Type": "application/json"})

        def chunks() -> Any:
            for i in range(0, len(big), 8192):
                yield big[i : i + 8192]

        streamed = client.post("/reports", content=chunks())
        fits = client.post("/reports", json=make_report(padding="x" * 50_000))
    assert (declared.status_code, streamed.status_code, fits.status_code) == (413, 411, 201)
    assert server.count(Report) == 1


def test_per_ip_rate_limit_gives_429(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any
) -> None:
    """Past the per-IP budget a sender gets 429 with Retry-After; the budget is per address."""
    server = serve(db_url=sqlite_url, ip_rate_limit=(3, 3600.0))
    with server.client(token=None) as client:
        codes = [client.post("/reports", json=make_report()).status_code for _ in range(5)]
        last = client.post("/reports", json=make_report())
    assert codes == [201, 201, 201, 429, 429]
    assert last.headers["retry-after"] == "60"
    assert server.count(Report) == 3
    assert server.state.limiter.allow("192.0.2.1")  # another address still has its budget


def test_malformed_report_gets_400_with_reason(
    serve: Callable[..., LiveServer], db_url: str
) -> None:
    """Malformed input gets 400 and a reason; nothing is stored."""
    server = serve(db_url=db_url)
    with server.client(token=None) as client:
        response = client.post("/reports", json={"hostname": HOST, "port": "443"})
        garbage = client.post("/reports", content=b"\x00\x01\x02")
    assert response.status_code == 400
    assert response.json()["reason"] == "port must be an integer from 0 to 65535"
    assert garbage.status_code == 400
    assert server.count(Report) == 0


def test_hostile_bodies_never_get_a_5xx(
    serve: Callable[..., LiveServer], sqlite_url: str, pki: PKI
) -> None:
    """A batch of hostile bodies only ever gets 4xx or 201, and the server keeps serving."""
    from tlspin.reporting import _pem

    server = serve(db_url=sqlite_url)
    pem = _pem(pki.mitm_leaf.cert_der)
    bodies = [
        b"", b"null", b"{}", b'"x"', b"1e999999", b'{"hostname": null}',
        b'{"hostname": "' + b"a" * 300 + b'"}',
        json.dumps({"hostname": HOST,
                    "served-certificate-chain": [pem.replace("A", "B", 5)]}).encode(),
        json.dumps({"hostname": HOST, "known-pins": [{"a": 1}]}).encode(),
        json.dumps({"hostname": HOST, "date-time": "9999-12-31T23:59:59-23:59"}).encode(),
        json.dumps({"hostname": HOST, "date-time": "0001-01-01T00:00:00+23:59"}).encode(),
        json.dumps({"hostname": "xn--zz", "tlspin-version": "1", "rule": [1]}).encode(),
        json.dumps({"hostname": "<script>alert(1)</script>"}).encode(),
        b'{"hostname": "a.test", "port": NaN}',
        b'{"hostname": "a.test"}' + b" " * 10,
    ]
    with server.client(token=None) as client:
        codes = [client.post("/reports", content=b).status_code for b in bodies]
        assert client.get("/healthz").status_code == 200
    assert all(c in (201, 400) for c in codes), codes


def test_metrics_count_accepted_and_rejected(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any
) -> None:
    """/metrics counts received, accepted by format and rejected by reason, and open incidents."""
    server = serve(db_url=sqlite_url)
    with server.client(token=None) as client:
        client.post("/reports", json=make_report())
        client.post("/reports", content=b"nope")
    with server.client() as client:
        text = client.get("/metrics").text
    assert "tlspin_reports_received_total 2.0" in text
    assert 'tlspin_reports_accepted_total{format="tlspin"} 1.0' in text
    assert 'tlspin_reports_rejected_total{reason="malformed"} 1.0' in text
    assert "tlspin_open_incidents 1.0" in text
    assert "tlspin_intake_seconds_count 1.0" in text


def test_client_disconnect_mid_body_is_harmless(
    serve: Callable[..., LiveServer], sqlite_url: str
) -> None:
    """A sender that promises a body and hangs up stores nothing and breaks nothing."""
    server = serve(db_url=sqlite_url)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /reports HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{\"ho")
    with server.client(token=None) as client:
        assert client.get("/healthz").status_code == 200
    assert server.count(Report) == 0


@pytest.mark.parametrize("noop", [True, False])
def test_noop_route_only_with_the_benchmark_flag(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any, noop: bool
) -> None:
    """POST /reports/noop exists only when benchmark_noop is set, and stores nothing."""
    server = serve(db_url=sqlite_url, benchmark_noop=noop)
    with server.client(token=None) as client:
        status = client.post("/reports/noop", json=make_report()).status_code
    assert status == (201 if noop else 405)  # without the flag only GET /reports/{id} matches
    assert server.count(Report) == 0


def test_stored_timestamps_use_one_text_format(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any
) -> None:
    """Intake writes SQLite timestamps exactly as the ORM does, so text comparisons order them."""
    import re

    server = serve(db_url=sqlite_url)
    with server.client(token=None) as client:
        client.post("/reports", json=make_report())
    with server.state.db.read() as conn:
        raw = conn.exec_driver_sql("SELECT received_at, client_time FROM reports").one()
    pattern = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}"
    assert all(re.fullmatch(pattern, value) for value in raw), raw
