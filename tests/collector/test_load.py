"""Load on loopback: concurrent senders lose nothing, and a collector restart mid-load keeps
every acknowledged report; plus ``tlspin serve`` start-up rules."""

from __future__ import annotations

import http.client
import json
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from tlspin.collector.models import Report
from tlspin.collector.storage import Database
from tlspin.collector.tokenfile import TOKEN_FILE_NAME

from .conftest import TOKEN, LiveServer, unique_host
from .proc import Collector, free_port


class Sender(threading.Thread):
    """Posts reports over one keep-alive connection, reconnecting on errors, until stopped."""

    def __init__(self, port: int, body: Callable[[str], bytes], name: str,
                 stop: threading.Event, limit: int | None = None) -> None:
        super().__init__(daemon=True)
        self.port, self.body, self.tag, self.stop, self.limit = port, body, name, stop, limit
        self.acked: dict[str, int] = {}  # marker -> stored report id
        self.errors = 0
        self.refused = 0

    def run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        n = 0
        while not self.stop.is_set() and (self.limit is None or len(self.acked) < self.limit):
            marker = f"{self.tag}-{n}"
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("POST", "/reports", body=self.body(marker),
                             headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
                if response.status == 201:
                    self.acked[marker] = json.loads(data)["id"]
                else:
                    self.refused += 1
                n += 1
            except (OSError, http.client.HTTPException):
                self.errors += 1
                n += 1  # that marker may or may not have been stored: never reuse it
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)
        if conn is not None:
            conn.close()


def _stored(db_url: str) -> dict[str, int]:
    db = Database(db_url)
    try:
        with db.read() as conn:
            rows = conn.execute(select(Report.id, Report.app_version))
            return {v: i for i, v in rows if v is not None}
    finally:
        db.dispose()


@pytest.mark.parametrize("senders", [8])
def test_concurrent_senders_lose_nothing(
    serve: Callable[..., LiveServer], db_url: str, make_report: Any, senders: int
) -> None:
    """N concurrent senders: every 201 is stored (same ids), and nothing else is."""
    server = serve(db_url=db_url)
    host = unique_host()

    def body(marker: str) -> bytes:
        return json.dumps(make_report(hostname=host, app_version=marker)).encode()

    stop = threading.Event()
    threads = [Sender(server.port, body, f"s{i}", stop, limit=25) for i in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    acked = {m: i for t in threads for m, i in t.acked.items()}
    assert len(acked) == senders * 25
    assert sum(t.errors + t.refused for t in threads) == 0
    assert _stored(db_url) == acked
    with server.client() as client:
        incidents = client.get("/api/incidents", params={"host": host}).json()["items"]
    assert [i["count"] for i in incidents] == [senders * 25]


def test_restart_mid_load_keeps_every_acknowledged_report(
    sqlite_url: str, make_report: Any, collectors: list[Collector]
) -> None:
    """SIGKILL the collector under load and start it again: every 201 is in the database."""
    port = free_port()
    collectors.append(Collector(sqlite_url, port))

    def body(marker: str) -> bytes:
        return json.dumps(make_report(app_version=marker)).encode()

    stop = threading.Event()
    threads = [Sender(port, body, f"r{i}", stop) for i in range(4)]
    for t in threads:
        t.start()

    def total() -> int:
        return sum(len(t.acked) for t in threads)

    deadline = time.monotonic() + 60
    while total() < 60 and time.monotonic() < deadline:
        time.sleep(0.02)
    collectors[0].kill()
    before = total()
    collectors.append(Collector(sqlite_url, port))
    while total() < before + 60 and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    for t in threads:
        t.join(30)
    collectors[1].stop()

    acked = {m: i for t in threads for m, i in t.acked.items()}
    stored = _stored(sqlite_url)
    assert total() >= before + 60, "the restarted collector did not take load"
    assert sum(t.errors for t in threads) > 0, "the senders never saw the collector go down"
    missing = {m for m in acked if stored.get(m) != acked[m]}
    assert not missing, f"{len(missing)} acknowledged reports lost"
    for c in collectors:
        output = c.text()
        assert TOKEN not in output  # a given token is never printed
        assert "a token was configured (TLSPIN_COLLECTOR_TOKEN)" in output
    assert not (Path(sqlite_url.removeprefix("sqlite:///")).parent / TOKEN_FILE_NAME).exists()


def test_serve_writes_a_generated_token_to_a_private_file_and_never_prints_it(
    tmp_path: Path, collectors: list[Collector]
) -> None:
    """Without a token, serve writes one to a 0600 file by the database, prints only the path,
    and a restart reuses it."""
    collector = Collector(f"sqlite:///{tmp_path}/gen.db", free_port(), token=None)
    collectors.append(collector)
    token_file = tmp_path / TOKEN_FILE_NAME
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 32
    text = collector.text()
    assert token not in text
    assert f"paste the token from {token_file}" in text
    assert f"http://127.0.0.1:{collector.port}/login" in text
    assert "generated one into" in text
    assert collector.status(token) == 200
    assert collector.status("nope-nope-nope-nope") == 401
    collector.stop()

    again = Collector(f"sqlite:///{tmp_path}/gen.db", free_port(), token=None)
    collectors.append(again)
    assert again.status(token) == 200  # the same token, read back from the file
    text = again.text()
    assert token not in text
    assert "generated one into" not in text
    assert ("no token was configured, so the token is the one an earlier run generated into "
            f"{token_file}") in text
    assert f"paste the token from {token_file}" in text


def test_serve_token_file_option_creates_then_reads_the_file(
    tmp_path: Path, collectors: list[Collector]
) -> None:
    """--token-file FILE is created (0600) with a new token when missing, and read when present."""
    made = tmp_path / "made.token"
    first = Collector(f"sqlite:///{tmp_path}/a.db", free_port(), token=None,
                      args=["--token-file", str(made)])
    collectors.append(first)
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    generated = made.read_text().strip()
    assert first.status(generated) == 200
    text = first.text()
    assert generated not in text
    assert (f"--token-file {made} did not exist, so this run generated a new token into it "
            "(mode 0600)") in text
    assert "no token was configured" not in text
    assert not (tmp_path / TOKEN_FILE_NAME).exists()  # the default file is not made as well

    given = tmp_path / "given.token"
    given.touch(mode=0o600)
    given.write_text(TOKEN + "\n")
    second = Collector(f"sqlite:///{tmp_path}/b.db", free_port(), token=None,
                       args=["--token-file", str(given)])
    collectors.append(second)
    assert second.status(TOKEN) == 200
    assert second.status(generated) == 401
    text = second.text()
    assert TOKEN not in text
    assert f"paste the token from {given}" in text
    assert "generated" not in text
    assert "no token was configured" not in text


@pytest.mark.postgres
def test_serve_keeps_a_postgres_collectors_token_in_the_state_directory(
    pg_url: str, tmp_path: Path, collectors: list[Collector], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With PostgreSQL there is no database file: the token file goes to $XDG_STATE_HOME/tlspin."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    collector = Collector(pg_url, free_port(), token=None)
    collectors.append(collector)
    token_file = tmp_path / "state" / "tlspin" / TOKEN_FILE_NAME
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    token = token_file.read_text().strip()
    assert collector.status(token) == 200
    assert collector.status(token.upper() + "x") == 401
    text = collector.text()
    assert token not in text
    assert f"paste the token from {token_file}" in text


def _serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    from tlspin.cli.serve import serve

    return CliRunner().invoke(
        serve, ["--db", f"sqlite:///{tmp_path}/x.db", "--port", str(free_port()), *args],
        env={"TLSPIN_COLLECTOR_TOKEN": "", **(env or {})},
    )


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_serve_refuses_a_token_file_others_can_access(tmp_path: Path, mode: int) -> None:
    """Twin: a token file readable or writable by group or others is refused, its content
    unprinted, and a generated default file is not reused either."""
    given = tmp_path / "loose.token"
    given.write_text(TOKEN + "\n")
    given.chmod(mode)
    result = _serve(tmp_path, "--token-file", str(given))
    assert result.exit_code == 2
    assert f"found mode {mode:04o}" in result.output
    assert TOKEN not in result.output
    assert not (tmp_path / "x.db").exists()  # refused before the database is touched

    default = tmp_path / TOKEN_FILE_NAME
    default.write_text(TOKEN + "\n")
    default.chmod(mode)
    result = _serve(tmp_path)
    assert result.exit_code == 2
    assert f"{default}: a token file must be readable by its owner only" in result.output
    assert TOKEN not in result.output
    assert default.read_text() == TOKEN + "\n"  # left alone for its owner to inspect


def test_serve_refuses_two_token_sources(tmp_path: Path) -> None:
    """--token-file together with TLSPIN_COLLECTOR_TOKEN is ambiguous: exit 2, nothing written."""
    given = tmp_path / "t.token"
    result = _serve(tmp_path, "--token-file", str(given),
                    env={"TLSPIN_COLLECTOR_TOKEN": TOKEN})
    assert result.exit_code == 2
    assert "found both TLSPIN_COLLECTOR_TOKEN and --token-file" in result.output
    assert TOKEN not in result.output
    assert not given.exists()
    assert not (tmp_path / "x.db").exists()


def test_serve_refuses_a_public_address_without_a_token(tmp_path: Path) -> None:
    """A non-loopback bind without a token exits 2 and explains; nothing listens."""
    from tlspin.cli.serve import serve

    result = CliRunner().invoke(
        serve, ["--host", "0.0.0.0", "--db", f"sqlite:///{tmp_path}/x.db"],  # not bound: refused
        env={"TLSPIN_COLLECTOR_TOKEN": ""},
    )
    assert result.exit_code == 2
    assert "refusing to listen on 0.0.0.0 without a token" in result.output
    assert not (tmp_path / "x.db").exists()


def test_settings_reach_worker_processes_with_the_token_apart() -> None:
    """Settings survive the trip to worker processes; the token never enters the JSON."""
    from tlspin.collector import Settings

    metrics_token = "metrics-token-" + "m" * 20
    settings = Settings(db_url="sqlite:///x.db", token=TOKEN, webhooks=("http://127.0.0.1:9/h",),
                        alert_rate_threshold=(5, 60.0), drop_client_ip=True,
                        metrics_token=metrics_token, max_connections_per_ip=None,
                        body_timeout=3.5)
    env = settings.to_env()
    assert TOKEN not in env["TLSPIN_COLLECTOR_SETTINGS"]
    assert metrics_token not in env["TLSPIN_COLLECTOR_SETTINGS"]
    assert Settings.from_env(env) == settings
    with pytest.raises(ValueError, match="unexpected keyword"):
        Settings.from_env({"TLSPIN_COLLECTOR_SETTINGS": '{"surprise": 1}'})
    with pytest.raises(ValueError, match="at least 16"):
        Settings(token="short")
