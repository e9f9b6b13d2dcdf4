"""Group commit for report intake: concurrent reports share one transaction and one commit.

Each intake request hands its parsed report to :class:`GroupWriter` and awaits a future. A
writer thread takes everything waiting, stores it with :meth:`Database.store_reports` in one
transaction, and only then resolves the futures, so a 201 still means "committed". Under load
the per-report cost of the commit, the statement overhead and the thread hand-off is shared
across the batch; with a single sender a batch is simply one report.

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
from dataclasses import dataclass

from tlspin.collector.formats import ParsedReport
from tlspin.collector.storage import Database, Stored

__all__ = ["GroupWriter"]

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
    event loop. With SQLite (``inline``) the batch is written on the event loop itself: the
    writes are local and a batch takes well under a millisecond, and skipping the thread
    hand-offs measured about 20 % less CPU per report. Another process holding SQLite's write
    lock then stalls this loop until it commits; run several collector processes on
    PostgreSQL instead.

    Args:
        db: where to store.
        max_batch: most reports per transaction.
        commit_delay: seconds to wait for more reports before committing a batch (as
            PostgreSQL's ``commit_delay``). With 0 a batch holds what arrived while the
            previous one was written, or in the same event-loop iteration; a small delay
            makes batches larger when many independent senders report at once and a commit
            is slow (a durable PostgreSQL), at the cost of that much latency per report.
        inline: write on the event loop (default: for SQLite) rather than in a thread.
    """

    def __init__(
        self, db: Database, *, max_batch: int = 256, commit_delay: float = 0.0,
        inline: bool | None = None,
    ) -> None:
        self._inline = db.is_sqlite if inline is None else inline
        self._flush_scheduled = False
        self._db = db
        self._max_batch = max_batch
        self._delay = commit_delay
        self._jobs: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._idle = False

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
                    if self._delay:
                        loop.call_later(self._delay, self._flush_inline)
                    else:  # after the callbacks already ready: requests read together batch
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
            self._flush_scheduled = False
            jobs = list(self._jobs)
            self._jobs.clear()
        for start in range(0, len(jobs), self._max_batch):
            self._write(jobs[start : start + self._max_batch])

    def _run(self) -> None:
        while True:
            with self._cond:
                self._idle = True
                self._cond.wait_for(lambda: self._jobs or self._closed)
                self._idle = False
                if not self._jobs:
                    return
                closing = self._closed
            if self._delay and not closing:
                # Let concurrent reports join the batch. A plain sleep: waking up for each
                # arrival would cost more than the batching saves.
                time.sleep(self._delay)
            with self._cond:
                batch = [self._jobs.popleft()
                         for _ in range(min(len(self._jobs), self._max_batch))]
            self._write(batch)

    def _write(self, batch: list[_Job]) -> None:
        try:
            stored = self._db.store_reports(
                [(j.report, j.received_at, j.client_ip) for j in batch]
            )
        except Exception as exc:  # noqa: BLE001 - the futures carry it to each request
            if len(batch) > 1:
                log.warning("a batch of %d reports failed (%s); storing them one by one",
                            len(batch), exc)
                for job in batch:
                    self._write([job])
                return
            _settle(batch[0], None, exc)
            return
        for job, result in zip(batch, stored, strict=True):
            _settle(job, result, None)

    def close(self, timeout: float = 10.0) -> None:
        """Finish what is queued, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)


def _settle(job: _Job, result: Stored | None, error: BaseException | None) -> None:
    def apply() -> None:  # runs on the request's event loop
        if job.future.done():  # the request was cancelled (client gone)
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            assert result is not None
            job.future.set_result(result)

    if _running_loop() is job.loop:
        apply()
        return
    try:
        job.loop.call_soon_threadsafe(apply)
    except RuntimeError:  # Defensive: the event loop has already shut down.
        log.warning("a stored report's request loop was closed before it could be answered")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
