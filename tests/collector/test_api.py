"""The query API: auth, filters, pagination, incident detail, CSV export, resolving."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable
from typing import Any

import pytest

from tlspin.reporting import _pem

from .conftest import HOST, PKI, TOKEN, LiveServer, unique_host


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": f"Basic {TOKEN}"},
     {"Cookie": "tlspin_session=9999999999.deadbeef"},
     # "²" (latin-1 0xB2) passes str.isdigit() but int() refuses it: 401, never a 5xx.
     {"Cookie": b"tlspin_session=\xb29999999999.deadbeef"}],
)
def test_query_api_needs_the_token(
    shared_sqlite: LiveServer, headers: dict[str, str | bytes]
) -> None:
    """Without the bearer token (or with a forged session) the API answers 401."""
    server = shared_sqlite
    with server.client(token=None) as client:
        for path in ("/api/reports", "/api/incidents", "/api/reports.csv", "/api/monitor/latest"):
            response = client.get(path, headers=headers)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == "Bearer"
    with server.client() as client:
        assert client.get("/api/reports").status_code == 200


def test_filters_and_pagination(shared: LiveServer, make_report: Any) -> None:
    """Host, app and time filters select the right reports; cursors walk every page once."""
    server = shared
    host, other, tag = unique_host(), unique_host(), unique_host()
    start = dt.datetime.now(dt.UTC).isoformat()
    with server.client() as client:
        for i in range(7):
            client.post("/reports", json=make_report(hostname=host, app_id=f"{tag}-{i % 2}"))
        client.post("/reports", json=make_report(hostname=other, app_id=f"{tag}-0"))
        seen: list[int] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 3, "host": host}
            if cursor:
                params["cursor"] = cursor
            page = client.get("/api/reports", params=params).json()
            seen += [r["id"] for r in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == 7
        assert seen == sorted(seen, reverse=True)
        app1 = client.get("/api/reports", params={"app": f"{tag}-1"}).json()["items"]
        assert {r["hostname"] for r in app1} == {host}
        assert len(app1) == 3
        future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
        window = {"host": other, "since": start, "until": future}
        assert len(client.get("/api/reports", params=window).json()["items"]) == 1
        assert client.get("/api/reports", params={**window, "since": future}).json()["items"] == []
        assert client.get("/api/reports", params={**window, "until": start}).json()["items"] == []
        incidents = client.get("/api/incidents", params={"host": host}).json()["items"]
        assert [i["count"] for i in incidents] == [7]
        by_app = client.get("/api/incidents", params={"app": f"{tag}-0"}).json()["items"]
        assert sorted(i["hostname"] for i in by_app) == sorted([host, other])
        assert client.get("/api/incidents", params={"app": tag}).json()["items"] == []


def test_incident_detail_marks_matching_certificates(
    shared: LiveServer, make_report: Any, pki: PKI
) -> None:
    """The chain table says which served certificate matches an expected pin."""
    server = shared
    # The client saw the genuine leaf and intermediate, but pinned the intermediate and a root
    # it did not get: only the intermediate row matches.
    served = [_pem(pki.leaf.cert_der), _pem(pki.intermediate.cert_der)]
    with server.client() as client:
        created = client.post("/reports", json=make_report(
            hostname=unique_host(), served_certificate_chain=served)).json()
        detail = client.get(f"/api/incidents/{created['incident']}").json()
        missing = client.get("/api/incidents/99999999")
        report = client.get(f"/api/reports/{created['id']}").json()
    assert [(c["subject"], c["matched"]) for c in detail["chain"]] == [
        (f"CN={HOST},O=tlspin testing", False),
        ("CN=tlspin test issuing CA,O=tlspin testing", True),
    ]
    assert detail["apps"] == [{"app_id": "com.example.app", "count": 1}]
    assert missing.status_code == 404
    assert report["raw"].startswith("{")
    assert len(report["chain"]) == 2


# App ids that a spreadsheet would run: at the start of a cell, and behind each separator a
# spreadsheet in some locale splits on (';' in much of Europe), behind spaces and quotes, and
# on a new line.
CSV_ATTACKS = [
    '=HYPERLINK("http://127.0.0.1:9/?"&A1)',
    "x;=WEBSERVICE(A1)",
    "x,=1+1",
    "x; -2+3",
    'x;"=1+1"',
    "x\t@SUM(1)",
    "x\r\n+1+1",
    "\uff1d1+1",
]


def _formula_cells(text: str, delimiter: str) -> list[str]:
    """Cells that a spreadsheet splitting on *delimiter* would evaluate (quote-aware, as
    spreadsheets are, and trimming the spaces and quotes some of them trim)."""
    rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    return [cell for row in rows for cell in row
            if cell.lstrip(' \t\r\n"')[:1] in tuple("=+-@\uff1d\uff0b\uff0d\uff20")]


def test_csv_export_runs_no_formula_in_any_locale(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any
) -> None:
    """Formula text in a report (at a cell's start or after a ';' a European spreadsheet splits
    on) comes out inert whether the CSV is read with ',' or ';' as the separator."""
    server = serve(db_url=sqlite_url)
    with server.client() as client:
        for attack in CSV_ATTACKS:
            assert client.post("/reports", json=make_report(app_id=attack)).status_code == 201
        exports = [client.get("/api/reports.csv").text, client.get("/api/incidents.csv").text]
    for text in exports:
        assert {d: _formula_cells(text, d) for d in ",;"} == {",": [], ";": []}
    rows = list(csv.DictReader(io.StringIO(exports[0], newline="")))
    assert len(rows) == len(CSV_ATTACKS)
    assert {r["app_id"].replace("'", "") for r in rows} == set(CSV_ATTACKS)  # only defused


def test_csv_export_is_rfc4180_and_keeps_plain_values(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any
) -> None:
    """Twin: every field is quoted, lines end in CRLF, and ordinary values (an issuer DN with
    '=' and ',', base64 pins with '+' and '/', dates with '-') come back exactly."""
    server = serve(db_url=sqlite_url)
    with server.client() as client:
        stored = client.post("/reports", json=make_report(app_id="com.example.app")).json()
        client.post("/reports", json=make_report(app_id="com.example.app"))
        response = client.get("/api/reports.csv")
        incidents = client.get("/api/incidents.csv")
        api = client.get(f"/api/reports/{stored['id']}").json()
    assert response.headers["content-type"].startswith("text/csv")
    lines = response.text.split("\r\n")
    assert lines[-1] == ""
    assert all(line.startswith('"') and line.endswith('"') for line in lines[:-1])
    rows = list(csv.DictReader(io.StringIO(response.text, newline="")))
    row = next(r for r in rows if r["id"] == str(stored["id"]))
    assert (row["app_id"], row["issuer"], row["received_at"]) == (
        "com.example.app", "CN=mitmproxy,O=tlspin testing", api["received_at"])
    assert row["observed_pins"] == " ".join(api["observed_pins"])
    assert next(iter(csv.DictReader(io.StringIO(incidents.text, newline=""))))["count"] == "2"


def test_resolve_and_reopen(shared: LiveServer, make_report: Any) -> None:
    """A resolved incident leaves the open list; the same failure again reopens it."""
    server = shared
    host = unique_host()
    with server.client() as client:
        incident = client.post("/reports", json=make_report(hostname=host)).json()["incident"]
        assert client.post(f"/api/incidents/{incident}/resolve").json()["status"] == "resolved"
        query = {"status": "open", "host": host}
        assert client.get("/api/incidents", params=query).json()["items"] == []
        again_id = client.post("/reports", json=make_report(hostname=host)).json()["incident"]
        assert again_id == incident
        again = client.get(f"/api/incidents/{incident}").json()
        assert client.post("/api/incidents/42424242/resolve").status_code == 404
    assert (again["status"], again["count"], again["resolved_at"]) == ("open", 2, None)
    assert again["opened_at"] > again["first_seen"]


@pytest.mark.parametrize(
    "params",
    [{"host": "a\x00b"}, {"since": "9999-12-31T23:59:59-23:59"}, {"limit": 0},
     {"cursor": -1}, {"since": "not a date"}, {"status": "maybe"}],
)
def test_bad_query_parameters_are_client_errors(
    shared: LiveServer, params: dict[str, Any]
) -> None:
    """Bad filters get a 4xx, never a 5xx, on either database."""
    with shared.client() as client:
        response = client.get("/api/incidents", params=params)
    assert 400 <= response.status_code < 500, response.text
