"""Alert webhooks: JSON POSTs with retries, exponential backoff and storm deduplication.

:class:`AlertSender` is shared by the collector (a new incident, a host over its report rate)
and the monitor (an endpoint turning red, or amber for a new reason). ``send`` never blocks:
delivery happens in a background thread. An alert whose *key* was already sent within
``dedup_window`` is suppressed, and caps per minute (overall, and per scope: the collector's
host and sender) stop storms. Every alert a cap holds back is named, by its host, in an
``alerts.suppressed`` digest (see :mod:`tlspin.collector.alert_digest`): the first at once, later
ones at most once a minute, on a timer, so no further traffic is needed for them to go out.

The body is ``{"kind", "key", "time", "text", "payload"}``; ``text`` is a one-line summary, so
chat tools that accept ``{"text": …}`` incoming webhooks (Slack, Mattermost, Rocket.Chat,
Discord's Slack-compatible endpoint) can take it as it is. Alert text quotes attacker-controlled
values (a reported certificate's issuer, say), so :func:`chat_text` makes it inert for those
formats before it is sent; ``payload`` keeps the values exact, as JSON.
"""

from __future__ import annotations

import collections
import datetime as dt
import http.client
import json
import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tlspin._shared.endpoints import redact_url
from tlspin._shared.sender import Outcome, RetrySender, classify_status
from tlspin.collector.alert_digest import TEXT_LIMIT, HeldBack
from tlspin.reporting import check_endpoint_url, post_json

__all__ = ["AlertSender", "AlertStats", "chat_text"]

log = logging.getLogger("tlspin.collector.alerts")


# Characters that would break the one line or hide what it says: C0 and C1 controls (line
# breaks included), the line and paragraph separators, zero-width and bidirectional format
# characters, and lone surrogates.
_INVISIBLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f"
    "\ufeff\ud800-\udfff]"
)
# Slack's three escapes (https://api.slack.com/reference/surfaces/formatting#escaping): with
# them, '<!channel>', '<@U123>' and '<http://x|label>' cannot form. Markdown renderers
# (Mattermost, Rocket.Chat, Discord) decode the same entities back to the characters.
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# Markdown chat tools notify on '@channel', '@here', '@all', '@everyone' and '@user', and
# render '[label](url)' as a link and '![x](url)' as an image fetched by every viewer. A
# zero-width space after '@' and between ']' and '(' or '!' and '[' keeps the text as it
# reads and breaks the syntax (Discord's documented way to defuse a mention).
# Chat tools also turn a bare 'scheme://…' into a clickable link; a zero-width space after the
# colon leaves it readable and unlinked.
_MARKUP = re.compile(r"(@)(?=\w)|(\])(?=\()|(!)(?=\[)|(:)(?=//)")


def chat_text(text: str, *, limit: int = 1000) -> str:
    """*text* made inert for Slack- and Markdown-style chat webhooks, on one line.

    Control and invisible characters become visible escapes (``\\x0a``), ``&``, ``<`` and ``>``
    become entities, and mentions, links and images are broken with a zero-width space.
    Longer text is cut at *limit* characters (before escaping) and marked with ``…``.
    """
    if len(text) > limit:
        text = text[:limit] + "…"
    text = _INVISIBLE.sub(
        lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text
    )
    text = _MARKUP.sub(lambda m: m[0] + "\u200b", text)
    return "".join(_ENTITIES.get(ch, ch) for ch in text)


@dataclass(frozen=True, slots=True)
class AlertStats:
    """Counters of an :class:`AlertSender`."""

    queued: int = 0
    delivered: int = 0
    failed: int = 0
    retried: int = 0
    suppressed: int = 0
    pending: int = 0
    capped: int = 0


def _origin(url: str) -> str:
    """The webhook URL without its path, query and user info, for log lines (chat webhooks
    carry their secret in the path or query)."""
    return redact_url(url)


@dataclass(frozen=True, slots=True)
class _Delivery:
    url: str
    body: bytes


class AlertSender:
    """Post alerts to webhooks in the background.

    Args:
        webhook_urls: the receivers; each alert goes to all of them.
        dedup_window: seconds during which an alert with the same key is not sent again.
        max_per_minute: overall cap; alerts over it are suppressed (and counted).
        max_per_scope_per_minute: cap per scope (see :meth:`send`: the collector gives each
            alert its host and its sender as scopes), so that one sender's or one host's
            decoys cannot use up the overall cap and hide another alert.
        timeout: seconds per HTTP attempt.
        max_attempts: attempts per webhook before giving up.
        backoff: first retry delay in seconds; doubles each time, up to ``backoff_max``.
        backoff_max: longest retry delay.
        ssl_context: TLS context for ``https://`` webhooks (default: system trust store).
        queue_size: most deliveries held; the oldest is dropped when full.
        summary_interval: seconds between ``alerts.suppressed`` digests (the first goes out
            at once; what is held back after it goes out this long after it, on a timer).

    Raises:
        ValueError: a webhook URL is not http(s) (plain http only to loopback).
    """

    def __init__(
        self,
        webhook_urls: Sequence[str],
        *,
        dedup_window: float = 3600.0,
        max_per_minute: int = 30,
        max_per_scope_per_minute: int = 5,
        timeout: float = 5.0,
        max_attempts: int = 5,
        backoff: float = 1.0,
        backoff_max: float = 60.0,
        ssl_context: Any = None,
        queue_size: int = 1000,
        summary_interval: float = 60.0,
    ) -> None:
        self.webhook_urls = tuple(webhook_urls)
        for url in self.webhook_urls:
            check_endpoint_url(url)
        self._dedup_window = dedup_window
        self._max_per_minute = max_per_minute
        self._timeout = timeout
        self._ssl_context = ssl_context
        self._sent_keys: dict[str, float] = {}
        self._max_per_scope = max_per_scope_per_minute
        self._recent: collections.deque[float] = collections.deque()
        self._scope_recent: dict[str, collections.deque[float]] = {}
        self._suppressed = 0
        self._capped = 0  # suppressed by a cap (not by deduplication)
        self._held = HeldBack()
        self._summary_interval = summary_interval
        self._summaries = 0
        self._last_summary = -1e9
        self._timer: threading.Timer | None = None
        self._sender: RetrySender[_Delivery] = RetrySender(
            self._deliver, name="tlspin-alerts", queue_size=queue_size,
            max_attempts=max_attempts, backoff=backoff, backoff_max=backoff_max,
            on_error=lambda item: log.exception("alert webhook %s failed", _origin(item.url)),
        )

    def send(self, kind: str, key: str, payload: Mapping[str, Any], *, text: str = "",
             scopes: Sequence[str] = ()) -> bool:
        """Queue an alert; return False if it was suppressed (duplicate key, cap, closed).

        Args:
            kind: what happened, e.g. ``"incident.opened"`` or ``"monitor.red"``.
            key: identity for deduplication, e.g. ``"incident:42"``.
            payload: JSON-serialisable details.
            text: a one-line human summary in plain text (defaults to kind and key); it is
                passed through :func:`chat_text`, so values quoted in it cannot format,
                mention, link or break the line.
            scopes: names this alert counts under besides the overall cap, each with its own
                cap per minute (e.g. ``"host:a.example"``, ``"sender:192.0.2.7"``).

        Every alert a cap suppresses is named by its host (the ``host:`` scope, else the
        payload's ``hostname``, ``endpoint`` or ``host``, else the key) in a digest alert (kind
        ``alerts.suppressed``, which no cap holds back): the first at once, the next one
        *summary_interval* later if more were held back meanwhile, and at :meth:`close`. The
        digest lists hosts round-robin over the ``sender:`` scopes, so an attacker who floods
        the caps with decoys cannot make an alert vanish unseen or push it out of the listing.
        """
        if not self.webhook_urls:
            return False
        body = self._body(kind, key, payload, text or f"tlspin {kind}: {key}")
        with self._sender.lock:
            now = time.monotonic()
            if self._sender.closed:
                self._suppressed += 1
                return False
            sent = self._sent_keys.get(key)
            if sent is not None and now - sent < self._dedup_window:
                self._suppressed += 1
                return False
            windows = [self._window(self._recent, now, self._max_per_minute)]
            windows += [self._window(self._scope_window(scope), now, self._max_per_scope)
                        for scope in scopes]
            if any(window is None for window in windows):
                self._cap_tripped(kind, key, payload, scopes, now)
                return False
            for window in windows:
                assert window is not None  # Defensive: checked just above
                window.append(now)
            if len(self._sent_keys) > 10_000:
                horizon = now - self._dedup_window
                self._sent_keys = {k: t for k, t in self._sent_keys.items() if t >= horizon}
            self._sent_keys[key] = now
            self._offer(body)
        return True

    @staticmethod
    def _body(kind: str, key: str, payload: Mapping[str, Any], text: str, *,
              limit: int = 1000) -> bytes:
        return json.dumps(
            {
                "kind": kind,
                "key": key,
                "time": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "text": chat_text(text, limit=limit),
                "payload": dict(payload),
            },
            separators=(",", ":"),
            default=str,
        ).encode()

    def _offer(self, body: bytes) -> None:
        for url in self.webhook_urls:
            self._sender.offer(_Delivery(url, body))

    def _scope_window(self, scope: str) -> collections.deque[float]:
        window = self._scope_recent.get(scope)
        if window is None:
            if len(self._scope_recent) > 10_000:  # forget scopes quiet for a minute
                horizon = time.monotonic() - 60
                self._scope_recent = {
                    s: w for s, w in self._scope_recent.items() if w and w[-1] > horizon
                }
            window = self._scope_recent[scope] = collections.deque()
        return window

    @staticmethod
    def _window(
        window: collections.deque[float], now: float, cap: int
    ) -> collections.deque[float] | None:
        """*window* pruned to the last minute, or None when it is full."""
        while window and now - window[0] > 60.0:
            window.popleft()
        return None if len(window) >= cap else window

    def _cap_tripped(self, kind: str, key: str, payload: Mapping[str, Any],
                     scopes: Sequence[str], now: float) -> None:
        """Count and remember a capped alert; send the digest now if none went out within
        the summary interval, else make sure one goes out when it ends."""
        self._suppressed += 1
        self._capped += 1
        host = sender = None
        for scope in scopes:
            name, _, value = scope.partition(":")
            if name == "host" and host is None:
                host = value
            elif name == "sender" and sender is None:
                sender = value
        if host is None:
            found = (payload.get(field) for field in ("hostname", "endpoint", "host"))
            host = next((str(value) for value in found if value), key)
        self._held.add(sender=sender, host=host, kind=kind, key=key)
        due = self._last_summary + self._summary_interval
        if now >= due:
            self._send_digest(now)
        elif self._timer is None:
            # A timer, not the next alert: after a flood there may be no next alert at all.
            self._timer = threading.Timer(due - now, self._digest_due)
            self._timer.daemon = True
            self._timer.start()

    def _digest_due(self) -> None:
        with self._sender.lock:
            self._timer = None
            if self._held and not self._sender.closed:
                self._send_digest(time.monotonic())

    def _send_digest(self, now: float) -> None:
        """Send what the caps held back as one ``alerts.suppressed`` alert (lock held)."""
        digest = self._held.digest()
        self._last_summary = now
        self._summaries += 1
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        log.warning("%d alert(s) suppressed by the rate caps, for %s",
                    digest.payload["suppressed"], ", ".join(digest.hosts[:10]))
        self._offer(self._body(
            "alerts.suppressed", f"suppressed:{stamp}:{self._summaries}",
            {**digest.payload, "max_per_minute": self._max_per_minute,
             "max_per_scope_per_minute": self._max_per_scope},
            digest.text, limit=TEXT_LIMIT,
        ))

    def _deliver(self, item: _Delivery, _attempt: int) -> Outcome:
        try:
            status = post_json(item.url, item.body, ssl_context=self._ssl_context,
                               timeout=self._timeout)
        except (OSError, http.client.HTTPException) as exc:
            log.warning("alert webhook %s failed: %s", _origin(item.url), exc)
            return "retry"
        outcome = classify_status(status)
        if outcome != "sent":
            log.warning("alert webhook %s answered HTTP %d", _origin(item.url), status)
        return outcome

    @property
    def stats(self) -> AlertStats:
        """The counters now."""
        with self._sender.lock:
            c = self._sender.counts()
            return AlertStats(
                queued=c["queued"], delivered=c["sent"], failed=c["failed"] + c["dropped"],
                retried=c["retried"], suppressed=self._suppressed, pending=c["pending"],
                capped=self._capped,
            )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until nothing is pending; False on timeout."""
        return self._sender.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Send the digest of what the caps still hold back, flush for up to *timeout*
        seconds, then stop; later alerts are suppressed."""
        with self._sender.lock:
            timer, self._timer = self._timer, None
            if self._held and not self._sender.closed:
                self._send_digest(time.monotonic())
        if timer is not None:
            timer.cancel()
        self._sender.close(timeout)
