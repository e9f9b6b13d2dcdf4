"""`BundleUpdater`: keeps the pins in force up to date from signed bundles, never unpinned.

The updater is a :class:`tlspin.PolicySource`: a context made with
``tlspin.create_context(updater)`` reads :meth:`BundleUpdater.current_policy` at every new
handshake, so new connections use new pins at once. Connections already open (keep-alive pools)
keep the pins they were checked with; see docs/bundle-format.md, "Picking up new pins".
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import logging
import random
import threading
import urllib.parse
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tlspin._shared.deadline import Deadline
from tlspin._shared.net import Service
from tlspin._shared.numbers import decimal
from tlspin.bundles.errors import BundleError, BundleWarning
from tlspin.bundles.events import BundleEvent, EventKind, RefreshResult
from tlspin.bundles.format import DEFAULT_MAX_BYTES, Bundle, parse_document
from tlspin.bundles.keys import KeySet, PublicKey
from tlspin.bundles.revocations import with_denies
from tlspin.bundles.store import BundleStore
from tlspin.bundles.verify import DEFAULT_CLOCK_SKEW, TrustState, Verified, accept, require_pinned
from tlspin.exceptions import PolicyError
from tlspin.policy import PinPolicy

__all__ = ["BundleEvent", "BundleUpdater", "RefreshResult"]

log = logging.getLogger("tlspin.bundles")


def _now() -> dt.datetime:
    """The current UTC time (one seam, so tests can move the clock)."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True, eq=False)
class _InForce:
    policy: PinPolicy
    expires_at: dt.datetime | None
    version: int | None


class BundleUpdater(Service):
    """Fetch, verify, store and apply signed pin bundles.

    Args:
        url: ``https://`` URL of the bundle document.
        trusted_keys: the signing keys shipped with the application (base64 text, raw bytes
            or :class:`~tlspin.bundles.PublicKey`).
        threshold: how many of them must sign.
        store: a :class:`~tlspin.bundles.BundleStore` or its directory.
        fallback_policy: the policy shipped with the application. It must pin the update
            host with an enforced rule, because even the first fetch is pinned. Its observers
            also receive the violations of every bundle's policy (``reporter.attach(policy)``
            reports them all), and a :class:`tlspin.Reporter` among them pins its report
            connection with this updater's policy in force, not with the fallback's rules.
        interval: seconds between refreshes in background mode.
        cafile: CA file for the fetch (default: the system trust store).
        timeout: seconds the whole fetch may take: name lookup, connect, TLS handshake,
            response head and body together (an overall deadline, not a per-read timeout).
        max_bytes: size cap of a served document; the body is streamed and the download
            stops past it.
        clock_skew: how far in the future ``issued_at`` may lie (seconds or timedelta).
        min_version: refuse bundle versions up to this one even on a fresh store (ship the
            version current at release time to stop replays of older bundles).
        observers: callables receiving every :class:`BundleEvent`; one that raises is ignored.

    Raises:
        PolicyError: the URL is not https, or the fallback policy does not pin its host.
        BundleError: a trusted key is invalid, or the threshold is out of range.
    """

    def __init__(
        self,
        url: str,
        *,
        trusted_keys: Iterable[PublicKey | str | bytes],
        threshold: int = 1,
        store: BundleStore | str | Path,
        fallback_policy: PinPolicy,
        interval: float = 3600.0,
        cafile: str | None = None,
        timeout: float = 10.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock_skew: float | dt.timedelta = DEFAULT_CLOCK_SKEW,
        min_version: int = 0,
        observers: Iterable[Callable[[BundleEvent], object]] = (),
    ) -> None:
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port or 443
        except ValueError as exc:
            raise PolicyError(f"the bundle URL {url!r} is invalid: {exc}") from None
        if parts.scheme != "https" or not parts.hostname:
            raise PolicyError(f"the bundle URL must be https://host/…, found {url!r}")
        if parts.username or parts.password:
            msg = "the bundle URL must not carry credentials"
            raise PolicyError(msg)
        if not isinstance(fallback_policy, PinPolicy):
            raise PolicyError(
                f"fallback_policy must be a PinPolicy, found {type(fallback_policy).__name__}"
            )
        host = parts.hostname
        try:
            require_pinned(fallback_policy, host)
        except BundleError:
            raise PolicyError(
                f"the fallback policy must pin the update host {host} with an enforced rule: "
                "the first fetch is pinned too, and nothing is ever fetched unpinned"
            ) from None
        if interval <= 0 or timeout <= 0:
            raise PolicyError(f"interval and timeout must be positive, found {interval}, {timeout}")
        self._url = url
        self._host = host
        self._port = port
        self._target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        self._fallback = fallback_policy
        self._interval = float(interval)
        self._cafile = cafile
        self._timeout = float(timeout)
        self._max_bytes = max_bytes
        self._skew = (
            clock_skew if isinstance(clock_skew, dt.timedelta) else dt.timedelta(seconds=clock_skew)
        )
        self._min_version = min_version
        self._observers = tuple(observers)
        self._store = (
            store if isinstance(store, BundleStore) else BundleStore(store, max_bytes=max_bytes)
        )
        self._root = TrustState(KeySet(trusted_keys, threshold))
        self._lock = threading.RLock()
        self._refresh_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._deadline: Deadline | None = None
        self._trust = self._root
        self._accepted: Verified | None = None
        self._etag: str | None = None
        self._in_force = _InForce(fallback_policy, None, None)
        self._load()
        if fallback_policy.observers:
            from tlspin.reporting import Reporter

            # A Reporter observing the fallback policy would pin its report connection with
            # the fallback's rules forever, even after a bundle removed and denied the
            # collector's key: it reads this updater's policy in force instead.
            for observer in fallback_policy.observers:
                if isinstance(observer, Reporter):
                    observer._follow(self)

    def __repr__(self) -> str:
        return f"<BundleUpdater {self._url} version={self.version}>"

    # -- the policy in force ----------------------------------------------------------------
    def current_policy(self) -> PinPolicy:
        """The policy for the next handshake: the accepted bundle's, or the embedded one.

        An accepted bundle that has expired is replaced by the embedded fallback policy (with
        a :class:`~tlspin.bundles.BundleWarning` and an ``"expired"`` event), never by nothing;
        the expired bundle's deny pins stay in force on top of it
        (:func:`tlspin.bundles.revocations.with_denies`).
        """
        state = self._in_force
        if state.expires_at is not None and _now() >= state.expires_at:
            self._expire(state)
            return self._in_force.policy
        return state.policy

    @property
    def version(self) -> int | None:
        """The bundle version in force; None while the embedded fallback policy is."""
        self.current_policy()
        return self._in_force.version

    @property
    def accepted_version(self) -> int | None:
        """The newest version accepted so far (expired or not): older ones are refused."""
        accepted = self._accepted
        return None if accepted is None else accepted.bundle.version

    @property
    def bundle(self) -> Bundle | None:
        """The newest accepted bundle (possibly expired), or None."""
        accepted = self._accepted
        return None if accepted is None else accepted.bundle

    @property
    def signing_keys(self) -> KeySet:
        """The keys (and threshold) a new bundle must be signed by, after any rotation."""
        return self._trust.keys

    @property
    def fallback_policy(self) -> PinPolicy:
        """The embedded policy given at construction."""
        return self._fallback

    @property
    def url(self) -> str:
        """The update URL."""
        return self._url

    @property
    def store(self) -> BundleStore:
        """The bundle store."""
        return self._store

    # -- loading and applying -----------------------------------------------------------------
    def _load(self) -> None:
        report = self._store.load(self._root, min_version=self._min_version, pinned_host=self._host)
        events: list[BundleEvent] = []
        loaded = report.loaded
        if loaded is not None:
            self._apply(loaded.verified, loaded.etag)
        for name, error in report.problems:
            fallback = (
                f"bundle version {loaded.verified.bundle.version} from {loaded.source} file"
                if loaded is not None
                else "the embedded fallback policy"
            )
            events.append(
                self._event(
                    "store-fallback",
                    f"stored bundle {self._store.directory / name} refused ({error}); "
                    f"using {fallback}",
                    reason=error.reason,
                )
            )
        for event in events:
            self._notify(event, warn=True)
        self.current_policy()  # an expired stored bundle falls back right away, and says so

    def _apply(self, verified: Verified, etag: str | None) -> None:
        policy = verified.policy
        if self._fallback.observers:
            policy = policy.with_observers(*self._fallback.observers)
        with self._lock:
            self._accepted = verified
            self._trust = verified.trust
            self._etag = etag
            self._in_force = _InForce(policy, verified.bundle.expires_at, verified.bundle.version)

    def _expire(self, state: _InForce) -> None:
        with self._lock:
            if self._in_force is not state:
                return
            # Revocations outlive their bundle: the expired bundle's deny pins stay in force on
            # top of the embedded policy, which may still pin a key the bundle denied.
            accepted = self._accepted
            fallback = with_denies(self._fallback, None if accepted is None else accepted.policy)
            self._in_force = _InForce(fallback, None, None)
        expired = state.expires_at.isoformat() if state.expires_at else "?"
        self._notify(
            self._event(
                "expired",
                f"bundle version {state.version} expired at {expired}; the embedded fallback "
                "policy is in force until a newer bundle arrives",
                reason="expired",
                version=state.version,
            ),
            warn=True,
        )

    # -- refreshing -----------------------------------------------------------------------
    def refresh(self) -> RefreshResult:
        """Fetch the bundle once, over a connection pinned with the policy in force.

        Never raises for network errors or bad bundles: they leave the pins in force as they
        are, go to the observers and the log, and show in the result.
        """
        with self._refresh_lock:
            in_force = self.current_policy()
            try:
                status, body, etag = self._fetch(in_force)
            except BundleError as exc:
                return self._reject(exc, None)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                # ValueError: the stdlib's answer to some malformed responses and names
                # (UnicodeError among them); the server's fault, not the caller's.
                return self._failed(f"fetching {self._url} failed: {exc}")
            except Exception as exc:  # refresh() never raises for network or server errors
                log.exception("unexpected error while fetching %s", self._url)
                return self._failed(
                    f"fetching {self._url} failed: unexpected {type(exc).__name__}: {exc}"
                )
            if status == 304:
                return RefreshResult("not-modified", self._in_force.version)
            if status != 200:
                return self._failed(f"fetching {self._url} returned HTTP {status}")
            accepted = self._accepted
            try:
                document = parse_document(body, max_bytes=self._max_bytes)
                verified = accept(
                    document,
                    trust=self._trust,
                    current=None if accepted is None else accepted.bundle,
                    min_version=self._min_version,
                    now=_now(),
                    clock_skew=self._skew,
                    pinned_host=self._host,
                )
            except BundleError as exc:
                served = None
                with contextlib.suppress(BundleError):
                    served = parse_document(body, max_bytes=self._max_bytes).bundle.version
                return self._reject(exc, served)
            if verified.unchanged:
                if etag is not None:
                    self._etag = etag
                return RefreshResult("unchanged", self._in_force.version)
            try:
                self._store.save(
                    verified.document,
                    previous=None if accepted is None else accepted.document,
                    etag=etag,
                )
            except OSError as exc:
                self._notify(
                    self._event(
                        "store-error",
                        f"bundle version {verified.bundle.version} is in force but could not be "
                        f"stored: {exc}",
                        version=verified.bundle.version,
                    )
                )
            self._apply(verified, etag)
            version = verified.bundle.version
            self._notify(
                self._event("updated", f"bundle version {version} is in force", version=version)
            )
            return RefreshResult("updated", version)

    def _reject(self, error: BundleError, version: int | None) -> RefreshResult:
        message = f"refused the bundle from {self._url}: {error}"
        self._notify(self._event("rejected", message, reason=error.reason, version=version))
        return RefreshResult("rejected", self._in_force.version, error.reason, message)

    def _failed(self, message: str) -> RefreshResult:
        self._notify(self._event("fetch-failed", message))
        return RefreshResult("failed", self._in_force.version, None, message)

    def _fetch(self, in_force: PinPolicy) -> tuple[int, bytes, str | None]:
        from tlspin._shared.deadline import exchange
        from tlspin.context import create_context

        # The update channel never fails open, whatever the policy says about expired rules.
        policy = PinPolicy(in_force.rules, on_expiry="enforce", observers=in_force.observers)
        context = create_context(policy, cafile=self._cafile)
        headers = {"Accept": "application/json", "User-Agent": "tlspin-bundle-updater",
                   "Connection": "close"}
        if self._etag is not None and self._accepted is not None:
            headers["If-None-Match"] = self._etag
        # One deadline bounds the whole fetch (connect, handshake, head and body), not each read:
        # a server that drips bytes cannot hold the refresh lock past it. stop() fires it early.
        deadline = Deadline(self._timeout)
        self._deadline = deadline
        try:
            response = exchange(
                "GET", self._host, self._port, self._target, context=context,
                timeout=self._timeout, headers=headers, max_body=self._max_bytes,
                deadline=deadline,
            )
        finally:
            self._deadline = None
        if response.status != 200:
            return response.status, b"", None
        if response.truncated:
            # The rest of an oversized body was never read, let alone kept in memory.
            length = decimal((response.header("Content-Length") or "").strip())
            found = (
                f"the server announces {length} bytes"
                if length is not None
                else "the body is longer (download stopped)"
            )
            raise BundleError(f"at most {self._max_bytes} bytes are accepted; {found}",
                              reason="size")
        etag = response.header("ETag")
        if etag is not None and (len(etag) > 512 or not etag.isprintable()):
            etag = None
        return 200, response.body, etag

    # -- background mode --------------------------------------------------------------------
    def start(self) -> None:
        """Refresh now and then every *interval* seconds in a daemon thread (idempotent)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stop,), name="tlspin-bundle-updater", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the background thread; wait at most *timeout* seconds (default: the fetch timeout
        plus one). Returns True when the thread has ended."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        deadline = self._deadline
        if deadline is not None:
            deadline.fire()  # wake a fetch blocked in connect or recv
        if thread is None:
            return True
        thread.join(self._timeout + 1 if timeout is None else timeout)
        return not thread.is_alive()

    close = stop

    @property
    def running(self) -> bool:
        """True while the background thread runs."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.refresh()
            except Exception:
                log.exception("tlspin bundle refresh raised; the pins in force are unchanged")
            # Jitter spreads a fleet's requests; it has no security role.
            stop.wait(self._interval * random.uniform(0.9, 1.1))  # noqa: S311

    # -- events -----------------------------------------------------------------------------
    def _event(
        self,
        kind: EventKind,
        message: str,
        *,
        reason: str | None = None,
        version: int | None = None,
    ) -> BundleEvent:
        return BundleEvent(
            kind=kind,
            message=message,
            url=self._url,
            time=_now(),
            reason=reason,
            version=version,
            in_force=self._in_force.version,
        )

    def _notify(self, event: BundleEvent, *, warn: bool = False) -> None:
        level = logging.INFO if event.kind == "updated" else logging.WARNING
        log.log(level, "%s", event.message)
        for observer in self._observers:
            try:
                observer(event)
            except Exception:
                log.exception("a tlspin bundle observer raised; ignored")
        if warn:
            warnings.warn(event.message, BundleWarning, stacklevel=3)
