"""Collector settings: one frozen value, built in code or from ``TLSPIN_COLLECTOR_*`` variables."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

__all__ = ["Settings"]

_ENV_SETTINGS = "TLSPIN_COLLECTOR_SETTINGS"
_ENV_TOKEN = "TLSPIN_COLLECTOR_TOKEN"  # noqa: S105 - the variable name, not a secret
_ENV_METRICS_TOKEN = "TLSPIN_COLLECTOR_METRICS_TOKEN"  # noqa: S105 - a variable name
_SECRETS = {"token": _ENV_TOKEN, "metrics_token": _ENV_METRICS_TOKEN}


@dataclass(frozen=True, slots=True)
class Settings:
    """How a collector app behaves.

    Args:
        db_url: SQLAlchemy URL; ``sqlite:///path`` (default) or ``postgresql://…`` (psycopg 3).
        token: the secret that unlocks the dashboard and the query API (bearer token or login
            form). None leaves them open, which only makes sense on a loopback-only bind.
        drop_client_ip: do not store the sender's IP address with reports.
        webhooks: URLs that receive alert JSON (new incident, host rate over threshold).
        max_report_bytes: size cap of a report body; larger bodies get 413.
        ip_rate_limit: ``(count, seconds)`` reports accepted per client IP; more get 429.
        trust_forwarded_for: take the client IP from ``X-Forwarded-For`` (behind a proxy).
        forwarded_hops: with *trust_forwarded_for*, how many proxies of yours append to
            ``X-Forwarded-For``: the client IP is the entry that many places from the end (the
            one your outermost proxy wrote); entries before it are the client's own words.
        alert_rate_threshold: ``(count, seconds)``: alert when a host sends more reports than
            *count* within *seconds*; None disables it.
        alert_dedup_seconds: the same alert (same key) is sent at most once per this window.
        alert_summary_seconds: alerts held back by the caps are named in an
            ``alerts.suppressed`` digest at most this often (the first at once).
        session_hours: lifetime of a dashboard login.
        refresh_seconds: dashboard auto-refresh interval.
        migrate: run the database migrations when the app starts.
        benchmark_noop: add ``POST /reports/noop`` (reads the body, stores nothing) for the
            ingest benchmark.
        intake_process: validate and store reports in a worker process beside the event loop
            (the default; see :mod:`tlspin.collector.intake_worker`). False does that work in
            the app's process, as an in-memory SQLite database always does.
        body_timeout: seconds a client has to send a whole request body; a slower one gets
            408 and the connection is closed.
        header_timeout: seconds a connection has to send a request's head (from the moment it
            opens, or since its last response); a slower one is closed. Applied by
            :class:`tlspin.collector.limits.GuardedHTTP` (which ``tlspin serve`` uses).
        max_connections_per_ip: open connections one client IP may hold at once (None: no
            limit); more are answered 429 and closed. It counts the TCP peer, so it is not
            applied with *trust_forwarded_for* (the proxy in front must limit connections).
            Applied by :class:`tlspin.collector.limits.GuardedHTTP`.
        metrics_token: a second secret that opens ``/metrics`` and nothing else, for a
            Prometheus scraper (``authorization: {credentials_file: …}``). The collector token
            opens ``/metrics`` too.
        metrics_public: serve ``/metrics`` to anybody (for scrapers on a private network that
            cannot send a token). Off by default: the metrics tell an outsider how many
            reports arrive and which are refused.
        secure_cookies: always mark the session cookie ``Secure``, for a collector behind a
            TLS-terminating proxy (which the app sees as plain HTTP). Without it the cookie is
            ``Secure`` when the request came over HTTPS.
        retention_days: delete reports received more than this many days ago, and incidents
            last seen before then, in the background (None: keep everything).
        certfile: serve HTTPS with this certificate chain (PEM file); the TLS handshake is then
            done by :class:`tlspin.collector.limits.GuardedHTTP`, inside the connection cap
            and the head deadline. Needs *keyfile*.
        keyfile: the private key of *certfile* (PEM file).
    """

    db_url: str = "sqlite:///tlspin.db"
    token: str | None = field(default=None, repr=False)
    drop_client_ip: bool = False
    webhooks: tuple[str, ...] = ()
    max_report_bytes: int = 64 * 1024
    ip_rate_limit: tuple[int, float] = (300, 60.0)
    trust_forwarded_for: bool = False
    forwarded_hops: int = 1
    alert_rate_threshold: tuple[int, float] | None = None
    alert_dedup_seconds: float = 3600.0
    alert_summary_seconds: float = 60.0
    session_hours: float = 12.0
    refresh_seconds: int = 30
    migrate: bool = True
    benchmark_noop: bool = False
    intake_process: bool = True
    body_timeout: float = 20.0
    header_timeout: float = 20.0
    max_connections_per_ip: int | None = 32
    metrics_token: str | None = field(default=None, repr=False)
    metrics_public: bool = False
    secure_cookies: bool = False
    retention_days: float | None = None
    certfile: str | None = None
    keyfile: str | None = None

    def __post_init__(self) -> None:
        for what, secret in (("the collector token", self.token),
                             ("the metrics token", self.metrics_token)):
            if secret is not None and len(secret) < 16:
                raise ValueError(f"{what} must be at least 16 characters, found {len(secret)}")
        if self.metrics_token is not None and self.metrics_token == self.token:
            msg = "metrics_token must differ from the collector token (it opens only /metrics)"
            raise ValueError(msg)
        for name in ("body_timeout", "header_timeout"):
            value = getattr(self, name)
            if not 0 < value <= 3600:
                raise ValueError(f"{name} must be seconds in (0, 3600], found {value}")
        limit = self.max_connections_per_ip
        if limit is not None and limit < 1:
            raise ValueError(f"max_connections_per_ip must be at least 1 or None, found {limit}")
        if self.max_report_bytes < 1024:
            raise ValueError(
                f"max_report_bytes must be at least 1024, found {self.max_report_bytes}"
            )
        count, per = self.ip_rate_limit
        if count < 1 or per <= 0:
            raise ValueError(
                f"ip_rate_limit must be (count ≥ 1, seconds > 0), found {self.ip_rate_limit}"
            )
        if self.alert_rate_threshold is not None:
            count, per = self.alert_rate_threshold
            if count < 1 or per <= 0:
                raise ValueError(
                    "alert_rate_threshold must be (count ≥ 1, seconds > 0), "
                    f"found {self.alert_rate_threshold}"
                )
        if not 0 < self.alert_summary_seconds <= 3600:
            raise ValueError(
                f"alert_summary_seconds must be in (0, 3600], found {self.alert_summary_seconds}"
            )
        if not 1 <= self.forwarded_hops <= 16:
            raise ValueError(f"forwarded_hops must be from 1 to 16, found {self.forwarded_hops}")
        if self.retention_days is not None and not 0 < self.retention_days <= 100_000:
            raise ValueError(
                f"retention_days must be in (0, 100000] or None, found {self.retention_days}"
            )
        if (self.certfile is None) != (self.keyfile is None):
            msg = "certfile and keyfile go together; give both or neither"
            raise ValueError(msg)
        object.__setattr__(self, "webhooks", tuple(self.webhooks))

    def to_env(self) -> dict[str, str]:
        """Environment variables that let :meth:`from_env` rebuild these settings in a worker.

        The tokens travel in their own variables so that they never appear in the JSON.
        """
        data = asdict(self)
        env = {}
        for name, variable in _SECRETS.items():
            secret = data.pop(name)
            if secret is not None:
                env[variable] = secret
        env[_ENV_SETTINGS] = json.dumps(data)
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``TLSPIN_COLLECTOR_SETTINGS`` (JSON), ``TLSPIN_COLLECTOR_TOKEN``
        and ``TLSPIN_COLLECTOR_METRICS_TOKEN``.

        Raises:
            ValueError: the JSON is malformed or names an unknown setting.
        """
        env = os.environ if environ is None else environ
        raw = env.get(_ENV_SETTINGS, "{}")
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{_ENV_SETTINGS} must hold a JSON object: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(  # noqa: TRY004 - a configuration error, as the module promises
                f"{_ENV_SETTINGS} must hold a JSON object, found {type(data).__name__}"
            )
        for key in ("webhooks", "ip_rate_limit", "alert_rate_threshold"):
            if isinstance(data.get(key), list):
                data[key] = tuple(data[key])
        for name, variable in _SECRETS.items():
            data[name] = env.get(variable) or None
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"{_ENV_SETTINGS}: {exc}") from None
