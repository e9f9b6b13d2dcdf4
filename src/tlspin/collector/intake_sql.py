"""Intake SQL for the drivers: PostgreSQL in one network round trip per batch.

Through SQLAlchemy a batch costs several sequential round trips (pool pre-ping, ``BEGIN``,
one upsert per incident, the report insert, ``COMMIT``), and on loopback the waiting, not
the SQL, is most of the time. Here the whole transaction goes out at once in psycopg's
pipeline mode on one connection kept for intake: ``BEGIN``, the incident upserts, the
report inserts (each report finds its incident by key, inside the same transaction), then
``COMMIT``; the results come back together after the commit.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

__all__ = ["SQLITE_UPSERT", "PgIntake", "naive_utc"]

# Incidents group by key; a resolved incident that happens again opens anew (and alerts again).
_UPSERT = """
INSERT INTO incidents (key, hostname, observed_pins, expected_pins, first_seen, last_seen,
                       count, status, opened_at, resolved_at)
VALUES (%s, %s, %s::json, %s::json, %s, %s, %s, 'open', %s, NULL)
ON CONFLICT (key) DO UPDATE SET
    count = incidents.count + excluded.count,
    last_seen = CASE WHEN incidents.last_seen > excluded.last_seen
                     THEN incidents.last_seen ELSE excluded.last_seen END,
    status = 'open',
    opened_at = CASE WHEN incidents.status = 'resolved'
                     THEN excluded.opened_at ELSE incidents.opened_at END,
    resolved_at = NULL
RETURNING id, count, opened_at
"""

#: The upsert for SQLite's driver: no casts, qmark parameters.
SQLITE_UPSERT = _UPSERT.replace("::json", "").replace("%s", "?")

_INSERT = """
INSERT INTO reports (received_at, client_time, kind, hostname, port, noted_hostname,
                     include_subdomains, mode, reason, app_id, app_version, client_ip,
                     observed_pins, known_pins, chain, issuer, incident_id, raw)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::json, %s::json, %s::json, %s,
        (SELECT id FROM incidents WHERE key = %s), %s)
RETURNING id
"""


def naive_utc(value: dt.datetime | None) -> dt.datetime | None:
    """Naive UTC, as the ``UTCDateTime`` columns store it."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(dt.UTC).replace(tzinfo=None)


class PgIntake:
    """Stores report batches on one connection of *engine*, one round trip per batch.

    The connection is taken from the engine's pool on first use and kept; after any error
    it is given back as invalid, and the next batch takes a fresh one.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._raw: Any = None

    def store(
        self, incidents: Sequence[Mapping[str, Any]], reports: Sequence[tuple[Any, ...]]
    ) -> tuple[list[tuple[int, int, dt.datetime | None]], list[int]]:
        """Upsert *incidents*, insert *reports*, commit; return what the upserts returned
        (id, count, opened_at as naive UTC) and the report ids, in order.

        Each report row ends with its incident's key in place of the incident id.

        Raises:
            DBAPIError: the database refused (nothing of the batch is stored).
        """
        upserts = [
            (i["key"], i["hostname"], _json(i["observed_pins"]), _json(i["expected_pins"]),
             naive_utc(i["first_seen"]), naive_utc(i["last_seen"]), i["count"],
             naive_utc(i["opened_at"]))
            for i in incidents
        ]
        rows = [(naive_utc(r[0]), naive_utc(r[1]), *r[2:]) for r in reports]
        with self._lock:
            if self._raw is None:
                self._raw = self._engine.raw_connection()
            pg = self._raw.driver_connection
            dbapi = self._engine.dialect.loaded_dbapi
            try:
                cursors = [pg.cursor() for _ in upserts]
                inserts = pg.cursor()
                with pg.pipeline():
                    for cursor, values in zip(cursors, upserts, strict=True):
                        cursor.execute(_UPSERT, values)
                    inserts.executemany(_INSERT, rows, returning=True)
                    pg.commit()
                found = [tuple(cursor.fetchone()) for cursor in cursors]
                ids = []
                while True:
                    ids.append(int(inserts.fetchone()[0]))
                    if not inserts.nextset():
                        break
            except dbapi.Error as exc:
                self._discard()
                raise DBAPIError.instance(_INSERT, None, exc, dbapi.Error) from exc
            except BaseException:
                self._discard()
                raise
        return [(int(f[0]), int(f[1]), f[2]) for f in found], ids

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
            if raw is not None:
                raw.close()


def _json(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))
