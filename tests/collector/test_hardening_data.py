"""The red-team review of the collector, data side: each attack performed against a real
collector and database, with the legitimate path beside it.

Poisoned pins and what every view does with odd stored values, PostgreSQL function hijack,
planted SQLite paths, alert decoys, CSV export cost, storage bounds and retention, the serve
log, worker caches and webhook secrets in errors.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, text, update

from tlspin.collector.formats import RAW_KEEP, parse_report
from tlspin.collector.models import Incident, Report
from tlspin.collector.storage import Database

from .conftest import TOKEN, LiveServer, WebhookReceiver, unique_host
from .proc import Collector, free_port

_VIEWS = ("/api/reports", "/api/incidents", "/api/reports.csv", "/api/incidents.csv",
          "/dashboard")


# -- 2: a poisoned certificate pin, and odd stored values in every view ------------------------

@pytest.mark.parametrize("pin", ["cert-sha256/\ud800", "cert-sha256/\x00", "cert-sha256/a\nb",
                                 "cert-sha256/\u202eab", "cert-sha256/" + "g" * 64])
def test_a_malformed_certificate_pin_gets_400(
    shared: LiveServer, make_report: Any, pin: str
) -> None:
    """Attack: a known-pins item starting with cert-sha256/ was stored as it was, and one lone
    surrogate in it made the lists, both CSVs and the incident pages answer 500 for good. It
    gets 400 now, and every view still answers."""
    host = unique_host()
    body = json.dumps(make_report(hostname=host, known_pins=[pin]))
    with shared.client() as client:
        answer = client.post("/reports", content=body)
        assert answer.status_code == 400, answer.text
        assert "cert-sha256/<64 hex digits>" in answer.json()["reason"]
        for path in _VIEWS:
            assert client.get(path).status_code == 200, path


def test_a_valid_certificate_pin_is_stored_and_shown(
    shared: LiveServer, make_report: Any
) -> None:
    """Twin: a cert-sha256 pin in upper-case hex is stored in canonical form and shown."""
    host = unique_host()
    with shared.client() as client:
        answer = client.post("/reports", json=make_report(
            hostname=host, known_pins=["CERT-SHA256/" + "AB" * 32]))
        assert answer.status_code == 201, answer.text
        incident = client.get(f"/api/incidents/{answer.json()['incident']}").json()
    assert incident["expected_pins"] == ["cert-sha256/" + "ab" * 32]


def test_every_view_survives_any_stored_value(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any
) -> None:
    """Whatever a database already holds (rows written before the pin check, by another
    tool), every read path answers 200: lone surrogates, NUL, bidi and line breaks in every
    JSON column and text column are shown escaped or replaced, never a 500."""
    server = serve(db_url=sqlite_url)
    with server.client() as client:
        stored = client.post("/reports", json=make_report(hostname=unique_host())).json()
    poison = "x\ud800\x00\u202e\r\n=1+1"
    with server.state.db.write() as conn:
        conn.execute(text(
            "UPDATE reports SET known_pins = :pins, observed_pins = :pins, chain = :chain, "
            "issuer = :text, app_id = :text, raw = :raw WHERE id = :id"), {
            "pins": json.dumps([poison]), "chain": json.dumps([{"subject": poison, "pin": poison}]),
            "text": poison.encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
            "raw": json.dumps({"hostname": poison}), "id": stored["id"]})
        conn.execute(update(Incident).where(Incident.id == stored["incident"]).values(
            observed_pins=[poison], expected_pins=[poison]))
    with server.client() as client:
        paths = [*_VIEWS, f"/api/reports/{stored['id']}", f"/reports/{stored['id']}",
                 f"/api/incidents/{stored['incident']}", f"/incidents/{stored['incident']}"]
        answers = {path: client.get(path) for path in paths}
    assert {p: a.status_code for p, a in answers.items()} == dict.fromkeys(paths, 200)
    detail = answers[f"/api/incidents/{stored['incident']}"].json()
    assert detail["expected_pins"] == ["x\ufffd\ufffd\u202e\r\n=1+1"]
    assert "'=1+1" in answers["/api/reports.csv"].text  # still defused


# -- 4: PostgreSQL function hijack -----------------------------------------------------------------

@pytest.mark.postgres
@pytest.mark.parametrize(("intake_process", "where"),
                         [(True, "other"), (True, "own"), (False, "own")])
def test_a_shadowing_function_on_the_search_path_never_runs(
    serve: Callable[..., LiveServer], pg_url: str, make_report: Any, intake_process: bool,
    where: str,
) -> None:
    """Attack (CVE-2018-1058): another role, with CREATE on a schema on the collector's
    search path (another schema listed after the tables' one, or the tables' schema itself,
    like ``public`` before PostgreSQL 15), defines nextval(oid), a better match than
    pg_catalog.nextval(regclass) for the intake's call. It used to run as the collector on
    every batch. The search path is now narrowed to the tables' schema (the first case) and
    the built-ins are named with their schema (both), so it never runs."""
    import psycopg

    base = pg_url.split("?", maxsplit=1)[0]
    schema = urllib.parse.unquote(pg_url.split("search_path%3D")[1])
    evil = f"evil_{schema}"
    target = evil if where == "other" else schema
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {evil}")
        conn.execute(f"CREATE ROLE {evil}")
        conn.execute(f"CREATE SCHEMA {evil} AUTHORIZATION {evil}")
        conn.execute(f"GRANT CREATE ON SCHEMA {schema} TO {evil}")
        conn.execute(f"SET ROLE {evil}")
        conn.execute(f"CREATE TABLE {evil}.ran (who text)")
        conn.execute(f"GRANT INSERT ON {evil}.ran TO PUBLIC")
        conn.execute(f"GRANT USAGE ON SCHEMA {evil} TO PUBLIC")
        conn.execute(
            f"CREATE FUNCTION {target}.nextval(oid) RETURNS bigint LANGUAGE sql AS $$ "
            f"INSERT INTO {evil}.ran VALUES (current_user); "
            "SELECT pg_catalog.nextval($1::pg_catalog.regclass) $$")
        conn.execute("RESET ROLE")
    try:
        url = pg_url.replace("search_path%3D" + schema,
                             urllib.parse.quote(f"search_path={schema},{evil}"))
        server = serve(db_url=url, intake_process=intake_process)
        with server.client(token=None) as client:
            answers = [client.post("/reports", json=make_report(hostname=unique_host()))
                       for _ in range(3)]
        assert [a.status_code for a in answers] == [201] * 3
        with psycopg.connect(base, autocommit=True) as conn:
            ran = conn.execute(f"SELECT count(*) FROM {evil}.ran").fetchone()
        assert ran == (0,)
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            if where == "own":
                conn.execute(f"DROP FUNCTION {schema}.nextval(oid)")
            conn.execute(f"DROP SCHEMA {evil} CASCADE")
            conn.execute(f"REVOKE CREATE ON SCHEMA {schema} FROM {evil}")
            conn.execute(f"DROP ROLE {evil}")


# -- 7: planted SQLite paths -----------------------------------------------------------------------

def test_planted_sqlite_paths_are_refused(tmp_path: Path) -> None:
    """Attack: a local user plants the --db path: a dangling link (SQLite created the
    database, then -wal and -shm, at its target), a link to another file of the collector's
    user (which was chmod-ed), a link at -wal, and a database another user pre-created
    world-writable. Each is refused; nothing is created or changed at a target."""
    target = tmp_path / "elsewhere.db"
    dangling = tmp_path / "dangling.db"
    dangling.symlink_to(target)
    own = tmp_path / "own-file"
    own.write_text("mine")
    own.chmod(0o644)
    to_own = tmp_path / "to-own.db"
    to_own.symlink_to(own)
    wal_link = tmp_path / "wal.db"
    Path(f"{wal_link}-wal").symlink_to(tmp_path / "wal-target")
    foreign = tmp_path / "foreign.db"
    foreign.write_bytes(b"")
    foreign.chmod(0o666)
    os.chown(foreign, 65534, 65534)
    for path, what in ((dangling, "symbolic link"), (to_own, "symbolic link"),
                       (wal_link, "symbolic link"), (foreign, "belongs to uid 65534")):
        with pytest.raises(ValueError, match=what):
            Database(f"sqlite:///{path}")
    assert not target.exists()
    assert not Path(f"{target}-wal").exists()
    assert not (tmp_path / "wal-target").exists()
    assert (own.stat().st_mode & 0o777, own.read_text()) == (0o644, "mine")
    assert foreign.stat().st_mode & 0o777 == 0o666


def test_serve_refuses_a_planted_path_and_uses_a_plain_one(tmp_path: Path) -> None:
    """`tlspin serve --db` on a planted link exits 2 saying why; a plain path gets a
    0600 database (twin), and a 0644 one of this user is tightened through its descriptor."""
    link = tmp_path / "link.db"
    link.symlink_to(tmp_path / "target.db")
    run = subprocess.run(
        [sys.executable, "-m", "tlspin", "serve", "--db", f"sqlite:///{link}", "--port", "9"],
        capture_output=True, text=True, check=False, timeout=60,
        env={**os.environ, "TLSPIN_COLLECTOR_TOKEN": TOKEN})
    assert run.returncode == 2
    assert "is a symbolic link" in run.stderr
    assert not (tmp_path / "target.db").exists()
    plain = tmp_path / "plain.db"
    db = Database(f"sqlite:///{plain}")
    db.migrate()
    db.dispose()
    assert plain.stat().st_mode & 0o777 == 0o600
    plain.chmod(0o644)
    Database(f"sqlite:///{plain}").dispose()
    assert plain.stat().st_mode & 0o777 == 0o600


# -- 9: alert decoys -------------------------------------------------------------------------------

def test_decoys_cannot_hide_an_incident_alert(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any,
    webhook: Callable[..., WebhookReceiver],
) -> None:
    """Attack: an interceptor sends 40 decoy incidents (40 hosts) from one address to use up
    the 30-a-minute alert cap, then its victim's client reports the real one. The decoys hit
    the per-sender cap, the real incident's alert goes out, a summary says what was held
    back, and /metrics counts it."""
    hook = webhook()
    server = serve(db_url=sqlite_url, webhooks=(hook.url,), trust_forwarded_for=True)
    real = unique_host()
    with server.client(token=None) as client:
        for _ in range(40):
            assert client.post("/reports", json=make_report(hostname=unique_host()),
                               headers={"X-Forwarded-For": "127.0.0.66"}).status_code == 201
        assert client.post("/reports", json=make_report(hostname=real),
                           headers={"X-Forwarded-For": "127.0.0.77"}).status_code == 201
    deadline = time.monotonic() + 15  # alerts go out after the responses, in the background
    while len(hook.bodies) < 7 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.state.alerts.flush(10)
    opened = [b["payload"]["hostname"] for b in hook.bodies if b["kind"] == "incident.opened"]
    assert real in opened
    assert len(opened) == 6  # five decoys, then the sender's cap; and the real one
    summaries = [b for b in hook.bodies if b["kind"] == "alerts.suppressed"]
    assert len(summaries) == 1
    assert summaries[0]["payload"]["suppressed"] >= 1
    with server.client() as client:
        metrics = client.get("/metrics").text
    assert 'tlspin_alerts_suppressed_total{reason="cap"} 35.0' in metrics


# -- 10: CSV export ------------------------------------------------------------------------------

def test_csv_cell_is_linear_on_runs_of_separators() -> None:
    """Attack: cells of tabs (the cell-start regular expression backtracked quadratically;
    10,000 such rows blocked the event loop for 55 s). 300,000 tabs and formula characters,
    interleaved, are defused in one pass: the subprocess finishes well within its generous
    deadline (the old pattern needs about 10^10 steps), and the result is right."""
    code = (
        "from tlspin.collector.api import _csv_cell\n"
        "t = '\\t' * 300_000 + 'x'\n"
        "assert _csv_cell(t) == t\n"
        "u = ('\\t' * 1000 + '=') * 300\n"
        "assert _csv_cell(u) == ('\\t' * 1000 + \"'=\") * 300\n"
        "print('ok')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False, timeout=120)
    assert run.stdout.strip() == "ok", run.stderr


def test_csv_export_reads_no_raw_report_text(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any
) -> None:
    """Attack: exporting large reports loaded each one's raw text (64 KiB) though the CSV
    never writes it (a 2.5 MB CSV took 702 MB). The export selects only its columns, and
    streams; formulas are still defused (twin)."""
    server = serve(db_url=sqlite_url)
    with server.client(token=None) as client:
        for _ in range(3):
            assert client.post("/reports", json=make_report(
                hostname=unique_host(), app_id="=HYPERLINK(1)", padding="p" * 60_000)
            ).status_code == 201
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    engine = server.state.db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        with server.client() as client:
            export = client.get("/api/reports.csv")
            listing = client.get("/api/reports")
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert export.status_code == listing.status_code == 200
    assert export.text.count("'=HYPERLINK(1)") == 3
    selects = [s for s in statements if "FROM reports" in s]
    assert selects
    assert not any("reports.raw" in s or "reports.chain" in s for s in selects)


# -- 11: storage bounds and retention ------------------------------------------------------------

def test_padding_does_not_multiply_storage(make_report: Any) -> None:
    """Attack: 60 KB of unknown keys on every report used to be stored as received. The raw
    text kept is the defined keys only, and at most RAW_KEEP characters whatever the body;
    an ordinary report is kept exactly as received (twin)."""
    ordinary = json.dumps(make_report())
    assert parse_report(ordinary.encode()).raw == ordinary
    padded = parse_report(json.dumps(make_report(pad="A" * 60_000)).encode()).raw
    assert "pad" not in json.loads(padded)
    assert len(padded) <= RAW_KEEP
    huge_pin_list = make_report(rule=["x" * 100] * 600)
    cut = parse_report(json.dumps(huge_pin_list).encode()).raw
    assert len(cut) <= RAW_KEEP
    assert "[cut:" in cut


def test_retention_deletes_old_reports_and_keeps_new_ones(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any
) -> None:
    """With retention_days, reports older than that and their incidents go in the
    background; recent ones stay. Without it nothing is deleted (twin)."""
    db = Database(sqlite_url)
    now = dt.datetime.now(dt.UTC)
    old = db.store_report(parse_report(json.dumps(make_report(hostname=unique_host())).encode()),
                          received_at=now - dt.timedelta(days=3), client_ip=None)
    new = db.store_report(parse_report(json.dumps(make_report(hostname=unique_host())).encode()),
                          received_at=now, client_ip=None)
    db.dispose()
    keeping = serve(db_url=sqlite_url)
    assert keeping.count(Report) == 2
    keeping.stop()
    server = serve(db_url=sqlite_url, retention_days=1)
    deadline = time.monotonic() + 15
    while server.count(Report) + server.count(Incident) > 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    with server.state.db.read() as conn:
        assert conn.execute(select(Report.id)).scalars().all() == [new.report_id]
        assert conn.execute(select(Incident.id)).scalars().all() == [new.incident_id]
    assert old.report_id != new.report_id


# -- 13: serve logs the collector's warnings, cleaned ----------------------------------------------

def test_serve_shows_collector_warnings_cleaned(
    collectors: list[Collector], tmp_path: Path
) -> None:
    """The collector's warnings (here: a database file others could read, tightened) reach
    `tlspin serve`'s output; they used to be dropped by the CLI's NullHandler."""
    db = tmp_path / "loose.db"
    db.write_bytes(b"")
    db.chmod(0o644)
    collector = Collector(f"sqlite:///{db}", free_port())
    collectors.append(collector)
    assert "was readable by other users (mode 0644); made it 0600" in collector.text()


def test_log_lines_show_control_characters_as_escapes() -> None:
    """A logged value holding a line break, an ANSI escape or a bidi override is shown as
    escapes on one line; an ordinary message is unchanged (twin)."""
    from tlspin.collector.logs import CleanFormatter

    formatter = CleanFormatter("%(message)s")

    def line(message: str, *args: Any) -> str:
        return formatter.format(logging.LogRecord("tlspin", logging.WARNING, __file__, 1,
                                                  message, args, None))

    assert line("bad %s", "x\n2024 INFO forged\x1b[31m\u202e") == \
        "bad x\\n2024 INFO forged\\x1b[31m\\u202e"
    assert line("plain %d reports", 3) == "plain 3 reports"


# -- 17: worker caches --------------------------------------------------------------------------

def test_large_distinct_certificates_are_not_cached(make_report: Any) -> None:
    """Attack: thousands of distinct 46 KB certificates grew the worker's certificate cache
    by the certificates themselves (+147 MB). Keys are now SHA-256 digests, and large
    certificates are not cached; the usual small chain still is (twin: parsed once)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from tlspin.collector import formats

    key = ec.generate_private_key(ec.SECP256R1())
    moment = dt.datetime(2024, 1, 1)
    formats._CERT_CACHE.clear()
    for index in range(5):
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"{index}" + "o" * 60)
                          for _ in range(300)])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(index + 1)
                .not_valid_before(moment).not_valid_after(moment + dt.timedelta(days=1))
                .sign(key, hashes.SHA256()))
        pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        assert len(pem) > 20_000
        parse_report(json.dumps(make_report(served_certificate_chain=[pem])).encode())
    assert all(len(k) == 32 for k in formats._CERT_CACHE)
    assert sum(len(v[0]) + len(v[1]) for v in formats._CERT_CACHE.values()) < 20_000
    before = len(formats._CERT_CACHE)
    for cache in formats._CHAIN_CACHES:
        cache.clear()
    first = parse_report(json.dumps(make_report()).encode())
    again = parse_report(json.dumps(make_report()).encode())
    assert len(formats._CERT_CACHE) > before
    assert first.served_chain is again.served_chain or first.validated_chain is \
        again.validated_chain


# -- 18: webhook secrets in error messages ----------------------------------------------------

def test_a_mistyped_webhook_url_is_not_printed_with_its_secret(tmp_path: Path) -> None:
    """Attack (on the operator): a webhook URL with http:// to a remote host is refused, and
    the message used to print it whole, secret path and query included. It names the scheme
    and host only."""
    secret = "T000/B000/XXXXSECRETXXXX"
    run = subprocess.run(
        [sys.executable, "-m", "tlspin", "serve", "--db", f"sqlite:///{tmp_path}/w.db",
         "--port", "9", "--webhook", f"http://hooks.example.com/services/{secret}?k=hush"],
        capture_output=True, text=True, check=False, timeout=60,
        env={**os.environ, "TLSPIN_COLLECTOR_TOKEN": TOKEN})
    output = run.stdout + run.stderr
    assert run.returncode == 2, output
    assert "must use https://" in output
    assert "http://hooks.example.com/…" in output
    assert secret not in output
    assert "hush" not in output
