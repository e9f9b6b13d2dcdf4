"""A bounded retry queue drained by one lazily started daemon thread (stdlib only).

Shared by :class:`tlspin.Reporter` and the collector's ``AlertSender``: the owner decides what
gets offered (deduplication, rate limits) and how one item is delivered; this module keeps the
queue, the retry schedule with exponential backoff, the worker thread and the counters.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Generic, Literal, TypeVar

__all__ = ["Outcome", "RetrySender", "classify_status"]

log = logging.getLogger("tlspin.sender")

Outcome = Literal["sent", "retry", "failed"]
T = TypeVar("T")


def classify_status(status: int) -> Outcome:
    """What an HTTP *status* means for a delivery: 2xx sent; 408/425/429/5xx retry; else failed."""
    if 200 <= status < 300:
        return "sent"
    if status in (408, 425, 429) or status >= 500:
        return "retry"
    return "failed"


class _Entry(Generic[T]):
    __slots__ = ("attempts", "due", "value")

    def __init__(self, value: T) -> None:
        self.value = value
        self.attempts = 0
        self.due = 0.0


class RetrySender(Generic[T]):
    """Deliver offered items in a background thread, retrying transient failures.

    ``lock`` is the queue's condition; owners hold it around their own admission state (which
    ``on_discard`` may change) and may call :meth:`offer` with it held.

    Args:
        deliver: sends one item; gets the attempt number (1 for the first) and returns an
            :data:`Outcome`. Runs in the worker thread, without the lock.
        name: the worker thread's name.
        queue_size: most items waiting; when over it, the oldest is dropped.
        max_attempts: attempts per item before it counts as failed.
        backoff: first retry delay in seconds; doubles each retry, up to ``backoff_max``.
        backoff_max: longest retry delay.
        jitter: randomise each retry delay between half and all of it.
        on_discard: called (with the lock held) for an item dropped from a full queue or given
            up on, but not for one left unsent at close.
        on_error: called from inside the ``except`` block when *deliver* raises unexpectedly
            (so it may use ``log.exception``); the item then counts as failed.
    """

    def __init__(
        self,
        deliver: Callable[[T, int], Outcome],
        *,
        name: str,
        queue_size: int,
        max_attempts: int,
        backoff: float,
        backoff_max: float,
        jitter: bool = False,
        on_discard: Callable[[T], object] | None = None,
        on_error: Callable[[T], object] | None = None,
    ) -> None:
        self._deliver = deliver
        self._name = name
        self._queue_size = queue_size
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._jitter = jitter
        self._on_discard = on_discard
        self._on_error = on_error
        self.lock = threading.Condition()
        self._pending: collections.deque[_Entry[T]] = collections.deque()
        self._inflight = 0
        self._counts: collections.Counter[str] = collections.Counter()
        self._thread: threading.Thread | None = None
        self.closed = False

    def offer(self, value: T) -> bool:
        """Queue *value* (dropping the oldest if full); False once closed."""
        with self.lock:
            if self.closed:
                return False
            self._pending.append(_Entry(value))
            self._counts["queued"] += 1
            self._evict()
            self.lock.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        return True

    def counts(self) -> dict[str, int]:
        """``queued``, ``sent``, ``failed``, ``retried``, ``dropped`` and ``pending`` now.

        ``dropped`` counts items evicted from a full queue or left unsent at close.
        """
        with self.lock:
            names = ("queued", "sent", "failed", "retried", "dropped")
            out = {name: self._counts[name] for name in names}
            out["pending"] = len(self._pending) + self._inflight
            return out

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until nothing is queued or in flight (retries included); False on timeout."""
        with self.lock:
            return self.lock.wait_for(lambda: not self._pending and self._inflight == 0, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Flush for up to *timeout* seconds, then stop; what is still queued is dropped.

        A request in flight to an unresponsive peer is abandoned to its own timeout: the
        thread is a daemon and never holds up interpreter exit.
        """
        self.flush(timeout)
        with self.lock:
            self.closed = True
            self._counts["dropped"] += len(self._pending)
            self._pending.clear()
            self.lock.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(0.1)

    def _evict(self) -> None:
        while len(self._pending) > self._queue_size:
            oldest = self._pending.popleft()
            self._counts["dropped"] += 1
            if self._on_discard is not None:
                self._on_discard(oldest.value)

    def _run(self) -> None:
        while True:
            with self.lock:
                entry = self._next()
                if entry is None:
                    return
                self._inflight += 1
                entry.attempts += 1
            outcome: Outcome
            try:
                outcome = self._deliver(entry.value, entry.attempts)
            except Exception:  # a bug in delivery must not kill the thread
                if self._on_error is not None:
                    self._on_error(entry.value)
                else:
                    log.exception("%s: delivery failed", self._name)
                outcome = "failed"
            with self.lock:
                self._inflight -= 1
                self._settle(entry, outcome)
                self.lock.notify_all()

    def _next(self) -> _Entry[T] | None:
        """Wait for the earliest item whose time has come; None once closed."""
        while True:
            if self.closed:
                return None
            now = time.monotonic()
            soonest: float | None = None
            for entry in self._pending:
                if entry.due <= now:
                    self._pending.remove(entry)
                    return entry
                soonest = entry.due if soonest is None else min(soonest, entry.due)
            self.lock.wait(None if soonest is None else soonest - now)

    def _settle(self, entry: _Entry[T], outcome: Outcome) -> None:
        if outcome == "sent":
            self._counts["sent"] += 1
            return
        if outcome == "retry" and entry.attempts < self._max_attempts and not self.closed:
            delay = min(self._backoff_max, self._backoff * 2 ** (entry.attempts - 1))
            if self._jitter:
                delay *= 0.5 + random.random() / 2  # noqa: S311 - spreading retries, not crypto
            entry.due = time.monotonic() + delay
            self._pending.appendleft(entry)  # it is older than anything queued after it
            self._counts["retried"] += 1
            self._evict()
            return
        self._counts["failed"] += 1
        if self._on_discard is not None:
            self._on_discard(entry.value)
