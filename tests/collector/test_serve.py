"""``tlspin serve`` and the files the collector writes: private modes, a missing extra, bad
database URLs, what it says about the token, and /metrics access."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tlspin.collector.models import Report
from tlspin.collector.tokenfile import TOKEN_FILE_NAME

from .conftest import TOKEN, LiveServer
from .proc import Collector, free_port

METRICS_TOKEN = "metrics-token-" + "m" * 24


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _modes(*paths: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in paths}


def test_the_sqlite_database_and_its_wal_files_are_private(
    serve: Callable[..., LiveServer], tmp_path: Path, make_report: Any
) -> None:
    """Under the usual umask (022), the collector creates its SQLite database, and so its
    -wal and -shm files, readable by its owner only."""
    db = tmp_path / "fresh.db"
    with _umask(0o022):
        server = serve(db_url=f"sqlite:///{db}")
        with server.client() as client:
            assert client.post("/reports", json=make_report()).status_code == 201
        wal, shm = db.with_name("fresh.db-wal"), db.with_name("fresh.db-shm")
        assert _modes(db, wal, shm) == {"fresh.db": 0o600, "fresh.db-wal": 0o600,
                                        "fresh.db-shm": 0o600}
    assert server.count(Report) == 1  # twin: the owner reads and writes it as before


def test_an_existing_database_readable_by_others_is_tightened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A database that an older version left 0644 (and its -wal) becomes 0600, with a
    warning; its reports are kept."""
    from tlspin.collector.storage import Database

    db = tmp_path / "old.db"
    old = Database(f"sqlite:///{db}")
    old.migrate()
    old.dispose()
    os.chmod(db, 0o644)
    db.with_name("old.db-wal").write_bytes(b"")
    os.chmod(db.with_name("old.db-wal"), 0o644)
    with caplog.at_level(logging.WARNING, logger="tlspin.collector"):
        again = Database(f"sqlite:///{db}")
    try:
        assert again.revision() is not None
    finally:
        again.dispose()
    assert _modes(db)["old.db"] == 0o600
    assert f"{db} was readable by other users (mode 0644); made it 0600" in caplog.text


def test_serve_writes_only_private_files(tmp_path: Path, collectors: list[Collector],
                                         make_report: Any) -> None:
    """Everything ``tlspin serve`` writes (the database, its -wal and -shm, the generated
    token file, a metrics token file) is mode 0600 under umask 022."""
    import json

    with _umask(0o022):
        collector = Collector(f"sqlite:///{tmp_path}/served.db", free_port(), token=None,
                              args=["--metrics-token-file", str(tmp_path / "metrics.token")])
    collectors.append(collector)
    assert collector.post(json.dumps(make_report()).encode())[0] == 201
    written = sorted(p for p in tmp_path.iterdir())
    assert [p.name for p in written] == sorted([
        "metrics.token", "served.db", "served.db-shm", "served.db-wal", TOKEN_FILE_NAME])
    assert set(_modes(*written).values()) == {0o600}


# -- the collector extra ---------------------------------------------------------------------

def test_serve_without_the_collector_extra_says_what_to_install(tmp_path: Path) -> None:
    """In a fresh venv with only tlspin[cli] installed, ``tlspin serve`` names the extra to
    install (exit 2), not a ModuleNotFoundError; the other commands still run there."""
    import tlspin

    source = Path(tlspin.__file__).resolve().parents[2]
    venv = tmp_path / "cli-only"
    # No pip in the venv (quicker): this interpreter's pip installs into it.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--disable-pip-version-check", "--no-input", "-e", f"{source}[cli]"],
        check=True, capture_output=True,
    )
    missing = subprocess.run([str(python), "-c", "import uvicorn"], capture_output=True,
                             text=True, check=False)
    assert "No module named 'uvicorn'" in missing.stderr  # the venv really lacks the extra
    result = subprocess.run([str(python), "-m", "tlspin", "serve", "--db",
                             f"sqlite:///{tmp_path}/x.db"],
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: tlspin serve needs the collector extra (uvicorn is not installed): "
        "pip install 'tlspin[collector]'")
    assert not (tmp_path / "x.db").exists()
    other = subprocess.run([str(python), "-m", "tlspin", "pin", "--help"],
                           capture_output=True, text=True, check=False, timeout=60)
    assert other.returncode == 0, other.stderr


# -- database URLs ---------------------------------------------------------------------------

def _serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    from tlspin.cli.serve import serve

    return CliRunner().invoke(
        serve, ["--port", str(free_port()), *args],
        env={"TLSPIN_COLLECTOR_TOKEN": "", "XDG_STATE_HOME": str(tmp_path / "state"),
             **(env or {})},
    )


@pytest.mark.parametrize(
    ("url", "found"),
    [("mysql://root:hunter2@db.example/tlspin",
      "found 'mysql://root:***@db.example/tlspin': the collector stores reports in SQLite or "
      "PostgreSQL (through psycopg 3), not mysql"),
     ("notaurl", "found 'notaurl', which is not a URL"),
     ("", "found '', which is not a URL"),
     ("sqlite+aiosqlite:////nonexistent/x.db", "not sqlite+aiosqlite"),
     ("postgresql+asyncpg://u:pw@127.0.0.1/db", "found 'postgresql+asyncpg://u:***@127.0.0.1/db'"),
     ("http://127.0.0.1/", "not http"),
     ("mysql//root:hunter2@db", "found 'mysql//root:***@db', which is not a URL")],
)
def test_serve_explains_a_bad_database_url(tmp_path: Path, url: str, found: str) -> None:
    """A URL that is not SQLite or PostgreSQL exits 2 with what was expected and what was
    found (password hidden), not an "unexpected" error."""
    result = _serve(tmp_path, "--db", url)
    assert result.exit_code == 2
    assert result.output.startswith(
        "error: --db: expected a database URL sqlite:///FILE or postgresql://USER@HOST/DB, ")
    assert found in result.output
    assert "unexpected" not in result.output
    assert "hunter2" not in result.output
    assert not (tmp_path / "state").exists()  # refused before any file is made


# -- the token, as the login page explains it -----------------------------------------------

def test_login_page_names_every_token_source(shared_sqlite: LiveServer) -> None:
    """The login page tells where the token is: --token-file, the variable, --token, or the
    file serve generated."""
    with shared_sqlite.client(token=None) as client:
        page = client.get("/login").text
    for source in ("--token-file", "TLSPIN_COLLECTOR_TOKEN", "--token",
                   TOKEN_FILE_NAME, "$XDG_STATE_HOME/tlspin/"):
        assert f"<code>{source}</code>" in page


# -- /metrics --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("options", "credentials", "status"),
    [({}, None, 401), ({}, "wrong-token-wrong-token", 401), ({}, TOKEN, 200),
     ({"metrics_token": METRICS_TOKEN}, None, 401),
     ({"metrics_token": METRICS_TOKEN}, METRICS_TOKEN, 200),
     ({"metrics_token": METRICS_TOKEN}, TOKEN, 200),
     ({"metrics_public": True}, None, 200)],
)
def test_metrics_need_a_token_unless_made_public(
    serve: Callable[..., LiveServer], sqlite_url: str, options: dict[str, Any],
    credentials: str | None, status: int,
) -> None:
    """/metrics answers 401 without a token; the collector token, the metrics token (when
    set) and metrics_public open it."""
    server = serve(db_url=sqlite_url, **options)
    with server.client(token=credentials) as client:
        response = client.get("/metrics")
    assert response.status_code == status
    assert ("tlspin_reports_received_total" in response.text) == (status == 200)


def test_the_metrics_token_opens_nothing_else(
    serve: Callable[..., LiveServer], sqlite_url: str
) -> None:
    """The metrics token is no collector token: the query API and dashboard refuse it."""
    server = serve(db_url=sqlite_url, metrics_token=METRICS_TOKEN)
    with server.client(token=METRICS_TOKEN) as client:
        assert client.get("/api/incidents").status_code == 401
        assert client.get("/dashboard", follow_redirects=False).status_code == 303
        assert client.post("/api/incidents/1/resolve").status_code == 401


def test_serve_metrics_token_file(tmp_path: Path, collectors: list[Collector]) -> None:
    """``--metrics-token-file`` gives Prometheus a token of its own; --metrics-public opens
    /metrics to all."""
    path = tmp_path / "prometheus.token"
    path.touch(mode=0o600)
    path.write_text(METRICS_TOKEN + "\n")
    guarded = Collector(f"sqlite:///{tmp_path}/a.db", free_port(),
                        args=["--metrics-token-file", str(path)])
    public = Collector(f"sqlite:///{tmp_path}/b.db", free_port(), args=["--metrics-public"])
    collectors.extend([guarded, public])
    assert [guarded.status(t, "/metrics") for t in (METRICS_TOKEN, TOKEN, "x" * 20)] == [
        200, 200, 401]
    assert guarded.status(METRICS_TOKEN) == 401  # /api/incidents
    assert public.status(None, "/metrics") == 200
    assert METRICS_TOKEN not in guarded.text()
    assert f"/metrics also takes the token in {path}" in guarded.text()
