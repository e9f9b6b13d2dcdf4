"""Fixtures for the collector tests: real databases, real reports, a live uvicorn server."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import sys
import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import tlspin
from _httpd import JSONSink
from tlspin.exceptions import SinglePinWarning
from tlspin.reporting import build_report
from tlspin.testing.pki import CA, Leaf

TOKEN = "test-token-" + "x" * 24
HOST = "api.tlspin.test"


@dataclass
class PKI:
    """A real chain for HOST, and a MITM chain for the same name from another CA."""

    root: CA
    intermediate: CA
    leaf: Leaf
    mitm: CA
    mitm_leaf: Leaf
    backup_pin: str

    @property
    def good_chain(self) -> list[bytes]:
        """The genuine verified chain, leaf first, root included."""
        return [*self.leaf.chain_der, self.root.cert_der]

    @property
    def mitm_chain(self) -> list[bytes]:
        """What a client behind the interceptor verifies."""
        return [*self.mitm_leaf.chain_der, self.mitm.cert_der]


@pytest.fixture(scope="session")
def pki() -> PKI:
    """One PKI for the collector suite (EC keys)."""
    root = CA.root("tlspin test root")
    intermediate = root.intermediate("tlspin test issuing CA")
    mitm = CA.root("mitmproxy")
    return PKI(
        root=root,
        intermediate=intermediate,
        leaf=intermediate.issue(HOST),
        mitm=mitm,
        mitm_leaf=mitm.issue(HOST),
        backup_pin=CA.root("offline backup").pin,
    )


def violation_for(
    pki: PKI, *, host: str = HOST, port: int = 443, mitm: bool = True, mode: str = "report"
) -> tlspin.Violation:
    """A real Violation from the pin check of a real chain (the MITM one by default)."""
    seen: list[tlspin.Violation] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinglePinWarning)
        rule = tlspin.PinRule(host, [pki.intermediate.pin, pki.backup_pin], mode=mode)  # type: ignore[arg-type]
    policy = tlspin.PinPolicy([rule], observers=[seen.append])
    chain = pki.mitm_chain if mitm else [pki.mitm_leaf.cert_der, pki.mitm.cert_der]
    try:
        policy.check(host, chain, port=port)
    except tlspin.PinMismatchError:
        pass
    assert seen, "the chain was expected to fail the pins"
    return seen[0]


@pytest.fixture(scope="session")
def make_report(pki: PKI) -> Callable[..., dict[str, Any]]:
    """Build a tlspin report dict from a real violation; keyword arguments override fields."""
    base = build_report(violation_for(pki), app_id="com.example.app", app_version="1.0")

    def make(**fields: Any) -> dict[str, Any]:
        report = dict(base)
        report.update({k.replace("_", "-"): v for k, v in fields.items()})
        return report

    return make


@pytest.fixture(scope="session")
def format_reports(pki: PKI, make_report: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """One valid report of each format the collector takes, as its senders write them."""
    from tlspin.reporting import _pem

    chain = [_pem(d) for d in pki.mitm_chain]
    pins = [f'pin-sha256="{pki.intermediate.pin[7:]}"', f'pin-sha256="{pki.backup_pin[7:]}"']
    trustkit = {
        "app-bundle-id": "com.example.ios", "app-version": "4.2", "app-platform": "IOS",
        "app-platform-version": "17.4", "app-vendor-id": "0A1B2C3D-0000-0000-0000-000000000000",
        "trustkit-version": "3.0.3", "date-time": "2024-03-01T10:11:12Z", "hostname": HOST,
        "port": 443, "noted-hostname": HOST, "include-subdomains": False,
        "enforce-pinning": True, "validated-certificate-chain": chain, "known-pins": pins,
        "validation-result": 1, "known-pins-expiration-date": "2025-01-01",
    }
    return {
        "tlspin": make_report(),
        "hpkp": {  # RFC 7469 §3.1
            "date-time": "2024-03-01T10:11:12Z", "hostname": HOST, "port": 8443,
            "effective-expiration-date": "2024-06-01T00:00:00Z", "include-subdomains": True,
            "noted-hostname": "tlspin.test", "served-certificate-chain": chain,
            "validated-certificate-chain": chain, "known-pins": pins,
        },
        "trustkit-ios": trustkit,
        "trustkit-android": {  # PinningFailureReport.java: port 0, a served chain too
            **trustkit, "app-platform": "ANDROID", "port": 0, "enforce-pinning": False,
            "validation-result": 2, "date-time": "2024-03-01T10:11:12-0700",
            "served-certificate-chain": chain[:2],
        },
    }


def _pg_url() -> str:
    base = os.environ.get("TLSPIN_TEST_PG_URL")
    if not base:
        if os.environ.get("CI"):
            pytest.fail("CI is set but TLSPIN_TEST_PG_URL is not: PostgreSQL tests cannot run")
        pytest.skip("TLSPIN_TEST_PG_URL is not set (scripts/test starts PostgreSQL)")
    return base


@contextlib.contextmanager
def _pg_schema() -> Iterator[str]:
    import psycopg

    base = _pg_url()
    schema = "t_" + secrets.token_hex(6)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    options = urllib.parse.quote(f"-csearch_path={schema}")
    try:
        yield f"{base}{'&' if '?' in base else '?'}options={options}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh, private schema (dropped afterwards)."""
    with _pg_schema() as url:
        yield url


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite database migrated once; tests get copies (migrating each costs ~0.2 s)."""
    from tlspin.collector.storage import Database

    path = tmp_path_factory.mktemp("template") / "template.db"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    db.dispose()  # the last connection to close checkpoints the WAL into the file
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path, _sqlite_template: Path) -> str:
    """A fresh SQLite database file at the newest schema."""
    target = tmp_path / "collector.db"
    shutil.copyfile(_sqlite_template, target)
    return f"sqlite:///{target}"


def unique_host() -> str:
    """A host name no other test uses (for tests sharing a server)."""
    return f"h{secrets.token_hex(4)}.tlspin.test"


@pytest.fixture(scope="session")
def shared_sqlite(
    tmp_path_factory: pytest.TempPathFactory, _sqlite_template: Path
) -> Iterator[LiveServer]:
    from tlspin.collector import Settings, create_app

    target = tmp_path_factory.mktemp("shared") / "shared.db"
    shutil.copyfile(_sqlite_template, target)
    server = LiveServer(create_app(Settings(
        db_url=f"sqlite:///{target}", token=TOKEN, ip_rate_limit=(100_000, 1.0))))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def shared_pg() -> Iterator[LiveServer]:
    from tlspin.collector import Settings, create_app

    with _pg_schema() as url:
        server = LiveServer(create_app(Settings(
            db_url=url, token=TOKEN, ip_rate_limit=(100_000, 1.0))))
        yield server
        server.stop()
        server.state.db.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared(request: pytest.FixtureRequest) -> LiveServer:
    """A collector shared by many tests, on each database (use unique_host() for isolation)."""
    return request.getfixturevalue("shared_pg" if request.param == "postgres" else "shared_sqlite")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each database the collector supports: an SQLite file, and PostgreSQL."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database (no schema yet) on each database kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/empty.db"
    return str(request.getfixturevalue("pg_url"))


class LiveServer:
    """A collector app served by uvicorn in a thread, on a socket bound to 127.0.0.1, behind
    the connection limits ``tlspin serve`` uses (:class:`~tlspin.collector.limits.GuardedHTTP`)."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        from tlspin.collector.limits import GuardedHTTP

        self.app = app
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP.
        # Without it each response's second write waited for the client's delayed ACK
        # (about 40 ms per request on Linux), as uvicorn's own listening sockets never do.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # proxy_headers=False, as `tlspin serve` has it: uvicorn's own X-Forwarded-For
        # handling would rewrite the client address before the collector sees the peer.
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                http=GuardedHTTP, ws="none", proxy_headers=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    @property
    def state(self) -> Any:
        """The app's CollectorState."""
        return self.app.state.tlspin

    def count(self, model: Any) -> int:
        """How many rows of *model* the app's database holds."""
        from sqlalchemy import func, select

        with self.state.db.read() as conn:
            return int(conn.execute(select(func.count()).select_from(model)).scalar_one())

    def client(self, *, token: str | None = TOKEN) -> httpx.Client:
        """An HTTP client for this server, with the bearer token unless *token* is None."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def stop(self) -> None:
        """Shut uvicorn down and wait for its thread."""
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., LiveServer]]:
    """Start collector apps (``serve(**settings)``); all are stopped after the test."""
    from tlspin.collector import Settings, create_app

    servers: list[LiveServer] = []

    def start(**options: Any) -> LiveServer:
        options.setdefault("token", TOKEN)
        options.setdefault("ip_rate_limit", (100_000, 1.0))
        server = LiveServer(create_app(Settings(**options)))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


class WebhookReceiver(JSONSink):
    """An HTTP server on 127.0.0.1 that records JSON POSTs and answers with scripted codes."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        super().__init__(statuses, path="/hook")


@pytest.fixture
def webhook() -> Iterator[Callable[..., WebhookReceiver]]:
    """Start webhook receivers (optionally with scripted status codes)."""
    made: list[WebhookReceiver] = []

    def make(statuses: list[int] | None = None) -> WebhookReceiver:
        receiver = WebhookReceiver(statuses)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.close()


PYTHON = sys.executable


@pytest.fixture
def collectors() -> Iterator[list[Any]]:
    """``tlspin serve`` subprocesses (:class:`~.proc.Collector`) started by the test; all are
    stopped afterwards."""
    started: list[Any] = []
    yield started
    for collector in started:
        collector.stop()
