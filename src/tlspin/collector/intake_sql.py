"""Intake SQL on the drivers: one transaction per batch, with nothing between it and the driver.

Intake is the collector's hot path. Through SQLAlchemy a batch costs a pool checkout, event
dispatch and, on PostgreSQL, several sequential round trips (pre-ping, ``BEGIN``, one upsert
per incident, the inserts, ``COMMIT``); measured, that was most of the time a batch took.
Each :class:`BatchStore` keeps one connection from the engine's pool (so it went through the
same connect hooks as any other) and runs the whole transaction on the DB-API connection:

* PostgreSQL: one statement per batch, in autocommit, so one round trip and its own
  transaction (see :func:`_pg_batch_sql`);
* SQLite: ``BEGIN IMMEDIATE`` (no lock upgrade that can fail under contention), the
  statements, ``COMMIT``, under the database's in-process write lock.

Values are bound exactly as SQLAlchemy would bind them (the tests compare the SQLite
timestamp text with SQLAlchemy's own), so rows written here read back like any other.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

__all__ = [
    "REPORT_COLUMNS", "BatchStore", "PgBatchStore", "SqliteBatchStore", "naive_utc",
    "timestamp_text",
]

#: The ``reports`` columns a report row carries, in order.
REPORT_COLUMNS = (
    "received_at", "client_time", "kind", "hostname", "port", "noted_hostname",
    "include_subdomains", "mode", "reason", "app_id", "app_version", "client_ip",
    "observed_pins", "known_pins", "chain", "issuer", "incident_id", "raw",
)
_JSON_COLUMNS = frozenset({"observed_pins", "known_pins", "chain"})
_INCIDENT = REPORT_COLUMNS.index("incident_id")

# Incidents group by key; a resolved incident that happens again opens anew (and alerts
# again). Each driver supplies the rows between the two halves: SQLite one VALUES row per
# incident, PostgreSQL all of the batch's incidents from one JSON document.
_UPSERT_INTO = """
INSERT INTO incidents (key, hostname, observed_pins, expected_pins, first_seen, last_seen,
                       count, status, opened_at, resolved_at)
"""
_UPSERT_CONFLICT = """
ON CONFLICT (key) DO UPDATE SET
    count = incidents.count + excluded.count,
    last_seen = CASE WHEN incidents.last_seen > excluded.last_seen
                     THEN incidents.last_seen ELSE excluded.last_seen END,
    status = 'open',
    opened_at = CASE WHEN CAST(incidents.status AS TEXT) = 'resolved'
                     THEN excluded.opened_at ELSE incidents.opened_at END,
    resolved_at = NULL
"""

# PostgreSQL: the whole batch is one statement, so one round trip and (in autocommit) its own
# transaction. The incidents and the report rows each travel as one JSON document, which
# json_to_recordset() turns back into typed rows: one C encoder call here and one parse there,
# where a bound array per column cost the driver's Python array dumper about 18 µs a column
# a batch. Only the raw bodies travel as a (binary) text array: a JSON body inside a JSON
# document would be escaped here and unescaped there, the costliest field of the row both
# ways. Timestamps are the same text as SQLite gets (timestamp_text). The report ids are drawn
# from the sequence up front, numbered, so that they come back in the order of the rows:
# RETURNING promises no order. Incident keys are sorted by the caller, so concurrent
# collectors lock incident rows in the same order and cannot deadlock.
# Every function is named with its schema (pg_catalog.…), and every operator compares values
# of exactly its own types: another role that can create objects in a schema on the search
# path could otherwise shadow a built-in with a better-matching signature (CVE-2018-1058),
# which would then run as the collector.
_PG_TYPES = {
    "received_at": "timestamp", "client_time": "timestamp", "kind": "text",
    "hostname": "text", "port": "int4", "noted_hostname": "text",
    "include_subdomains": "bool", "mode": "text", "reason": "text", "app_id": "text",
    "app_version": "text", "client_ip": "text", "observed_pins": "text",
    "known_pins": "text", "chain": "text", "issuer": "text", "incident_id": "text",
}
#: The report columns in the JSON document: all but ``raw``, the last.
_PG_DOC_COLUMNS = REPORT_COLUMNS[:-1]
assert REPORT_COLUMNS[-1] == "raw"  # the batch code relies on it
#: The keys of an incident in the batch document, in upsert order.
_PG_INCIDENT_KEYS = ("k", "h", "op", "ep", "fs", "ls", "c")


def _pg_batch_sql() -> str:
    """The batch statement. Only constant column names, types and placeholders go into
    it; every value is bound: two JSON documents, the id sequence, the row count and the
    raw bodies."""
    columns = ", ".join(REPORT_COLUMNS)
    selected = ", ".join(
        "inc.id" if name == "incident_id"
        else f"r.{name}::json" if name in _JSON_COLUMNS else f"r.{name}"
        for name in REPORT_COLUMNS
    )
    typed = ", ".join(f"{name} {_PG_TYPES[name]}" for name in _PG_DOC_COLUMNS)
    upsert = (
        _UPSERT_INTO  # noqa: S608 - constant SQL: no value goes into the text
        + "SELECT k, h, op::json, ep::json, fs, ls, c, 'open', fs, NULL FROM "
        "pg_catalog.json_to_recordset("
        "%s::json) AS u(k text, h text, op text, ep text, fs timestamp, ls timestamp, c int4)"
        + _UPSERT_CONFLICT + "RETURNING id, key, count, opened_at"
    )
    parts = [
        "WITH inc AS (", upsert, "), ",
        "ids AS (SELECT n, pg_catalog.nextval(%s::pg_catalog.oid::pg_catalog.regclass) AS id",
        " FROM pg_catalog.generate_series(1, %s::int4) AS n), ",
        "rep AS (INSERT INTO reports (id, ", columns, ") SELECT ids.id, ", selected,
        " FROM ROWS FROM (pg_catalog.json_to_recordset(%s::json) AS (", typed,
        "), pg_catalog.unnest(%b::text[]))",
        " WITH ORDINALITY AS r(", columns, ", n)",
        " JOIN ids ON ids.n = r.n JOIN inc ON inc.key::text = r.incident_id RETURNING id) ",
        "SELECT id, key, count, opened_at, NULL::int8[], NULL::int8 FROM inc UNION ALL ",
        "SELECT NULL, NULL, NULL, NULL, pg_catalog.array_agg(id ORDER BY n),",
        " (SELECT pg_catalog.count(*) FROM rep)",
        " FROM ids",
    ]
    return "".join(parts)


_PG_BATCH = _pg_batch_sql()
_SQLITE_UPSERT = (
    _UPSERT_INTO + "VALUES (?, ?, ?, ?, ?, ?, ?, 'open', ?, NULL)" + _UPSERT_CONFLICT
    + "RETURNING id, count, opened_at"
)
_SQLITE_INSERT = (
    f"INSERT INTO reports ({', '.join(REPORT_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' for _ in REPORT_COLUMNS)})"
)

#: What an upsert tells about its incident: (id, count after the batch, opened by it).
IncidentResult = tuple[int, int, bool]


def naive_utc(value: dt.datetime | None) -> dt.datetime | None:
    """Naive UTC, as the ``UTCDateTime`` columns store it."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(dt.UTC).replace(tzinfo=None)


class BatchStore:
    """Stores report batches on one connection kept from *engine*'s pool.

    The connection is taken on first use and kept; after any error it is given back as
    invalid, and the next batch takes a fresh one. *lock* serialises the batches (and, on
    SQLite, every other writer of this process).
    """

    def __init__(self, engine: Engine, lock: contextlib.AbstractContextManager[Any]) -> None:
        self._engine = engine
        self._lock = lock
        self._raw: Any = None

    #: What errors name as the failed statement.
    _statement = "report intake batch"

    def store(
        self, incidents: Sequence[Mapping[str, Any]], reports: Sequence[tuple[Any, ...]]
    ) -> tuple[list[IncidentResult], list[int]]:
        """Upsert *incidents*, insert *reports*, commit; return one :data:`IncidentResult`
        per incident and the report ids, in order.

        Each report row follows :data:`REPORT_COLUMNS`, with its incident's key in place of
        the incident id.

        Raises:
            DBAPIError: the database refused (nothing of the batch is stored).
        """
        dbapi = self._engine.dialect.loaded_dbapi
        with self._lock:
            if self._raw is None:
                self._raw = self._engine.raw_connection()
            try:
                return self._transaction(self._raw.driver_connection, incidents, reports)
            except dbapi.Error as exc:
                self._discard()
                raise DBAPIError.instance(self._statement, None, exc, dbapi.Error) from exc
            except BaseException:
                self._discard()
                raise

    def _transaction(
        self, driver: Any, incidents: Sequence[Mapping[str, Any]],
        reports: Sequence[tuple[Any, ...]],
    ) -> tuple[list[IncidentResult], list[int]]:
        raise NotImplementedError

    def _discard(self) -> None:
        raw, self._raw = self._raw, None
        try:
            raw.invalidate()
        except Exception:  # noqa: BLE001, S110 - already broken: nothing left to close
            pass

    def close(self) -> None:
        """Give the kept connection back to the pool."""
        with self._lock:
            raw, self._raw = self._raw, None
            if raw is None:
                return
            try:
                self._release(raw.driver_connection)
            except Exception:  # noqa: BLE001 - broken: the pool must not get it back
                raw.invalidate()
                return
            raw.close()

    def _release(self, driver: Any) -> None:
        """Undo what this store changed on the connection before the pool gets it back."""


class PgBatchStore(BatchStore):
    """PostgreSQL: the whole batch as one statement, in one network round trip.

    The kept connection is in autocommit mode, so the statement is its own transaction:
    all of the batch or none of it.
    """

    def __init__(self, engine: Engine, lock: contextlib.AbstractContextManager[Any]) -> None:
        super().__init__(engine, lock)
        # Per kept connection: its cursor, and the OID of the report id sequence.
        self._cursor: Any = None
        self._sequence = 0

    def _cursor_for(self, driver: Any) -> Any:
        """The kept connection's cursor, set up on first use of that connection.

        One cursor for all batches: its adapters, found by type on the first execution, are
        kept, where a new cursor looked them up again (about 50 µs of the worker's Python a
        batch, more than a whole report's parse).
        """
        cursor = self._cursor
        if cursor is not None and cursor.connection is driver:
            return cursor
        driver.autocommit = True
        if _has_plan_cache_mode(driver):
            # The statement's plan does not depend on the values (two JSON documents, an
            # OID and a count), and planning it afresh for each batch, as PostgreSQL does
            # for a prepared statement's first executions and may keep doing, cost about as
            # much as storing several reports.
            driver.execute("SET plan_cache_mode = force_generic_plan")
        # Looked up once, rather than by name in the statement, for each row.
        row = driver.execute(
            "SELECT pg_catalog.pg_get_serial_sequence('reports', 'id')::pg_catalog.regclass"
            "::pg_catalog.oid"
        ).fetchone()
        self._sequence = int(row[0])
        self._cursor = cursor = driver.cursor()
        return cursor

    def _transaction(
        self, driver: Any, incidents: Sequence[Mapping[str, Any]],
        reports: Sequence[tuple[Any, ...]],
    ) -> tuple[list[IncidentResult], list[int]]:
        cursor = self._cursor_for(driver)
        upserts = [_upsert_values(i) for i in incidents]
        incident_doc = _json([
            dict(zip(_PG_INCIDENT_KEYS, values[:7], strict=True))
            for values in upserts
        ])
        report_doc = _json([
            dict(zip(_PG_DOC_COLUMNS, (timestamp_text(row[0]), timestamp_text(row[1]),
                                       *row[2:-1]), strict=True))
            for row in reports
        ])
        raw = [row[-1] for row in reports]
        rows = cursor.execute(
            _PG_BATCH, [incident_doc, self._sequence, len(reports), report_doc, raw],
            prepare=True,
        ).fetchall()
        by_key = {row[1]: row for row in rows if row[1] is not None}
        ids, inserted = next(row[4:] for row in rows if row[1] is None)
        if inserted != len(reports) or len(by_key) != len(upserts):  # Defensive
            msg = (f"intake batch: expected {len(reports)} reports and {len(upserts)} "
                   f"incidents, stored {inserted} and {len(by_key)}")
            raise RuntimeError(msg)
        found: list[IncidentResult] = []
        for values in upserts:
            incident_id, _, count, opened_at = by_key[values[0]][:4]
            found.append((int(incident_id), int(count),
                          timestamp_text(opened_at) == values[-1]))
        return found, [int(i) for i in ids]

    def _discard(self) -> None:
        self._cursor = None
        super()._discard()

    def _release(self, driver: Any) -> None:
        self._cursor = None
        if driver.autocommit and _has_plan_cache_mode(driver):
            driver.execute("RESET plan_cache_mode")
        driver.autocommit = False


def _has_plan_cache_mode(driver: Any) -> bool:
    """Whether the server has the ``plan_cache_mode`` setting (PostgreSQL 12 and later)."""
    return bool(driver.info.server_version >= 120000)


class SqliteBatchStore(BatchStore):
    """SQLite: ``BEGIN IMMEDIATE`` … ``COMMIT`` on the kept connection, under the write lock.

    The connection must be in autocommit mode at the driver (the engine's connect hook sets
    ``isolation_level = None``), so that these statements alone decide the transaction.
    """

    def _transaction(
        self, driver: Any, incidents: Sequence[Mapping[str, Any]],
        reports: Sequence[tuple[Any, ...]],
    ) -> tuple[list[IncidentResult], list[int]]:
        cursor = driver.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")
            try:
                found: list[IncidentResult] = []
                id_of: dict[str, int] = {}
                for incident in incidents:
                    values = _upsert_values(incident)
                    cursor.execute(_SQLITE_UPSERT, values)
                    incident_id, count, opened_at = cursor.fetchone()
                    found.append((int(incident_id), int(count), opened_at == values[-1]))
                    id_of[incident["key"]] = int(incident_id)
                ids = []
                for row in reports:
                    cursor.execute(_SQLITE_INSERT, (
                        timestamp_text(row[0]), timestamp_text(row[1]), *row[2:_INCIDENT],
                        id_of[row[_INCIDENT]], *row[_INCIDENT + 1 :],
                    ))
                    ids.append(int(cursor.lastrowid))
                cursor.execute("COMMIT")
            except BaseException:
                if driver.in_transaction:
                    driver.rollback()
                raise
        finally:
            cursor.close()
        return found, ids


def timestamp_text(value: dt.datetime | None) -> str | None:
    """The text SQLAlchemy stores in SQLite for a ``UTCDateTime`` value (naive UTC, with
    microseconds), made by the C ``isoformat`` rather than by SQLAlchemy's processor chain,
    which cost several microseconds a value on the intake path. The tests hold the two equal.
    PostgreSQL reads the same text as a ``timestamp`` in the batch's JSON documents.
    """
    naive = naive_utc(value)
    return None if naive is None else naive.isoformat(" ", "microseconds")


def _upsert_values(incident: Mapping[str, Any]) -> tuple[Any, ...]:
    first_at = timestamp_text(incident["first_seen"])
    return (
        incident["key"], incident["hostname"], _json(incident["observed_pins"]),
        _json(incident["expected_pins"]), first_at, timestamp_text(incident["last_seen"]),
        incident["count"], first_at,
    )


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))

