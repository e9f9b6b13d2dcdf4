"""Storage: engines, migrations and report intake (SQLite or PostgreSQL).

Nothing is kept in process memory that another collector process would need: incidents are
grouped with one atomic upsert, so several processes can share one PostgreSQL database. A
report is acknowledged only after its transaction commits.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from tlspin.collector.formats import CertInfo, ParsedReport
from tlspin.collector.intake_sql import BatchStore, PgBatchStore, SqliteBatchStore
from tlspin.collector.models import Incident, Report

__all__ = [
    "Database",
    "Stored",
    "Target",
    "alembic_config",
    "check_url",
    "normalise_url",
]

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger("tlspin.collector")

_MIGRATION_LOCK = 74_690_005  # pg_advisory_xact_lock key: one migrator at a time


def normalise_url(url: str) -> str:
    """Map ``postgresql://`` and ``postgres://`` to the psycopg 3 driver; leave others alone."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


_EXPECTED_URL = "expected a database URL sqlite:///FILE or postgresql://USER@HOST/DB"
# The drivers the collector is built and tested with (SQLAlchemy's names).
_DRIVERS = {"sqlite": ("", "pysqlite"), "postgresql": ("psycopg",)}


def _redacted(url: str) -> str:
    """*url* with any password replaced, for messages (a URL that does not parse may still
    hold one between ':' and '@')."""
    return re.sub(r":[^/@]*@", ":***@", url)[:200]


def check_url(url: str) -> str:
    """Return the SQLAlchemy form of a collector database URL, or say why it is not one.

    Raises:
        ValueError: not a URL, or not an SQLite or PostgreSQL (psycopg 3) one; the message
            shows the URL with its password hidden.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not isinstance(url, str) or "\x00" in url:
        msg = f"{_EXPECTED_URL}, found {url!r:.200}"
        raise ValueError(msg)
    normal = normalise_url(url.strip())
    try:
        backend, _, driver = make_url(normal).drivername.partition("+")
    except (ArgumentError, ValueError, TypeError):
        msg = f"{_EXPECTED_URL}, found {_redacted(url)!r}, which is not a URL"
        raise ValueError(msg) from None
    if driver not in _DRIVERS.get(backend, ()):
        scheme = normal.partition("://")[0]
        msg = (
            f"{_EXPECTED_URL}, found {_redacted(url)!r}: the collector stores reports in "
            f"SQLite or PostgreSQL (through psycopg 3), not {scheme}"
        )
        raise ValueError(msg)
    return normal


def _private_sqlite_file(path: Path) -> None:
    """Create or vet the SQLite database *path* and its ``-wal``, ``-shm`` and ``-journal``
    files: regular files of this user, mode 0600, reached through no symbolic link.

    SQLite would create the file with the process umask (usually 0644: every local user could
    read the reports and the senders' addresses), follow a link planted at the path (creating
    the database, then its ``-wal`` and ``-shm``, wherever the link points), and use a file
    another user created and can still write. So the file is opened here first with
    ``O_NOFOLLOW`` (created empty if missing: SQLite takes an empty file as an empty
    database), checked through its descriptor, and tightened through the descriptor; the
    same rules as the token files (:mod:`tlspin.collector.tokenfile`).

    Raises:
        ValueError: a symbolic link, something else than a regular file, or a file another
            user owns.
    """
    if os.name != "posix":
        return  # Defensive: no POSIX modes or owners; the directory's ACLs decide
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError(_unsafe(path, "is a symbolic link")) from None
        return  # no such directory, read-only...: SQLite says so when it opens the file
    try:
        _vet_fd(fd, path)
    finally:
        os.close(fd)
    for name in (path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal")):
        try:
            info = os.lstat(name)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(info.st_mode):
            raise ValueError(_unsafe(name, "is a symbolic link"))
        fd = os.open(name, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            _vet_fd(fd, name)
        finally:
            os.close(fd)


def _unsafe(path: Path, what: str) -> str:
    return (f"expected the SQLite database {str(path)!r} to be a regular file of this user "
            f"(uid {os.geteuid()}), reached through no symbolic link, but it {what}; "
            "remove it or choose another --db path")


def _vet_fd(fd: int, path: Path) -> None:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(_unsafe(path, "is not a regular file"))
    if info.st_uid != os.geteuid():
        raise ValueError(_unsafe(path, f"belongs to uid {info.st_uid}"))
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        os.fchmod(fd, 0o600)
        log.warning("%s was readable by other users (mode %04o); made it 0600", path, mode)


def _sqlite_creator(path: Path) -> Any:
    """A connection factory that opens *path* with SQLite's ``nofollow``: a symbolic link
    planted there after the checks is refused, not followed."""
    import sqlite3
    import urllib.parse

    uri = f"file:{urllib.parse.quote(str(path.absolute()))}?nofollow=1"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=30)

    return connect


def alembic_config() -> Config:
    """The Alembic configuration of the collector's migrations (set its ``connection``
    attribute to run a command on a connection)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    return config


@dataclass(frozen=True, slots=True)
class Stored:
    """What :meth:`Database.store_report` did."""

    report_id: int
    incident_id: int
    incident_count: int
    opened: bool


class Database:
    """An engine plus the collector's write discipline.

    SQLite takes one writer at a time, so writes use ``BEGIN IMMEDIATE`` (no lock upgrades
    that fail under contention) behind an in-process lock; WAL mode lets dashboard reads run
    alongside. PostgreSQL needs neither.

    Args:
        url: SQLAlchemy URL; ``postgresql://`` URLs use psycopg 3.
    """

    def __init__(self, url: str) -> None:
        self.url = check_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        memory = self.url in ("sqlite://", "sqlite:///:memory:")  # one private database
        #: The database lives in this process's memory: no other process can open it.
        self.in_memory = memory or (self.is_sqlite and "mode=memory" in self.url)
        if self.is_sqlite:
            from sqlalchemy.engine import make_url

            database = make_url(self.url).database or ""
            plain_file = not self.in_memory and database and not database.startswith("file:")
            if plain_file:
                _private_sqlite_file(Path(database))
            self.engine = create_engine(
                self.url,
                connect_args={"check_same_thread": False, "timeout": 30},
                poolclass=StaticPool if memory else None,
                **({"creator": _sqlite_creator(Path(database))} if plain_file else {}),
            )
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        else:
            self.engine = create_engine(
                self.url, pool_size=10, max_overflow=20, pool_pre_ping=True
            )
            event.listen(self.engine, "connect", _pg_connect)
        self._writer = self.engine.execution_options(tlspin_write=True)
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self.is_sqlite else contextlib.nullcontext()
        )
        self._batches: BatchStore = (
            SqliteBatchStore(self.engine, self._lock) if self.is_sqlite
            else PgBatchStore(self.engine, self._lock)
        )

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A connection inside a write transaction, committed on normal exit."""
        with self._lock, self._writer.begin() as conn:
            yield conn

    def read(self) -> Connection:
        """A connection for reading (use it as a context manager)."""
        return self.engine.connect()

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to *revision* (Alembic), keeping all data.

        Safe to call from several processes at once: PostgreSQL serialises migrators with an
        advisory lock, SQLite with its write lock.
        """
        from alembic import command

        config = alembic_config()
        with self.write() as conn:
            if not self.is_sqlite:
                conn.execute(text("SELECT pg_catalog.pg_advisory_xact_lock(:k)"),
                             {"k": _MIGRATION_LOCK})
            config.attributes["connection"] = conn
            command.upgrade(config, revision)

    def revision(self) -> str | None:
        """The schema revision the database is at, or None before the first migration."""
        from alembic.runtime.migration import MigrationContext

        with self.read() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self._batches.close()
        self.engine.dispose()

    # -- intake ------------------------------------------------------------------------
    def store_report(
        self, report: ParsedReport, *, received_at: dt.datetime, client_ip: str | None
    ) -> Stored:
        """Store *report* and fold it into its incident, in one transaction."""
        return self.store_reports([(report, received_at, client_ip)])[0]

    def store_reports(
        self, items: Sequence[tuple[ParsedReport, dt.datetime, str | None]]
    ) -> list[Stored]:
        """Store several reports in one transaction (one commit: group commit).

        Each incident is upserted once per batch with the batch's count for it, then the
        reports are inserted; see :mod:`tlspin.collector.intake_sql`. Returns one
        :class:`Stored` per item, in order.
        """
        groups: dict[str, list[int]] = {}
        key_of: list[str] = []
        for index, (report, _, _) in enumerate(items):
            key = report.incident_key()
            groups.setdefault(key, []).append(index)
            key_of.append(key)
        # Sorted: concurrent writers then lock incident rows in one order (no deadlocks).
        keys = sorted(groups)
        found, ids = self._batches.store(
            [self._incident_values(key, items, groups[key]) for key in keys],
            [_report_row(item, key_of[index]) for index, item in enumerate(items)],
        )
        incident_of: dict[int, tuple[int, int, bool]] = {}
        for (incident_id, count, opened), key in zip(found, keys, strict=True):
            members = groups[key]
            # Give each report of the batch its place in the incident's count.
            for position, index in enumerate(members):
                incident_of[index] = (
                    incident_id, count - len(members) + 1 + position, opened and not position
                )
        return [Stored(ids[i], *incident_of[i]) for i in range(len(items))]

    @staticmethod
    def _incident_values(
        key: str, items: Sequence[tuple[ParsedReport, dt.datetime, str | None]],
        members: list[int],
    ) -> dict[str, Any]:
        """The upsert's values for one incident: its reports of this batch, folded."""
        report, first_at, _ = items[members[0]]
        return {
            "key": key,
            "hostname": report.hostname,
            "observed_pins": report.observed_pins,
            "expected_pins": sorted(set(report.known_pins)),
            "first_seen": first_at,
            "last_seen": max(items[i][1] for i in members),
            "count": len(members),
        }

    def resolve_incident(self, incident_id: int, *, now: dt.datetime | None = None) -> bool:
        """Mark an incident resolved; False if there is no such incident."""
        from sqlalchemy import update

        with self.write() as conn:
            result = conn.execute(
                update(Incident)
                .where(Incident.id == incident_id)
                .values(status="resolved", resolved_at=now or dt.datetime.now(dt.UTC))
            )
            return bool(result.rowcount)

    def open_incidents(self) -> int:
        """How many incidents are open."""
        with self.read() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(Incident).where(Incident.status == "open")
                ).scalar_one()
            )

    def host_reports_since(self, hostname: str, since: dt.datetime) -> int:
        """How many reports *hostname* received since *since*."""
        with self.read() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(Report)
                    .where(Report.hostname == hostname, Report.received_at >= since)
                ).scalar_one()
            )


def _report_row(
    item: tuple[ParsedReport, dt.datetime, str | None], incident: object
) -> tuple[Any, ...]:
    """A ``reports`` row in :data:`~tlspin.collector.intake_sql.REPORT_COLUMNS` order (JSON
    columns as JSON text)."""
    report, received_at, client_ip = item
    observed_json, chain_json = _chain_json(report)
    return (
        received_at, report.client_time, report.kind, report.hostname, report.port,
        report.noted_hostname, report.include_subdomains, report.mode, report.reason,
        report.app_id, report.app_version, client_ip, observed_json,
        _pins_json(report.known_pins), chain_json, report.issuer, incident, report.raw,
    )


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# JSON text of chains and pin lists, by value: a burst of reports from one incident repeats
# them, and serialising them again is a good part of the cost of storing a report.
_CHAIN_JSON: dict[tuple[CertInfo, ...], tuple[str, str]] = {}
_PINS_JSON: dict[tuple[str, ...], str] = {}
_JSON_CACHE_ENTRIES = 1024


def _chain_json(report: ParsedReport) -> tuple[str, str]:
    """JSON text of the report's observed pins and of its displayed chain."""
    chain = report.served_chain or report.validated_chain
    known = _CHAIN_JSON.get(chain)
    if known is None:
        known = (_json_text(report.observed_pins), _json_text(report.chain))
        if len(_CHAIN_JSON) >= _JSON_CACHE_ENTRIES:
            _CHAIN_JSON.clear()
        _CHAIN_JSON[chain] = known
    return known


def _pins_json(pins: tuple[str, ...]) -> str:
    known = _PINS_JSON.get(pins)
    if known is None:
        known = _json_text(list(pins))
        if len(_PINS_JSON) >= _JSON_CACHE_ENTRIES:
            _PINS_JSON.clear()
        _PINS_JSON[pins] = known
    return known


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control away from the driver so that "begin" below decides.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    # WAL is a property of the file: set it once. Switching needs an exclusive lock and does
    # not always wait for one (two processes opening a new database at once), so retry.
    for attempt in range(100):
        if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() in ("wal", "memory"):
            break
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except dbapi_connection.OperationalError:  # "database is locked"
            if attempt == 99:
                raise
            time.sleep(0.02)
    # NORMAL in WAL mode: a commit survives a crash of the process (not of the OS).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _pg_connect(dbapi_connection: Any, _record: Any) -> None:
    """Narrow the search path to the schema that holds the collector's tables.

    A schema on the path where another role can create objects lets that role shadow a
    function or operator with a better-matching signature, which then runs as the collector
    (CVE-2018-1058). pg_catalog is searched first anyway; the tables' schema, the first one
    that exists on the configured path, is the only other one the collector needs. The
    intake SQL names its built-ins with their schema as well (see intake_sql).
    """
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    try:
        schema = dbapi_connection.execute("SELECT pg_catalog.current_schema()").fetchone()[0]
        if schema:
            dbapi_connection.execute(
                "SELECT pg_catalog.set_config('search_path', pg_catalog.quote_ident(%s), false)",
                [schema],
            )
    finally:
        dbapi_connection.autocommit = autocommit


def _sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get("tlspin_write")
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


# -- monitor results ---------------------------------------------------------------------

Target = Database | Engine | Connection | Session


@contextlib.contextmanager
def _connection(target: Target, *, write: bool) -> Iterator[Connection]:
    if isinstance(target, Database):
        if write:
            with target.write() as conn:
                yield conn
        else:
            with target.read() as conn:
                yield conn
    elif isinstance(target, Engine):
        with target.begin() if write else target.connect() as conn:
            yield conn
    elif isinstance(target, Session):
        yield target.connection()  # the caller's transaction; the caller commits
    else:
        yield target
