"""Violation reports: pin failures become JSON reports, sent by a background thread.

A :class:`Reporter` is a policy observer (``reporter.attach(policy)``). The observer call made in
the handshake path only puts the frozen :class:`tlspin.Violation` on a bounded in-memory queue;
building the JSON and the HTTP POST happen in a daemon thread, so a slow or dead collector can
never delay a pinned connection. Async clients use the same thread: the observer call neither
blocks nor awaits anything.

Reports carry the RFC 7469 §3 fields plus tlspin's own (``mode``, ``reason``, ``rule``,
``app-id``, ``app-version``, ``tlspin-version``). Like TrustKit, identical reports (everything
but the timestamps) are sent once per ``dedup_window``.

Reporting is opt-in: tlspin has no default endpoint and never sends anything unless a
:class:`Reporter` with a URI (or a rule with ``report_uri``) is attached.

The report travels pinned when it can: if the endpoint's host is covered by the policy in force
(the policy the reporter is attached to, the :class:`~tlspin.bundles.BundleUpdater` whose
fallback policy it observes, or ``policy=``), the report connection is checked against that
policy's pins as they are at send time, so the attacker a report is about cannot read or drop it
by intercepting the report too. A report is never sent to the host whose connection failed
(Chromium's loop rule). Each delivery attempt is bounded by one overall deadline (connect,
handshake, response).

A rule's own ``report_uri`` comes with the policy (a bundle, an imported HPKP header), not from
the application: it gets neither the reporter's ``headers`` (an API key is for the reporter's
own endpoint) nor, unless ``allow_private_report_uris=True``, a connection to a loopback,
private, link-local or otherwise non-public address, checked on the address actually connected
to, so a name resolving to 127.0.0.1 is refused like the literal (no request forgery toward the
client's own machine or network).
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import http.client
import json
import logging
import ssl
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tlspin._shared.endpoints import (
    check_endpoint_url,
    is_public_address,
    post_json,
    report_uri_concern,
)
from tlspin._shared.sender import Outcome, RetrySender, classify_status
from tlspin.policy import PinPolicy

if TYPE_CHECKING:
    from tlspin.context import PolicySource
    from tlspin.policy import PinRule
    from tlspin.verify import Violation

__all__ = [
    "Reporter",
    "ReporterStats",
    "build_report",
    "check_endpoint_url",
    "is_public_address",
    "post_json",
    "report_uri_concern",
]

log = logging.getLogger("tlspin.reporting")

#: Version of the tlspin report format (the ``tlspin-report-format`` field).
REPORT_FORMAT = 1
_SEEN_PRUNE_AT = 10_000


@dataclass(frozen=True, slots=True)
class ReporterStats:
    """Counters of a :class:`Reporter`, taken at one instant.

    Attributes:
        queued: reports accepted onto the queue.
        sent: reports the endpoint acknowledged with a 2xx status.
        failed: reports given up on (a permanent error or too many attempts).
        retried: delivery attempts scheduled again after a transient failure.
        dropped: reports evicted from a full queue (oldest first) or left unsent at close.
        deduplicated: reports skipped because an identical one was sent within the window.
        rate_limited: reports skipped by the overall rate limit.
        refused: reports not sent because the endpoint is on the failing host (loop rule).
        pending: reports waiting in the queue or being sent right now.
    """

    queued: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    dropped: int = 0
    deduplicated: int = 0
    rate_limited: int = 0
    refused: int = 0
    pending: int = 0


def _pem(der: bytes) -> str:
    b64 = base64.b64encode(der).decode("ascii")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def _known_pin(pin: object) -> str:
    hpkp = getattr(pin, "hpkp", None)
    # Certificate pins have no HPKP notation; their own ``cert-sha256/<hex>`` form is kept.
    return hpkp if isinstance(hpkp, str) else str(pin)


def _tlspin_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tlspin")
    except PackageNotFoundError:  # Defensive: running from a source tree without metadata.
        return "0+unknown"


def _utc(moment: dt.datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_report(
    violation: Violation,
    *,
    app_id: str | None = None,
    app_version: str | None = None,
    rules: Sequence[PinRule] | None = None,
) -> dict[str, object]:
    """Build the JSON report (a dict) for *violation*.

    Args:
        violation: the pin failure.
        app_id: identifier of the reporting application (``app-id``).
        app_version: version of the reporting application (``app-version``).
        rules: the failing rules to describe; defaults to all of ``violation.rules``.

    Returns:
        A JSON-serialisable dict with the RFC 7469 fields and tlspin's own.
    """
    rules = tuple(violation.rules if rules is None else rules)
    expires = [r.expires for r in rules if r.expires is not None]
    return {
        "date-time": _utc(violation.time),
        "hostname": violation.hostname,
        "port": violation.port,
        "effective-expiration-date": (
            f"{min(expires).isoformat()}T00:00:00Z" if expires else None
        ),
        "include-subdomains": violation.include_subdomains,
        "noted-hostname": violation.noted_hostname,
        "served-certificate-chain": [_pem(der) for der in violation.served_chain],
        "validated-certificate-chain": [_pem(der) for der in violation.verified_chain],
        "known-pins": [_known_pin(p) for p in violation.expected],
        "tlspin-report-format": REPORT_FORMAT,
        "tlspin-version": _tlspin_version(),
        "mode": violation.mode,
        "reason": violation.reason,
        "rule": [str(pattern) for rule in rules for pattern in rule.hosts],
        "app-id": app_id,
        "app-version": app_version,
    }


@dataclass(frozen=True, slots=True)
class _Item:
    """One report on its way to one endpoint."""

    destination: str
    violation: Violation
    key: tuple[object, ...]


class Reporter:
    """Send a JSON report for every pin violation, in the background.

    A Reporter is an observer: attach it with :meth:`attach` (or pass it in
    ``PinPolicy(observers=…)``). Calling it never blocks and never raises.

    Args:
        uri: the default report endpoint. A rule's own ``report_uri`` takes precedence for
            that rule's violations; with ``uri=None`` only rules naming a ``report_uri`` report.
        app_id: application identifier put in each report.
        app_version: application version put in each report.
        ssl_context: TLS context for the report endpoint, used exactly as given (e.g. one made
            by :func:`tlspin.create_context` to pin the collector). Without it, the report
            connection is pinned with the policy in force when that covers the endpoint's host,
            and verified against the CAs (*cafile*, or the system trust store) in any case.
        policy: the policy (or :class:`tlspin.PolicySource`, e.g. a ``BundleUpdater``, read at
            each delivery) that pins the report endpoint. Without it, :meth:`attach` sets it to
            the policy attached to, and a ``BundleUpdater`` whose ``fallback_policy`` has this
            reporter as an observer replaces that with itself, so reports are pinned with the
            bundle in force, never with the fallback's stale pins.
        cafile: CA certificates (PEM) that verify the report endpoint, instead of the system
            trust store (ignored with *ssl_context*).
        queue_size: most reports held waiting; when full, the oldest is dropped and counted.
        rate_limit: ``(count, seconds)``: at most *count* reports accepted per *seconds*.
        dedup_window: seconds during which an identical report is not sent again.
        timeout: seconds allowed to connect, and for each read, per attempt.
        max_attempts: delivery attempts per report before it counts as failed.
        backoff: delay before the first retry, in seconds; doubles at every retry.
        backoff_max: upper bound on the retry delay.
        jitter: randomise each retry delay between half and all of it, so that many clients
            that failed together do not retry together.
        headers: extra HTTP headers for each request to *uri* (e.g. an API key); never sent
            to a rule's own ``report_uri``.
        allow_private_report_uris: let a rule's own ``report_uri`` reach loopback, private,
            link-local and other non-public addresses (checked on the address connected to,
            after name resolution). Off by default: the policy, not the application, names
            those URIs. *uri* itself may always be local (e.g. ``http://127.0.0.1:8787``).

    Raises:
        ValueError: an option is invalid (for instance an ``http://`` URI that is not loopback).
    """

    def __init__(
        self,
        uri: str | None = None,
        *,
        app_id: str | None = None,
        app_version: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        queue_size: int = 100,
        rate_limit: tuple[int, float] = (60, 60.0),
        dedup_window: float = 24 * 3600.0,
        timeout: float = 10.0,
        max_attempts: int = 6,
        backoff: float = 2.0,
        backoff_max: float = 600.0,
        jitter: bool = True,
        headers: Mapping[str, str] | None = None,
        policy: PinPolicy | PolicySource | None = None,
        cafile: str | None = None,
        allow_private_report_uris: bool = False,
    ) -> None:
        if uri is not None:
            check_endpoint_url(uri)
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, found {queue_size}")
        count, per = rate_limit
        if count < 1 or per <= 0:
            raise ValueError(f"rate_limit must be (count ≥ 1, seconds > 0), found {rate_limit}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, found {max_attempts}")
        if timeout <= 0 or backoff < 0 or backoff_max < 0 or dedup_window < 0:
            msg = "timeout must be positive; backoff and windows must not be negative"
            raise ValueError(msg)
        self.uri = uri
        self.app_id = app_id
        self.app_version = app_version
        self._ssl_context = ssl_context
        self._policy = policy
        self._policy_given = policy is not None
        self._cafile = cafile
        self._rate = (float(count), float(per))
        self._tokens = float(count)
        self._refilled = time.monotonic()
        self._dedup_window = dedup_window
        self._timeout = timeout
        self._headers = dict(headers or {})
        self._allow_private = allow_private_report_uris
        self._seen: dict[tuple[object, ...], float] = {}
        self._counts: collections.Counter[str] = collections.Counter()
        self._sender: RetrySender[_Item] = RetrySender(
            self._deliver, name="tlspin-reporter", queue_size=queue_size,
            max_attempts=max_attempts, backoff=backoff, backoff_max=backoff_max, jitter=jitter,
            # A report never delivered is forgotten: an identical violation later may be
            # reported again.
            on_discard=lambda item: self._seen.pop(item.key, None),
            on_error=lambda _item: log.exception("tlspin reporter failed to deliver a report"),
        )

    # -- observer side (runs in the handshake path) ---------------------------------------
    def attach(self, policy: PinPolicy) -> PinPolicy:
        """Return a copy of *policy* that reports its violations through this reporter.

        Unless the reporter was given ``policy=`` or ``ssl_context=``, *policy* also pins the
        report connection when it covers the endpoint's host (the latest attached policy). A
        ``BundleUpdater`` given the returned policy as ``fallback_policy`` takes its place: the
        report connection is then pinned with the updater's policy in force at each delivery.
        """
        if self._ssl_context is None and not self._policy_given:
            self._policy = PinPolicy(policy.rules, on_expiry=policy.on_expiry)
        return policy.with_observers(self)

    def _follow(self, source: PolicySource) -> None:
        """Pin the report connection with *source*'s policy in force at each delivery.

        Called by a ``BundleUpdater`` whose fallback policy this reporter observes: the
        updater's policy, not the fallback's rules, is what the application's connections use
        (a bundle may have removed and denied the collector's old key). Given ``policy=`` or
        ``ssl_context=`` take precedence.
        """
        if self._ssl_context is None and not self._policy_given:
            self._policy = source

    def __call__(self, violation: Violation) -> None:
        """Queue *violation* for reporting; never blocks on I/O and never raises."""
        try:
            self._offer(violation)
        except Exception:  # reporting must never affect the connection
            log.exception("tlspin reporter could not queue a violation report; ignored")

    def _offer(self, violation: Violation) -> None:
        # Destinations and the loop rule are worked out before taking the lock, which the
        # sender thread shares, so that the handshake path holds it only for a few look-ups.
        targets = [(d, self._loops(d, violation)) for d in self._destinations(violation)]
        refused = [d for d, loops in targets if loops]
        with self._sender.lock:
            if self._sender.closed:
                self._counts["dropped"] += 1
                return
            now = time.monotonic()
            self._counts["refused"] += len(refused)
            for destination, loops in targets:
                if loops:
                    continue
                key = (
                    destination, violation.hostname, violation.port, violation.mode,
                    violation.reason, violation.verified_chain, violation.served_chain,
                    violation.expected,
                )
                seen = self._seen.get(key)
                if seen is not None and now - seen < self._dedup_window:
                    self._counts["deduplicated"] += 1
                    continue
                if not self._take_token(now):
                    self._counts["rate_limited"] += 1
                    continue
                self._remember(key, now)
                self._sender.offer(_Item(destination, violation, key))
        for destination in refused:
            log.warning(
                "not sending a pin report for %s to %s: the report endpoint is on the host "
                "whose connection failed", violation.hostname, destination,
            )

    def _destinations(self, violation: Violation) -> list[str]:
        out: dict[str, None] = {}
        for rule in violation.rules:
            target = rule.report_uri or self.uri
            if target:
                out[target] = None
        return list(out)

    @staticmethod
    def _loops(destination: str, violation: Violation) -> bool:
        """Chromium's loop rule: never report over a connection to the host that failed.

        A report endpoint covered by a failing rule goes through the same interception (and
        would fail the same check), so it is refused too.
        """
        from tlspin.hosts import canonical_host

        host = urllib.parse.urlsplit(destination).hostname or ""
        try:
            host = canonical_host(host)
        except ValueError:
            return False
        return host == violation.hostname or any(rule.matches(host) for rule in violation.rules)

    def _take_token(self, now: float) -> bool:
        count, per = self._rate
        self._tokens = min(count, self._tokens + (now - self._refilled) * count / per)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def _remember(self, key: tuple[object, ...], now: float) -> None:
        if len(self._seen) >= _SEEN_PRUNE_AT:
            horizon = now - self._dedup_window
            self._seen = {k: t for k, t in self._seen.items() if t >= horizon}
            if len(self._seen) >= _SEEN_PRUNE_AT:  # Defensive: a flood of distinct reports.
                self._seen.clear()
        self._seen[key] = now

    # -- sender side (background thread) -------------------------------------------------
    def _deliver(self, item: _Item, attempt: int) -> Outcome:
        """Send one report; return ``"sent"``, ``"retry"`` or ``"failed"``."""
        rules = [r for r in item.violation.rules if (r.report_uri or self.uri) == item.destination]
        report = build_report(
            item.violation, app_id=self.app_id, app_version=self.app_version, rules=rules
        )
        body = json.dumps(report, separators=(",", ":")).encode("utf-8")
        # The reporter's own endpoint is the application's choice; a rule's report_uri is the
        # policy's (a bundle, an imported header): no API key for it, and no local network.
        own = self.uri is not None and item.destination == self.uri
        try:
            status = post_json(
                item.destination, body, ssl_context=self._context_for(item.destination),
                timeout=self._timeout, headers=self._headers if own else None,
                allow_address=None if own or self._allow_private else is_public_address,
            )
        except ValueError as exc:
            # The URI itself is unusable (e.g. a rule's report_uri with plain http to a remote
            # host, control characters, or a host resolving to a loopback or private address):
            # no retry can fix it.
            log.warning("pin report to %r refused: %s", item.destination, exc)
            return "failed"
        except (OSError, http.client.HTTPException) as exc:
            log.info("pin report to %s failed (attempt %d): %s", item.destination, attempt, exc)
            return "retry"
        outcome = classify_status(status)
        if outcome == "retry":
            log.info("pin report to %s got HTTP %d (attempt %d); will retry",
                     item.destination, status, attempt)
        elif outcome == "failed":
            log.warning("pin report to %s refused with HTTP %d; not retried", item.destination,
                        status)
        return outcome

    def _context_for(self, destination: str) -> ssl.SSLContext | None:
        """The TLS context for one delivery: given, pinned with the policy, or CA-verified."""
        if self._ssl_context is not None:
            return self._ssl_context
        parts = urllib.parse.urlsplit(destination)
        if parts.scheme != "https":
            return None  # plain http is allowed to loopback only (check_endpoint_url)
        source = self._policy
        policy = source if source is None or isinstance(source, PinPolicy) else (
            source.current_policy())
        if policy is not None:
            try:
                covered = bool(policy.rules_for(parts.hostname or ""))
            except ValueError:
                covered = True  # a name the policy cannot read: let the pinned context refuse it
            if covered:
                from tlspin.context import create_context

                # Without observers: a failure of the report connection is not reported (it
                # could only go to the same intercepted endpoint); it is logged and retried.
                bare = PinPolicy(policy.rules, on_expiry=policy.on_expiry)
                return create_context(bare, cafile=self._cafile)
        return ssl.create_default_context(cafile=self._cafile)

    # -- control ------------------------------------------------------------------------
    @property
    def stats(self) -> ReporterStats:
        """The counters now."""
        with self._sender.lock:
            c = self._sender.counts()
            return ReporterStats(
                queued=c["queued"], sent=c["sent"], failed=c["failed"], retried=c["retried"],
                dropped=c["dropped"] + self._counts["dropped"],
                deduplicated=self._counts["deduplicated"],
                rate_limited=self._counts["rate_limited"], refused=self._counts["refused"],
                pending=c["pending"],
            )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued report is sent or given up; return False on timeout.

        Reports waiting for a retry are waited for too.
        """
        return self._sender.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Flush for up to *timeout* seconds, then stop the sender thread.

        Reports still queued after that are dropped (and counted). Later violations are ignored.
        A request in flight to an unresponsive endpoint is abandoned to its own timeout: the
        thread is a daemon and never holds up interpreter exit.
        """
        self._sender.close(timeout)

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Reporter(uri={self.uri!r}, app_id={self.app_id!r})"
