"""Alert webhooks: JSON POSTs with retries, exponential backoff and storm deduplication.

:class:`AlertSender` is shared by the collector (a new incident, a host over its report rate)
and the monitor (an endpoint turning red, or amber for a new reason). ``send`` never blocks:
delivery happens in a background thread. An alert whose *key* was already sent within
``dedup_window`` is suppressed, and an overall cap per minute stops storms.

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
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tlspin._shared.sender import Outcome, RetrySender, classify_status
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
_MARKUP = re.compile(r"(@)(?=\w)|(\])(?=\()|(!)(?=\[)")


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


def _origin(url: str) -> str:
    """The webhook URL without its path, query and user info, for log lines.

    Chat webhooks (Slack, Teams, Discord...) carry their secret in the path or query, so
    logging the whole URL would leak a token.
    """
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    hidden = "/…" if parts.path not in ("", "/") or parts.query else ""
    return f"{parts.scheme}://{netloc}{hidden}"


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
        self._ssl_context = ssl_context
        self._sent_keys: dict[str, float] = {}
        self._recent: collections.deque[float] = collections.deque()
        self._suppressed = 0
        self._sender: RetrySender[_Delivery] = RetrySender(
            self._deliver, name="tlspin-alerts", queue_size=queue_size,
            max_attempts=max_attempts, backoff=backoff, backoff_max=backoff_max,
            on_error=lambda item: log.exception("alert webhook %s failed", _origin(item.url)),
        )

    def send(self, kind: str, key: str, payload: Mapping[str, Any], *, text: str = "") -> bool:
        """Queue an alert; return False if it was suppressed (duplicate key, storm, closed).

        Args:
            kind: what happened, e.g. ``"incident.opened"`` or ``"monitor.red"``.
            key: identity for deduplication, e.g. ``"incident:42"``.
            payload: JSON-serialisable details.
            text: a one-line human summary in plain text (defaults to kind and key); it is
                passed through :func:`chat_text`, so values quoted in it cannot format,
                mention, link or break the line.
        """
        if not self.webhook_urls:
            return False
        body = json.dumps(
            {
                "kind": kind,
                "key": key,
                "time": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "text": chat_text(text or f"tlspin {kind}: {key}"),
                "payload": dict(payload),
            },
            separators=(",", ":"),
            default=str,
        ).encode()
        with self._sender.lock:
            now = time.monotonic()
            if self._sender.closed:
                self._suppressed += 1
                return False
            sent = self._sent_keys.get(key)
            if sent is not None and now - sent < self._dedup_window:
                self._suppressed += 1
                return False
            while self._recent and now - self._recent[0] > 60.0:
                self._recent.popleft()
            if len(self._recent) >= self._max_per_minute:
                self._suppressed += 1
                log.warning("alert %s suppressed: over %d alerts per minute", key,
                            self._max_per_minute)
                return False
            self._recent.append(now)
            if len(self._sent_keys) > 10_000:
                horizon = now - self._dedup_window
                self._sent_keys = {k: t for k, t in self._sent_keys.items() if t >= horizon}
            self._sent_keys[key] = now
            for url in self.webhook_urls:
                self._sender.offer(_Delivery(url, body))
        return True

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
            )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until nothing is pending; False on timeout."""
        return self._sender.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Flush for up to *timeout* seconds, then stop; later alerts are suppressed."""
        self._sender.close(timeout)
