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

    Args:
        db: where to store.
        max_batch: most reports per transaction.
        commit_delay: seconds to wait for more reports before committing a batch (as
            PostgreSQL's ``commit_delay``): a commit costs far more than a row, and requests
            arrive one socket read at a time, so without it most batches hold one report.
        inline: write on the event loop itself, right after the requests that are ready in
            the same loop iteration, instead of in a writer thread. Meant for SQLite, whose
            writes are local and take well under a millisecond: it saves the thread hand-offs.
            Defaults to ``db.is_sqlite``. (Another process holding SQLite's write lock
            stalls the loop until it commits; use PostgreSQL for several writer processes.)
    """

    def __init__(
        self, db: Database, *, max_batch: int = 256, inline: bool | None = None,
        commit_delay: float = 0.002,
    ) -> None:
        self._db = db
        self._max_batch = max_batch
        self._delay = commit_delay
        self._inline = db.is_sqlite if inline is None else inline
        self._flush_scheduled = False
        self._jobs: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

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
                    loop.call_later(self._delay, self._flush_inline)
            elif self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tlspin-writer",
                                                daemon=True)
                self._thread.start()
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
                self._cond.wait_for(lambda: self._jobs or self._closed)
                if not self._jobs:
                    return
                if len(self._jobs) < self._max_batch and not self._closed:
                    self._cond.wait(self._delay)  # let concurrent reports join the batch
                batch = [self._jobs.popleft()
                         for _ in range(min(len(self._jobs), self._max_batch))]
            self._write(batch)

    def _write(self, batch: list[_Job]) -> None:
        try:
            stored = self._db.store_reports(
                [(j.report, j.received_at, j.client_ip) for j in batch]
            )
        except Exception as exc:  # the futures carry it to each request
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

    if _on_loop(job.loop):
        apply()
        return
    try:
        job.loop.call_soon_threadsafe(apply)
    except RuntimeError:  # Defensive: the event loop has already shut down.
        log.warning("a stored report's request loop was closed before it could be answered")


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
