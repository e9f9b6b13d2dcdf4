"""``tlspin monitor`` end to end: exit codes, JSON, state, the collector database and API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tlspin.cli import main
from tlspin.collector.monitor_runs import latest_monitor_results, monitor_history
from tlspin.collector.storage import Database
from tlspin.testing.servers import TLSServer

HOST = "api.example.test"
TOKEN = "monitor-test-token-0123456789"


def write_setup(directory: Path, pki, server: TLSServer, pins: str) -> list[str]:
    """Write policy (with *pins* as TOML), endpoints and CA files; return the CLI arguments."""
    directory.mkdir(parents=True, exist_ok=True)
    policy = directory / "pins.toml"
    policy.write_text(f'[[rule]]\nhosts = ["{HOST}"]\npins = {pins}\n')
    endpoints = directory / "endpoints.toml"
    endpoints.write_text(
        f'policy_hosts = false\n[[endpoint]]\nhost = "{HOST}"\nport = {server.port}\n'
        'ips = ["127.0.0.1"]\n'
    )
    cafile = pki.root.write(directory, name="root")
    return ["monitor", str(policy), "--endpoints", str(endpoints), "--cafile", str(cafile)]


def invoke(args: list[str], **env: str) -> Any:
    """Run the CLI in-process."""
    return CliRunner().invoke(main, args, env=env or None, catch_exceptions=False)


def test_exit_codes_json_and_state_file(pki, tmp_path) -> None:
    """Green exits 0, amber 1, red 2; --json prints the results; the state file keeps them."""
    leaf = pki.int1.issue(HOST)
    state = tmp_path / "state.json"
    endpoint = None
    with TLSServer(leaf) as server:
        endpoint = f"{HOST}:{server.port}@127.0.0.1"
        green = write_setup(tmp_path / "g", pki, server, f'["{leaf.pin}", "{pki.backup.pin}"]')
        no_backup = f'["{leaf.pin}", {{ pin = "{pki.int2.pin}", role = "intermediate" }}]'
        amber = write_setup(tmp_path / "a", pki, server, no_backup)
        red = write_setup(tmp_path / "r", pki, server, f'["{pki.int2.pin}", "{pki.backup.pin}"]')
        first = invoke([*green, "--json", "--state", str(state)])
        second = invoke([*amber, "--state", str(state)])
        third = invoke([*red, "--json", "--state", str(state)])
    assert first.exit_code == 0, first.output
    doc = json.loads(first.stdout)
    assert doc["run"]["status"] == "green"
    assert doc["results"][0]["endpoint"] == endpoint
    assert doc["results"][0]["matched"] == [{"pin": leaf.pin, "depth": 0}]
    assert second.exit_code == 1, second.output
    assert "no-redundancy" in second.stdout
    assert third.exit_code == 2, third.output
    assert json.loads(third.stdout)["results"][0]["status"] == "red"
    stored = json.loads(state.read_text())["results"]
    assert stored[endpoint]["status"] == "red"


@pytest.mark.parametrize(
    "extra",
    [
        ["--interval", "soon"],
        ["--db", "sqlite://", "--collector", "http://127.0.0.1:9/"],
        ["--concurrency", "0"],
        ["--no-such-option"],
    ],
)
def test_bad_options_exit_64(pki, tmp_path, extra: list[str]) -> None:
    """Bad options exit 64, distinct from the health codes 0/1/2."""
    leaf = pki.int1.issue(HOST)
    with TLSServer(leaf) as server:
        args = write_setup(tmp_path, pki, server, f'["{leaf.pin}", "{pki.backup.pin}"]')
        result = invoke([*args, "--state", str(tmp_path / "s.json"), *extra])
    assert result.exit_code == 64, result.output


def test_bad_input_files_exit_64(pki, tmp_path) -> None:
    """An unreadable policy or endpoints file exits 64 with a one-line error."""
    leaf = pki.int1.issue(HOST)
    with TLSServer(leaf) as server:
        args = write_setup(tmp_path, pki, server, f'["{leaf.pin}", "{pki.backup.pin}"]')
    (tmp_path / "endpoints.toml").write_text('[[endpoint]]\nhost = "elsewhere.example.org"\n')
    bad_endpoints = invoke([*args, "--state", str(tmp_path / "s.json")])
    missing = invoke(["monitor", str(tmp_path / "missing.toml")])
    (tmp_path / "pins.toml").write_text("[[rule]]\nhosts = 3\n")
    bad_policy = invoke([*args, "--state", str(tmp_path / "s.json")])
    for result in (bad_endpoints, missing, bad_policy):
        assert result.exit_code == 64, result.output
        assert "Traceback" not in result.output
    assert "not covered by any rule" in bad_endpoints.stderr


def test_runs_stored_in_collector_database(pki, tmp_path) -> None:
    """--db stores every run; the latest results and history come back, changes included."""
    leaf = pki.int1.issue(HOST)
    url = f"sqlite:///{tmp_path / 'collector.db'}"
    with TLSServer(leaf) as server:
        args = write_setup(tmp_path, pki, server, f'["{leaf.pin}", "{pki.backup.pin}"]')
        first = invoke([*args, "--db", url])
        server.set_leaf(pki.int1.reissue(leaf, same_key=False))
        second = invoke([*args, "--db", url, "--json"])
        endpoint = f"{HOST}:{server.port}@127.0.0.1"
    assert first.exit_code == 0, first.output
    assert second.exit_code == 2, second.output
    db = Database(url)
    try:
        (latest,) = latest_monitor_results(db)
        history = monitor_history(db, endpoint)
    finally:
        db.dispose()
    assert latest["endpoint"] == endpoint
    assert latest["status"] == "red"
    assert any(c.startswith("new-key:") for c in latest["changes"])
    assert [h["status"] for h in history] == ["red", "green"]
    assert not (tmp_path / "state.json").exists()


def test_webhook_alert_from_the_cli(pki, tmp_path, webhook) -> None:
    """--webhook posts an alert when an endpoint is red."""
    leaf = pki.int1.issue(HOST)
    with TLSServer(leaf) as server:
        args = write_setup(tmp_path, pki, server, f'["{pki.int2.pin}", "{pki.backup.pin}"]')
        result = invoke([*args, "--state", str(tmp_path / "s.json"), "--webhook", webhook.url])
    assert result.exit_code == 2, result.output
    (body,) = webhook.wait_for(1)
    assert body["kind"] == "monitor.red"
    assert body["payload"]["status"] == "red"


class Collector:
    """The real collector app served by uvicorn on 127.0.0.1 in a thread."""

    def __init__(self, db_url: str) -> None:
        import uvicorn

        from tlspin.collector.app import create_app
        from tlspin.collector.settings import Settings

        app = create_app(Settings(db_url=db_url, token=TOKEN))
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the collector did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/"

    def stop(self) -> None:
        """Stop uvicorn and wait for its thread."""
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def collector(tmp_path) -> Iterator[tuple[Collector, str]]:
    """A running collector and its database URL."""
    url = f"sqlite:///{tmp_path / 'api.db'}"
    running = Collector(url)
    yield running, url
    running.stop()


def test_a_refused_upload_closes_its_response_at_once(tmp_path, collector) -> None:
    """A run the collector refuses raises StoreError with the status and closes the refused
    response at once; the twin with the right token is stored."""
    import urllib.error

    from tlspin.monitor.store import CollectorStore, StateFile, StoreError

    running, _ = collector
    run = {"started_at": "2026-11-27T00:00:00+00:00", "finished_at": "2026-11-27T00:00:01+00:00",
           "status": "green", "endpoints": 0}
    refused = CollectorStore(running.url, token="wrong-token-0123456789",
                             state=StateFile(tmp_path / "refused.json"))
    with pytest.raises(StoreError, match="HTTP 401") as caught:
        refused.save(run, [])
    error = caught.value.__context__
    assert isinstance(error, urllib.error.HTTPError)
    assert error.fp is None or error.fp.closed
    taken = CollectorStore(running.url, token=TOKEN, state=StateFile(tmp_path / "taken.json"))
    taken.save(run, [])
    assert (tmp_path / "taken.json").exists()
    assert not (tmp_path / "refused.json").exists()


def test_runs_sent_to_collector_api(pki, tmp_path, collector) -> None:
    """--collector POSTs the run with the token; a wrong token is refused with exit 74."""
    running, url = collector
    leaf = pki.int1.issue(HOST)
    with TLSServer(leaf) as server:
        args = write_setup(tmp_path, pki, server, f'["{leaf.pin}", "{pki.backup.pin}"]')
        state = ["--state", str(tmp_path / "s.json")]
        ok = invoke([*args, *state, "--collector", running.url], TLSPIN_COLLECTOR_TOKEN=TOKEN)
        refused = invoke([*args, *state, "--collector", running.url],
                         TLSPIN_COLLECTOR_TOKEN="wrong-token-0123456789")
    assert ok.exit_code == 0, ok.output
    assert refused.exit_code == 74, refused.output
    assert "401" in refused.stderr or "403" in refused.stderr
    db = Database(url)
    try:
        rows = latest_monitor_results(db)
    finally:
        db.dispose()
    assert [(r["endpoint"], r["status"]) for r in rows] == [
        (f"{HOST}:{server.port}@127.0.0.1", "green")
    ]


def test_daemon_stores_every_run_until_sigterm(pki, tmp_path) -> None:
    """--interval keeps running, stores each run in the database, and exits 0 on SIGTERM."""
    leaf = pki.int1.issue(HOST)
    url = f"sqlite:///{tmp_path / 'daemon.db'}"
    with TLSServer(leaf) as server:
        args = write_setup(tmp_path, pki, server, f'["{leaf.pin}", "{pki.backup.pin}"]')
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "tlspin", *args, "--db", url, "--interval", "0.3s", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )
        try:
            runs = 0
            deadline = time.monotonic() + 60
            while runs < 2 and time.monotonic() < deadline and proc.poll() is None:
                line = proc.stdout.readline() if proc.stdout else b""
                if line.startswith(b"{"):
                    runs += 1
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        endpoint = f"{HOST}:{server.port}@127.0.0.1"
    assert runs == 2, err.decode()
    assert proc.returncode == 0, err.decode()
    db = Database(url)
    try:
        history = monitor_history(db, endpoint)
    finally:
        db.dispose()
    assert len(history) >= 2
    assert {h["status"] for h in history} == {"green"}


def test_damaged_state_file_exits_74_and_is_kept(pki, tmp_path) -> None:
    """A state file that is not monitor state stops the run with 74 and is left as it was."""
    leaf = pki.int1.issue(HOST)
    state = tmp_path / "state.json"
    state.write_text("{not json")
    with TLSServer(leaf) as server:
        args = write_setup(tmp_path, pki, server, f'["{leaf.pin}", "{pki.backup.pin}"]')
        result = invoke([*args, "--state", str(state)])
    assert result.exit_code == 74, result.output
    assert "not valid JSON" in result.stderr
    assert state.read_text() == "{not json"


def test_state_file_is_private_and_never_written_through_a_symlink(tmp_path: Path) -> None:
    """The monitor's state file is 0600 from the start and replaces (never follows) a symlink."""
    import stat

    from tlspin.monitor.store import write_json_atomic

    victim = tmp_path / "victim"
    victim.write_text("precious")
    state = tmp_path / "state.json"
    state.symlink_to(victim)
    write_json_atomic(state, {"results": []})
    assert victim.read_text() == "precious"
    assert not state.is_symlink()
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
