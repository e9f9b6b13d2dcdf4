"""Alert webhooks: JSON POSTs with retries, exponential backoff and storm deduplication.

:class:`AlertSender` is shared by the collector (a new incident, a host over its report rate)
and the monitor (an endpoint turning red, or amber for a new reason). ``send`` never blocks:
delivery happens in a background thread. An alert whose *key* was already sent within
``dedup_window`` is suppressed, and an overall cap per minute stops storms.

The body is ``{"kind", "key", "time", "text", "payload"}``; ``text`` is a one-line summary, so
chat tools that accept ``{"text": …}`` incoming webhooks can take it as it is.
"""

from __future__ import annotations

import collections
import datetime as dt
import http.client
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tlspin.reporting import check_endpoint_url, post_json

__all__ = ["AlertSender", "AlertStats"]

log = logging.getLogger("tlspin.collector.alerts")


@dataclass(frozen=True, slots=True)
class AlertStats:
    """Counters of an :class:`AlertSender`."""

    queued: int = 0
    delivered: int = 0
    failed: int = 0
    retried: int = 0
    suppressed: int = 0
    pending: int = 0


def _origin(url: str) -> str:
    """The webhook URL without its path, query and user info, for log lines.

    Chat webhooks (Slack, Teams, Discord...) carry their secret in the path or query, so
    logging the whole URL would leak a token.
    """
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    hidden = "/…" if parts.path not in ("", "/") or parts.query else ""
    return f"{parts.scheme}://{netloc}{hidden}"


class _Delivery:
    __slots__ = ("attempts", "body", "due", "url")

    def __init__(self, url: str, body: bytes) -> None:
        self.url = url
        self.body = body
        self.attempts = 0
        self.due = 0.0


class AlertSender:
    """Post alerts to webhooks in the background.

    Args:
        webhook_urls: the receivers; each alert goes to all of them.
        dedup_window: seconds during which an alert with the same key is not sent again.
        max_per_minute: overall cap; alerts over it are suppressed (and counted).
        timeout: seconds per HTTP attempt.
        max_attempts: attempts per webhook before giving up.
        backoff: first retry delay in seconds; doubles each time, up to ``backoff_max``.
        backoff_max: longest retry delay.
        ssl_context: TLS context for ``https://`` webhooks (default: system trust store).
        queue_size: most deliveries held; the oldest is dropped when full.

    Raises:
        ValueError: a webhook URL is not http(s) (plain http only to loopback).
    """

    def __init__(
        self,
        webhook_urls: Sequence[str],
        *,
        dedup_window: float = 3600.0,
        max_per_minute: int = 30,
        timeout: float = 5.0,
        max_attempts: int = 5,
        backoff: float = 1.0,
        backoff_max: float = 60.0,
        ssl_context: Any = None,
        queue_size: int = 1000,
    ) -> None:
        self.webhook_urls = tuple(webhook_urls)
        for url in self.webhook_urls:
            check_endpoint_url(url)
        self._dedup_window = dedup_window
        self._max_per_minute = max_per_minute
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._ssl_context = ssl_context
        self._queue_size = queue_size
        self._cond = threading.Condition()
        self._pending: collections.deque[_Delivery] = collections.deque()
        self._inflight = 0
        self._sent_keys: dict[str, float] = {}
        self._recent: collections.deque[float] = collections.deque()
        self._counts: collections.Counter[str] = collections.Counter()
        self._thread: threading.Thread | None = None
        self._closed = False

    def send(self, kind: str, key: str, payload: Mapping[str, Any], *, text: str = "") -> bool:
        """Queue an alert; return False if it was suppressed (duplicate key, storm, closed).

        Args:
            kind: what happened, e.g. ``"incident.opened"`` or ``"monitor.red"``.
            key: identity for deduplication, e.g. ``"incident:42"``.
            payload: JSON-serialisable details.
            text: a one-line human summary (defaults to kind and key).
        """
        if not self.webhook_urls:
            return False
        body = json.dumps(
            {
                "kind": kind,
                "key": key,
                "time": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "text": text or f"tlspin {kind}: {key}",
                "payload": dict(payload),
            },
            separators=(",", ":"),
            default=str,
        ).encode()
        with self._cond:
            now = time.monotonic()
            if self._closed:
                self._counts["suppressed"] += 1
                return False
            sent = self._sent_keys.get(key)
            if sent is not None and now - sent < self._dedup_window:
                self._counts["suppressed"] += 1
                return False
            while self._recent and now - self._recent[0] > 60.0:
                self._recent.popleft()
            if len(self._recent) >= self._max_per_minute:
                self._counts["suppressed"] += 1
                log.warning("alert %s suppressed: over %d alerts per minute", key,
                            self._max_per_minute)
                return False
            self._recent.append(now)
            if len(self._sent_keys) > 10_000:
                horizon = now - self._dedup_window
                self._sent_keys = {k: t for k, t in self._sent_keys.items() if t >= horizon}
            self._sent_keys[key] = now
            for url in self.webhook_urls:
                self._pending.append(_Delivery(url, body))
                self._counts["queued"] += 1
            while len(self._pending) > self._queue_size:
                self._pending.popleft()
                self._counts["failed"] += 1
            self._cond.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tlspin-alerts",
                                                daemon=True)
                self._thread.start()
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                item = self._next()
                if item is None:
                    return
                self._inflight += 1
            ok = False
            retry = True
            try:
                status = post_json(item.url, item.body, ssl_context=self._ssl_context,
                                   timeout=self._timeout)
                ok = 200 <= status < 300
                retry = status in (408, 425, 429) or status >= 500
                if not ok:
                    log.warning("alert webhook %s answered HTTP %d", _origin(item.url), status)
            except (OSError, http.client.HTTPException) as exc:
                log.warning("alert webhook %s failed: %s", _origin(item.url), exc)
            except Exception:  # never let the thread die
                log.exception("alert webhook %s failed", _origin(item.url))
                retry = False
            with self._cond:
                self._inflight -= 1
                item.attempts += 1
                if ok:
                    self._counts["delivered"] += 1
                elif retry and item.attempts < self._max_attempts and not self._closed:
                    delay = min(self._backoff_max, self._backoff * 2 ** (item.attempts - 1))
                    item.due = time.monotonic() + delay
                    self._pending.appendleft(item)
                    self._counts["retried"] += 1
                else:
                    self._counts["failed"] += 1
                self._cond.notify_all()

    def _next(self) -> _Delivery | None:
        while True:
            if self._closed:
                return None
            now = time.monotonic()
            soonest: float | None = None
            for item in self._pending:
                if item.due <= now:
                    self._pending.remove(item)
                    return item
                soonest = item.due if soonest is None else min(soonest, item.due)
            self._cond.wait(None if soonest is None else soonest - now)

    @property
    def stats(self) -> AlertStats:
        """The counters now."""
        with self._cond:
            c = self._counts
            return AlertStats(
                queued=c["queued"], delivered=c["delivered"], failed=c["failed"],
                retried=c["retried"], suppressed=c["suppressed"],
                pending=len(self._pending) + self._inflight,
            )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until nothing is pending; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._inflight, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Flush for up to *timeout* seconds, then stop; later alerts are suppressed."""
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._counts["failed"] += len(self._pending)
            self._pending.clear()
            self._cond.notify_all()

