"""The intake worker: a child process that validates and stores reports for the app.

The app's event loop only speaks HTTP: it hands each report body to the worker over a
socket pair and awaits the answer. The worker takes everything that has arrived, validates
each body, stores the valid ones in one transaction per batch (group commit: reports that
arrive while a batch commits form the next; under load, a batch smaller than the last one
first waits a fraction of a millisecond for more), and answers each one: stored (with its ids),
invalid (with the reason, for a 400), or not storable now (503). A report is answered as
stored only after its transaction has committed.

Why a process: parsing and the database's own work are CPU time that, in the app's process,
would compete with HTTP for one core (the GIL). Measured on two cores with 32 concurrent
senders (``bench/bench_collector.py``), PostgreSQL ingest went from about 0.45 of the no-op
rate to 0.5–0.6, and SQLite from about 0.6 to 0.6–0.68; with 8 senders, where every request
waits for the next commit, the gain is smaller on PostgreSQL and nil on SQLite.

The frames are a 4-byte length and a :mod:`marshal` payload of plain values, exchanged only
between the app and its own child. Report bodies cross as bytes and are parsed only in the
worker, as attacker-controlled input. The database URL (it may hold a password) goes in the
first frame, never on the command line. When the app's end of the socket closes, the worker
finishes its batch and exits; it ignores SIGINT, so Ctrl-C on ``tlspin serve`` lets the app
drain it rather than killing a transaction midway.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import itertools
import logging
import marshal
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tlspin.collector.formats import ParsedReport, ReportError, parse_report
from tlspin.collector.intake import Accepted, AlertFacts, IntakeUnavailable, alert_facts
from tlspin.collector.storage import Database, Stored
from tlspin.collector.writer import store_each

__all__ = ["IntakeProcess", "main"]

log = logging.getLogger("tlspin.collector")

_HEADER = struct.Struct("!I")
_MAX_FRAME = 64 * 1024 * 1024
_STORED, _INVALID, _UNAVAILABLE = 0, 1, 2
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# Under load, a batch that starts smaller than the last one waits up to _GATHER_SECONDS for
# company, up to _GATHER_UP_TO reports. On PostgreSQL a batch of one costs about 375 µs of CPU
# (worker and server) and each further report about 60 µs; fuller batches leave more of the
# machine to the event loop. Measured on two cores (paired rounds, 16 senders), ingest rose by
# about 0.05-0.09 of the no-op rate on both databases; 8 and 32 senders were unchanged, and
# waits of 150 and 300 µs did alike where 700 µs did worse. A lone sender never waits: its
# batches hold one report.
_GATHER_SECONDS = 0.0003
_GATHER_UP_TO = 8


def _frame(value: Any) -> bytes:
    payload = marshal.dumps(value)
    return _HEADER.pack(len(payload)) + payload


def _take_frames(buffer: bytearray) -> list[Any]:
    """Remove the complete frames at the start of *buffer* and return their values.

    Both ends read with it. Frames pass only between the app and its own child, over a
    private socket pair, so :mod:`marshal` carries plain values that nobody else wrote.

    Raises:
        ValueError: a frame claims more than the most an intake frame may hold.
    """
    values = []
    start = 0
    while len(buffer) - start >= _HEADER.size:
        (size,) = _HEADER.unpack_from(buffer, start)
        if size > _MAX_FRAME:
            msg = f"an intake frame of {size} bytes, more than the {_MAX_FRAME} allowed"
            raise ValueError(msg)
        end = start + _HEADER.size + size
        if len(buffer) < end:
            break
        values.append(marshal.loads(buffer[start + _HEADER.size : end]))  # noqa: S302
        start = end
    del buffer[:start]
    return values


class _Channel(asyncio.Protocol):
    """The app's end of the socket pair: each request's frame out as it is made; answers
    in, resolving each request's future as soon as its frame is complete."""

    def __init__(self, loop: asyncio.AbstractEventLoop, proc: subprocess.Popen[bytes]) -> None:
        self.loop = loop
        self.proc = proc
        self.pending: dict[int, asyncio.Future[tuple[int, Any]]] = {}
        self.closed = loop.create_future()
        self.lost = False
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def send(self, frame: bytes) -> None:
        # Written at once, not gathered for the end of the loop iteration: the worker then
        # starts on the first reports of a burst while the loop still reads the others, and
        # the two work side by side. Gathered, a burst reached the worker as one batch and
        # the loop waited idle for its commit (measured: about 30 % idle at 16 senders, and
        # ingest 10-15 % slower).
        if self._transport is not None and not self.lost:
            self._transport.write(frame)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        for seq, code, value in _take_frames(self._buffer):
            future = self.pending.pop(seq, None)
            if future is not None and not future.done():
                future.set_result((code, value))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        for future in self.pending.values():
            if not future.done():
                future.set_result((_UNAVAILABLE, "the intake worker stopped; retry later"))
        self.pending.clear()
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class IntakeProcess:
    """The app's side: starts the worker on first use and restarts it if it dies.

    Args:
        db_url: the database the worker stores into (already migrated by the app).
        facts: ask for :class:`~tlspin.collector.intake.AlertFacts` with each result.
        max_batch: most reports per transaction.
        restart_delay: least time between two worker starts; reports in between get 503.
    """

    def __init__(
        self, db_url: str, *, facts: bool = False, max_batch: int = 256,
        restart_delay: float = 1.0,
    ) -> None:
        self._db_url = db_url
        self._facts = facts
        self._max_batch = max_batch
        self._restart_delay = restart_delay
        self._seq = itertools.count()
        self._channel: _Channel | None = None
        self._started_at = -1e9
        self._closed = False
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    @property
    def pid(self) -> int | None:
        """The worker's process id, while one runs."""
        channel = self._channel
        return channel.proc.pid if channel is not None and not channel.lost else None

    async def submit(
        self, body: bytes, *, received_at: dt.datetime, client_ip: str | None
    ) -> Accepted:
        """See :meth:`tlspin.collector.intake.Intake.submit`."""
        loop = asyncio.get_running_loop()
        channel = self._channel
        if channel is None or channel.lost or channel.loop is not loop:
            channel = await self._ensure_worker(loop)
        seq = next(self._seq)
        future: asyncio.Future[tuple[int, Any]] = loop.create_future()
        channel.pending[seq] = future
        micros = (received_at - _EPOCH) // dt.timedelta(microseconds=1)
        channel.send(_frame((seq, body, micros, client_ip)))
        try:
            code, value = await future
        finally:
            channel.pending.pop(seq, None)
        if code == _STORED:
            stored, kind, facts = value
            return Accepted(Stored(*stored), kind,
                            None if facts is None else AlertFacts(*facts))
        if code == _INVALID:
            raise ReportError(value)
        raise IntakeUnavailable(value)

    async def _ensure_worker(self, loop: asyncio.AbstractEventLoop) -> _Channel:
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:  # one start, however many requests arrive meanwhile
            if self._closed:
                msg = "the collector is shutting down"
                raise IntakeUnavailable(msg)
            channel = self._channel
            if channel is not None and not channel.lost and channel.loop is loop:
                return channel
            if channel is not None:
                if channel.lost:
                    log.warning("the intake worker (pid %s) exited with %s; starting another",
                                channel.proc.pid, channel.proc.poll())
                else:
                    # Used from another event loop (a test client's, say): that loop's
                    # transport cannot serve this one. Let that worker go.
                    _stop(channel)
                self._channel = None
            if time.monotonic() - self._started_at < self._restart_delay:
                msg = "the intake worker is restarting; retry later"
                raise IntakeUnavailable(msg)
            self._channel = await self._start(loop)
            return self._channel

    async def _start(self, loop: asyncio.AbstractEventLoop) -> _Channel:
        self._started_at = time.monotonic()
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        # The child must import this very tlspin, even when it was put on sys.path by hand.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "tlspin.collector.intake_worker", str(theirs.fileno())],
                pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            ours.close()
            raise IntakeUnavailable(f"could not start the intake worker: {exc}") from exc
        finally:
            theirs.close()
        _, channel = await loop.create_connection(lambda: _Channel(loop, proc), sock=ours)
        channel.send(_frame(("config", self._db_url, self._max_batch, self._facts)))
        return channel

    async def aclose(self) -> None:
        """Close the socket (the worker finishes its batch and exits) and wait for it."""
        self._closed = True
        channel, self._channel = self._channel, None
        if channel is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # Defensive
            running = None
        if channel.loop is not running:
            _stop(channel)
            return
        channel.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(channel.closed), 10)
        try:
            await asyncio.to_thread(channel.proc.wait, 10)
        except subprocess.TimeoutExpired:
            channel.proc.kill()
            await asyncio.to_thread(channel.proc.wait)


def _stop(channel: _Channel) -> None:
    """Let a worker go from outside its event loop: close, and terminate if still running."""
    with contextlib.suppress(RuntimeError):  # its loop is closed already
        channel.close()
    if channel.proc.poll() is None:
        channel.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            channel.proc.wait(5)


# -- the worker ----------------------------------------------------------------------------


class _Frames:
    """Reads frames from a blocking socket: waits for the first, then takes all that wait."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()

    def read(self) -> list[Any] | None:
        """The next frames (at least one), or None at end of input."""
        frames: list[Any] = []
        flags = 0
        while True:
            frames.extend(_take_frames(self._buffer))
            if frames:
                flags = socket.MSG_DONTWAIT
            try:
                data = self._sock.recv(1 << 20, flags)
            except BlockingIOError:
                return frames
            if not data:
                return frames or None
            self._buffer += data

    def more(self, timeout: float, want: int) -> list[Any]:
        """Frames that arrive within *timeout* seconds, until there are *want* of them.

        At end of input it returns what it has; the next :meth:`read` then says so.
        """
        frames: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(frames) < want:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._sock], [], [], left)[0]:
                break
            try:
                data = self._sock.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:  # Defensive: readable, yet nothing to read
                continue
            if not data:
                break
            self._buffer += data
            frames.extend(_take_frames(self._buffer))
        return frames


class _Worker:
    """Validates what arrived, stores the valid reports (one transaction per batch), and
    answers each request. What arrives while a batch commits is the next batch.

    One thread on purpose: a second one, validating while the other committed, measured
    slower, its hand-offs costing more than the overlap gained.
    """

    def __init__(self, sock: socket.socket, db: Database, max_batch: int, facts: bool) -> None:
        self._sock = sock
        self._db = db
        self._max_batch = max_batch
        self._facts = facts

    def take(self, frames: list[Any]) -> None:
        """Validate, store and answer *frames*."""
        answers: list[tuple[int, int, Any]] = []
        valid: list[tuple[int, ParsedReport, dt.datetime, str | None]] = []
        for seq, body, micros, client_ip in frames:
            try:
                report = parse_report(body)
            except ReportError as exc:
                answers.append((seq, _INVALID, str(exc)))
                continue
            except Exception:  # Defensive: a parser bug must not take the worker down
                log.exception("could not validate a report")
                answers.append((seq, _UNAVAILABLE, "the report could not be processed"))
                continue
            valid.append((seq, report, _EPOCH + dt.timedelta(microseconds=micros), client_ip))
        for start in range(0, len(valid), self._max_batch):
            answers.extend(self._store(valid[start : start + self._max_batch]))
        self._sock.sendall(b"".join(_frame(answer) for answer in answers))

    def _store(
        self, batch: list[tuple[int, ParsedReport, dt.datetime, str | None]]
    ) -> list[tuple[int, int, Any]]:
        results = store_each(self._db, [(r, t, ip) for _, r, t, ip in batch])
        answers: list[tuple[int, int, Any]] = []
        for (seq, report, _, _), result in zip(batch, results, strict=True):
            if not isinstance(result, Stored):
                answers.append((seq, _UNAVAILABLE, "storage unavailable; retry later"))
                continue
            # Plain tuples in field order, which marshal carries (the app rebuilds both).
            answers.append((seq, _STORED, (
                (result.report_id, result.incident_id, result.incident_count, result.opened),
                report.kind,
                dataclasses.astuple(alert_facts(report)) if self._facts else None,
            )))
        return answers


def main(argv: list[str] | None = None) -> int:
    """Serve the app on the socket whose descriptor is the first argument."""
    args = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="tlspin intake worker: %(message)s")
    inherited = int(args[0])
    # Moved to the lowest free descriptor: the app may hold thousands of connections, so the
    # number it passed can exceed what select() takes (FD_SETSIZE), and the worker's
    # gathering uses select() for its microsecond timeout (poll and epoll count milliseconds).
    sock = socket.socket(fileno=os.dup(inherited))
    os.close(inherited)
    frames = _Frames(sock)
    try:
        first = frames.read()
    except ValueError:
        first = None
    if not first or first[0][0] != "config":
        return 2
    _, db_url, max_batch, facts = first[0]
    db = Database(db_url)
    worker = _Worker(sock, db, max_batch, facts)
    try:
        pending: list[Any] | None = first[1:]
        last = 0  # how many reports the last batch held
        while pending is not None:
            if pending:
                want = min(last, _GATHER_UP_TO)
                if len(pending) < want:
                    pending += frames.more(_GATHER_SECONDS, want - len(pending))
                worker.take(pending)
                last = len(pending)
            pending = frames.read()
        return 0
    except (ConnectionError, ValueError) as exc:
        log.warning("stopping: %s", exc)
        return 1
    finally:
        db.dispose()
        sock.close()


if __name__ == "__main__":
    sys.exit(main())
