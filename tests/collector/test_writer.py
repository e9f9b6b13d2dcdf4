"""Group commit: batches on both databases, the inline gathering, and per-report retries."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.dialects import sqlite as sqlite_dialect

from tlspin.collector.formats import ParsedReport, parse_report
from tlspin.collector.intake_sql import timestamp_text
from tlspin.collector.models import Incident, Report, UTCDateTime
from tlspin.collector.storage import Database, Stored
from tlspin.collector.writer import GroupWriter

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def parsed(make_report: Callable[..., dict[str, Any]]) -> Callable[..., ParsedReport]:
    """A parsed report for *host*, marked by its app version."""

    def make(host: str, marker: str) -> ParsedReport:
        return parse_report(json.dumps(make_report(hostname=host, app_version=marker)).encode())

    return make


def _items(reports: Sequence[ParsedReport], start: int = 0) -> list[Any]:
    return [(r, NOW + dt.timedelta(seconds=start + i), "127.0.0.1") for i, r in enumerate(reports)]


def _rows(db: Database) -> dict[int, tuple[str, str | None, int]]:
    with db.read() as conn:
        return {i: (h, v, inc) for i, h, v, inc in conn.execute(
            select(Report.id, Report.hostname, Report.app_version, Report.incident_id))}


def test_a_mixed_batch_stores_every_report_under_its_own_id_and_incident(
    db_url: str, parsed: Callable[..., ParsedReport]
) -> None:
    """Interleaved incidents in one batch: each id names its own row, counts run in order."""
    db = Database(db_url)
    db.migrate()
    hosts = ["a.tlspin.test", "b.tlspin.test", "c.tlspin.test"]
    first = [parsed(hosts[i % 3], f"m{i}") for i in range(9)]
    stored = db.store_reports(_items(first))
    rows = _rows(db)
    assert len(rows) == 9
    for i, result in enumerate(stored):
        host, marker, incident = rows[result.report_id]
        assert (host, marker, incident) == (hosts[i % 3], f"m{i}", result.incident_id)
    by_host = {h: [s for i, s in enumerate(stored) if i % 3 == hosts.index(h)] for h in hosts}
    for results in by_host.values():
        assert [s.incident_count for s in results] == [1, 2, 3]
        assert [s.opened for s in results] == [True, False, False]
        assert len({s.incident_id for s in results}) == 1
    assert len({s.incident_id for s in stored}) == 3

    # A second batch continues the same incidents: nothing opens, counts go on.
    again = db.store_reports(_items([parsed(h, f"n{h}") for h in hosts], start=100))
    assert [s.incident_count for s in again] == [4, 4, 4]
    assert not any(s.opened for s in again)
    with db.read() as conn:
        incidents = conn.execute(select(Incident.hostname, Incident.count, Incident.last_seen))
        seen = {h: (c, t) for h, c, t in incidents}
    assert seen == {h: (4, NOW + dt.timedelta(seconds=100 + i)) for i, h in enumerate(hosts)}
    db.dispose()


def test_a_resolved_incident_reopens_on_its_next_report(
    db_url: str, parsed: Callable[..., ParsedReport]
) -> None:
    """A report on a resolved incident opens it again (and counts on); another host's
    report opens an incident of its own."""
    db = Database(db_url)
    db.migrate()
    [first] = db.store_reports(_items([parsed("r.tlspin.test", "1")]))
    assert first.opened
    assert db.resolve_incident(first.incident_id)
    [quiet_twin] = db.store_reports(_items([parsed("other.tlspin.test", "2")]))
    [again] = db.store_reports(_items([parsed("r.tlspin.test", "3")], start=5))
    assert (again.incident_id, again.opened, again.incident_count) == (first.incident_id, True, 2)
    assert quiet_twin.opened
    assert quiet_twin.incident_id != first.incident_id
    db.dispose()


@pytest.mark.postgres
def test_concurrent_postgres_batches_on_the_same_incidents_neither_deadlock_nor_lose(
    pg_url: str, parsed: Callable[..., ParsedReport]
) -> None:
    """Two writers (two connections) hammer the same incidents with keys in opposite orders."""
    db = Database(pg_url)
    db.migrate()
    hosts = [f"x{i}.tlspin.test" for i in range(4)]
    errors: list[BaseException] = []
    ids: list[int] = []
    lock = threading.Lock()

    def writer(order: list[str], tag: str) -> None:
        mine = Database(pg_url)
        try:
            for n in range(15):
                batch = [parsed(h, f"{tag}{n}{h}") for h in order]
                got = [s.report_id for s in mine.store_reports(_items(batch))]
                with lock:
                    ids.extend(got)
        except BaseException as exc:
            errors.append(exc)
        finally:
            mine.dispose()

    threads = [threading.Thread(target=writer, args=(hosts, "f")),
               threading.Thread(target=writer, args=(hosts[::-1], "r"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(ids) == len(set(ids)) == 120
    with db.read() as conn:
        counts = dict(conn.execute(select(Incident.hostname, Incident.count)).all())
    assert counts == dict.fromkeys(hosts, 30)
    assert set(_rows(db)) == set(ids)
    db.dispose()


_AWKWARD = [
    'quote " backslash \\ slash / tab \t newline \n',
    "<script>alert(1)</script> \u2028\u2029 ünïcødé 🔒 漢字",
    '{"looks": ["like", "json"]}',
    "",
]


@pytest.mark.parametrize("text", _AWKWARD)
def test_batch_rows_read_back_as_the_orm_would_have_stored_them(
    db_url: str, make_report: Callable[..., dict[str, Any]], text: str
) -> None:
    """Every column of a batch-stored row equals what an ORM insert of the same report
    stores, for text that JSON and SQL must escape; and a twin row inserted through the ORM
    reads back the same."""
    from sqlalchemy import insert

    from tlspin.collector.intake_sql import REPORT_COLUMNS
    from tlspin.collector.storage import _report_row  # the values the batch path binds

    db = Database(db_url)
    db.migrate()
    body = make_report(app_version=text[:100] or None, app_id=text[:200] or None,
                       **{"x-note": text})
    body["date-time"] = "2026-11-27T11:59:58.000001Z"
    report = parse_report(json.dumps(body, ensure_ascii=False).encode())
    received = NOW.replace(microsecond=0)  # zero microseconds: the format's edge
    [stored] = db.store_reports([(report, received, None)])
    row = dict(zip(REPORT_COLUMNS, _report_row((report, received, None), stored.incident_id),
                   strict=True))
    for name in ("observed_pins", "known_pins", "chain"):
        row[name] = json.loads(row[name])
    with db.write() as conn:
        twin = conn.execute(insert(Report).values(**row).returning(Report.id)).scalar_one()
    columns = [getattr(Report, name) for name in REPORT_COLUMNS]
    with db.read() as conn:
        got = conn.execute(select(*columns).where(Report.id == stored.report_id)).one()
        want = conn.execute(select(*columns).where(Report.id == twin)).one()
    assert got == want
    assert got.raw == report.raw
    assert (got.received_at, got.client_time) == (received, report.client_time)
    assert got.client_time is not None
    assert got.client_time.microsecond == 1
    db.dispose()


@pytest.mark.postgres
def test_the_kept_postgres_connection_plans_generically_and_is_reset_for_the_pool(
    pg_url: str, parsed: Callable[..., ParsedReport]
) -> None:
    """The intake connection runs the batch statement with a generic plan; the connection
    goes back to the pool with the server's default."""
    db = Database(pg_url)
    db.migrate()
    db.store_reports(_items([parsed("g.tlspin.test", "1")]))
    store = db._batches
    driver = store._raw.driver_connection
    assert driver.execute("SHOW plan_cache_mode").fetchone()[0] == "force_generic_plan"
    store.close()
    assert driver.execute("SHOW plan_cache_mode").fetchone()[0] == "auto"
    db.dispose()


@pytest.mark.postgres
def test_a_lost_postgres_intake_connection_fails_one_batch_then_the_next_reconnects(
    pg_url: str, parsed: Callable[..., ParsedReport]
) -> None:
    """When the server ends the kept intake connection, the batch on it fails as a whole and
    the next batch stores on a new connection, with a cursor of its own."""
    from sqlalchemy.exc import DBAPIError

    db = Database(pg_url)
    db.migrate()
    first = db.store_reports(_items([parsed("lost.tlspin.test", "1")]))
    old_driver = db._batches._raw.driver_connection
    backend = old_driver.info.backend_pid
    with db.engine.connect() as admin:
        admin.exec_driver_sql(f"SELECT pg_terminate_backend({int(backend)})")
        admin.commit()
    with pytest.raises(DBAPIError):
        db.store_reports(_items([parsed("lost.tlspin.test", "2")], start=1))
    again = db.store_reports(_items([parsed("lost.tlspin.test", "3")], start=2))
    new_driver = db._batches._raw.driver_connection
    assert new_driver is not old_driver
    assert db._batches._cursor.connection is new_driver
    rows = _rows(db)
    assert sorted(v for _, v, _ in rows.values()) == ["1", "3"]
    assert rows[again[0].report_id][2] == first[0].incident_id
    assert again[0].incident_count == 2
    db.dispose()


# -- the SQLite timestamp text -------------------------------------------------------------

_dialect = sqlite_dialect.dialect()
_reference = UTCDateTime().dialect_impl(_dialect).bind_processor(_dialect)


@given(
    moment=st.datetimes(min_value=dt.datetime(1000, 1, 2), max_value=dt.datetime(9999, 12, 30)),
    offset=st.one_of(st.none(), st.integers(min_value=-14 * 60, max_value=14 * 60)),
)
def test_timestamp_text_text_equals_sqlalchemys(moment: dt.datetime, offset: int | None) -> None:
    """The fast path writes the very text the ORM writes, aware or naive, any microsecond."""
    value = moment if offset is None else moment.replace(
        tzinfo=dt.timezone(dt.timedelta(minutes=offset)))
    assert _reference is not None
    assert timestamp_text(value) == _reference(value)


def test_timestamp_text_keeps_zero_microseconds_where_the_driver_default_would_not() -> None:
    """Whole seconds keep their six zeros, so stored timestamps sort as text."""
    whole = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert timestamp_text(whole) == "2026-01-02 03:04:05.000000"
    # The failure twin: the plain isoformat (what sqlite3's old adapter stored) sorts wrongly.
    assert whole.replace(tzinfo=None).isoformat(" ") == "2026-01-02 03:04:05"
    assert timestamp_text(None) is None


# -- GroupWriter ---------------------------------------------------------------------------


class _Recording(Database):
    """A real database that records the size of each batch it stores, and can refuse one
    marked report (to show that a failing batch is retried report by report)."""

    def __init__(self, url: str, *, refuse: str | None = None) -> None:
        super().__init__(url)
        self.batches: list[int] = []
        self.refuse = refuse

    def store_reports(self, items: Sequence[tuple[ParsedReport, dt.datetime, str | None]]
                      ) -> list[Stored]:
        self.batches.append(len(items))
        if self.refuse is not None and any(r.app_version == self.refuse for r, _, _ in items):
            msg = f"refusing report {self.refuse}"
            raise RuntimeError(msg)
        return super().store_reports(items)


def _run(writer: Any, reports: list[ParsedReport], delays: list[int]) -> list[Any]:
    """Submit report i after delays[i] event-loop iterations; return results or errors."""
    assert isinstance(writer, GroupWriter)

    async def one(report: ParsedReport, delay: int) -> Any:
        for _ in range(delay):
            await asyncio.sleep(0)
        try:
            return await writer.store(report, received_at=NOW, client_ip=None)
        except RuntimeError as exc:
            return exc

    async def main() -> list[Any]:
        return list(await asyncio.gather(*(one(r, d) for r, d in zip(reports, delays,
                                                                       strict=True))))

    return asyncio.run(main())


@pytest.mark.parametrize(("rounds", "expected"), [(6, [5]), (0, [1, 1, 1, 1, 1])])
def test_inline_batches_gather_reports_that_keep_arriving(
    sqlite_url: str, parsed: Callable[..., ParsedReport], rounds: int, expected: list[int]
) -> None:
    """Reports arriving an iteration apart share one commit when gathering is on; the twin
    without gathering writes each alone."""
    db = _Recording(sqlite_url)
    writer = GroupWriter(db, gather_rounds=rounds, max_gather=60.0)
    results = _run(writer, [parsed("g.tlspin.test", str(i)) for i in range(5)],
                   [0, 2, 4, 6, 8])
    assert db.batches == expected
    assert sorted(r.incident_count for r in results) == [1, 2, 3, 4, 5]
    assert len(_rows(db)) == 5
    db.dispose()


def test_gathering_stops_at_max_batch_and_at_a_quiet_loop(
    sqlite_url: str, parsed: Callable[..., ParsedReport]
) -> None:
    """A batch is written when it reaches max_batch, and a late report after a quiet loop
    gets a batch of its own."""
    db = _Recording(sqlite_url)
    writer = GroupWriter(db, max_batch=4, gather_rounds=3, max_gather=60.0)
    # Ten at once, then one long after the loop went quiet: 4 + 4 + 2, then 1.
    results = _run(writer, [parsed("q.tlspin.test", str(i)) for i in range(11)],
                   [0] * 10 + [40])
    assert db.batches == [4, 4, 2, 1]
    assert all(isinstance(r, Stored) for r in results)
    db.dispose()


def test_gathering_ends_at_max_gather_even_while_reports_keep_coming(
    sqlite_url: str, parsed: Callable[..., ParsedReport]
) -> None:
    """However long reports keep coming, a batch is written once max_gather has passed."""
    db = _Recording(sqlite_url)
    writer = GroupWriter(db, gather_rounds=10**9, max_gather=0.0)
    results = _run(writer, [parsed("t.tlspin.test", str(i)) for i in range(3)], [0, 1, 2])
    assert all(isinstance(r, Stored) for r in results)
    assert sum(db.batches) == 3
    assert len(db.batches) > 1  # with an unbounded gather it would have been one batch
    db.dispose()


@pytest.mark.parametrize("inline", [True, False])
def test_a_failing_batch_is_retried_report_by_report(
    sqlite_url: str, parsed: Callable[..., ParsedReport], inline: bool
) -> None:
    """One unstorable report fails alone; its neighbours in the batch are stored."""
    db = _Recording(sqlite_url, refuse="bad")
    writer = GroupWriter(db, inline=inline)
    markers = ["a", "bad", "c"]
    results = _run(writer, [parsed("f.tlspin.test", m) for m in markers], [0, 0, 0])
    writer.close()
    assert isinstance(results[1], RuntimeError)
    assert isinstance(results[0], Stored)
    assert isinstance(results[2], Stored)
    assert sorted(v for _, v, _ in _rows(db).values()) == ["a", "c"]
    db.dispose()


def test_writer_options_are_checked(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    for bad in ({"max_batch": 0}, {"gather_rounds": -1}, {"max_gather": -0.5}):
        with pytest.raises(ValueError, match="expected max_batch >= 1"):
            GroupWriter(db, **bad)
    GroupWriter(db, max_batch=1, gather_rounds=0, max_gather=0.0)  # the twin: all allowed
    db.dispose()
