"""Group commit for report intake: concurrent reports share one transaction and one commit.

Each intake request hands its parsed report to :class:`GroupWriter` and awaits a future. The
writer stores everything waiting with :meth:`Database.store_reports` in one transaction, and
only then resolves the futures, so a 201 still means "committed". Under load the per-report
cost of the commit, the statement overhead and the hand-off is shared across the batch; with
a single sender a batch is simply one report.

If a batch fails, its reports are retried one by one, so one unstorable report cannot fail its
neighbours.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from tlspin.collector.formats import ParsedReport
from tlspin.collector.storage import Database, Stored

__all__ = ["GroupWriter", "store_each"]

log = logging.getLogger("tlspin.collector")


@dataclass(slots=True)
class _Job:
    report: ParsedReport
    received_at: dt.datetime
    client_ip: str | None
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Stored]


class GroupWriter:
    """Stores queued reports in batches, one transaction per batch.

    With PostgreSQL a writer thread does the writing, keeping network round trips off the
    event loop; reports that arrive while it waits on the database form the next batch.
    With SQLite (``inline``) the batch is written on the event loop itself: the writes are
    local, and skipping the thread hand-offs measured about 20 % less CPU per report.
    Another process holding SQLite's write lock then stalls this loop until it commits; run
    several collector processes on PostgreSQL instead.

    An inline batch *gathers* before it is written: while reports keep arriving, the write
    waits, one event-loop iteration at a time, and it goes ahead once ``gather_rounds``
    iterations in a row brought no new report, or ``max_batch`` reports are waiting, or
    ``max_gather`` seconds have passed since the first. A burst of reports from many
    senders then shares one commit (the commit, not the SQL, is most of what storing a
    report costs), while a lone report waits only for a few idle iterations, microseconds.
    The loop keeps serving requests while it gathers: nothing sleeps.

    Args:
        db: where to store.
        max_batch: most reports per transaction.
        gather_rounds: idle event-loop iterations that end an inline batch's gathering;
            0 writes each batch in the iteration after its first report.
        max_gather: longest an inline batch gathers, in seconds.
        inline: write on the event loop (default: for SQLite) rather than in a thread.
    """

    def __init__(
        self, db: Database, *, max_batch: int = 256, gather_rounds: int = 6,
        max_gather: float = 0.002, inline: bool | None = None,
    ) -> None:
        if max_batch < 1 or gather_rounds < 0 or max_gather < 0:
            msg = (f"expected max_batch >= 1, gather_rounds >= 0 and max_gather >= 0, found "
                   f"{max_batch}, {gather_rounds} and {max_gather}")
            raise ValueError(msg)
        self._inline = db.is_sqlite if inline is None else inline
        self._db = db
        self._max_batch = max_batch
        self._gather_rounds = gather_rounds
        self._max_gather = max_gather
        self._jobs: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._idle = False
        # Inline gathering: whether a flush is scheduled, when its batch began, how many
        # reports it had at the last look, and for how many iterations that did not change.
        self._flush_scheduled = False
        self._gather_began = 0.0
        self._gather_seen = 0
        self._gather_idle = 0

    async def store(
        self, report: ParsedReport, *, received_at: dt.datetime, client_ip: str | None
    ) -> Stored:
        """Store *report*; returns once its transaction has committed.

        Raises:
            Exception: whatever storing it raised (SQLAlchemy errors, for instance).
            RuntimeError: the writer is closed.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Stored] = loop.create_future()
        with self._cond:
            if self._closed:
                msg = "the report writer is closed"
                raise RuntimeError(msg)
            self._jobs.append(_Job(report, received_at, client_ip, loop, future))
            if self._inline:
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    self._gather_began = time.monotonic()
                    self._gather_seen = 0
                    self._gather_idle = 0
                    loop.call_soon(self._flush_inline)
            elif self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tlspin-writer",
                                                daemon=True)
                self._thread.start()
            elif self._idle:
                self._cond.notify()
        return await future

    def _flush_inline(self) -> None:
        with self._cond:
            if self._gathering():
                asyncio.get_running_loop().call_soon(self._flush_inline)
                return
            self._flush_scheduled = False
            jobs = list(self._jobs)
            self._jobs.clear()
        for start in range(0, len(jobs), self._max_batch):
            self._write(jobs[start : start + self._max_batch])

    def _gathering(self) -> bool:
        """Whether the inline batch should wait another loop iteration (under the lock)."""
        pending = len(self._jobs)
        if (self._closed or pending >= self._max_batch
                or time.monotonic() - self._gather_began >= self._max_gather):
            return False
        if pending > self._gather_seen:  # more arrived: more may be on their way
            self._gather_seen = pending
            self._gather_idle = 0
        else:
            self._gather_idle += 1
        return self._gather_idle < self._gather_rounds

    def _run(self) -> None:
        while True:
            with self._cond:
                self._idle = True
                self._cond.wait_for(lambda: self._jobs or self._closed)
                self._idle = False
                if not self._jobs:
                    return
            with self._cond:
                batch = [self._jobs.popleft()
                         for _ in range(min(len(self._jobs), self._max_batch))]
            self._write(batch)

    def _write(self, batch: list[_Job]) -> None:
        results = store_each(self._db, [(j.report, j.received_at, j.client_ip) for j in batch])
        _settle(list(zip(batch, results, strict=True)))

    def close(self, timeout: float = 10.0) -> None:
        """Finish what is queued, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)


def store_each(
    db: Database, items: Sequence[tuple[ParsedReport, dt.datetime, str | None]]
) -> list[Stored | Exception]:
    """Store *items* in one transaction; if that fails, store them one by one, so that one
    unstorable report cannot fail its neighbours. Returns each one's result or error."""
    try:
        return list(db.store_reports(items))
    except Exception as exc:  # noqa: BLE001 - each caller reports it per report
        if len(items) == 1:
            log.warning("could not store a report: %s", exc)
            return [exc]
        log.warning("a batch of %d reports failed (%s); storing them one by one",
                    len(items), exc)
    return [result for item in items for result in store_each(db, [item])]


def _settle(outcomes: list[tuple[_Job, Stored | Exception]]) -> None:
    """Resolve each job's future on its event loop: one wake-up per loop, not per job."""

    def apply(items: list[tuple[_Job, Stored | Exception]]) -> None:
        for job, result in items:
            if job.future.done():  # the request was cancelled (client gone)
                continue
            if isinstance(result, Exception):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)

    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, Stored | Exception]]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    running = _running_loop()
    for loop, items in by_loop.items():
        if loop is running:
            apply(items)
            continue
        try:
            loop.call_soon_threadsafe(apply, items)
        except RuntimeError:  # Defensive: the event loop has already shut down.
            log.warning("stored reports' request loop was closed before they could be answered")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
