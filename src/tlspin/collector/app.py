"""The collector's ASGI app: report intake, query API, metrics and dashboard.

Intake (``POST /reports``) is public, like any ``report-uri``; the dashboard and the query API
need the token. Bad input gets a 4xx with a reason, never a 500: every report field is
attacker-controlled.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from tlspin._shared.numbers import decimal
from tlspin.collector import upkeep
from tlspin.collector.alerts import AlertSender
from tlspin.collector.auth import Auth
from tlspin.collector.formats import ReportError
from tlspin.collector.intake import (
    Accepted,
    AlertFacts,
    InProcessIntake,
    Intake,
    IntakeUnavailable,
)
from tlspin.collector.limits import (
    BodyTimeout,
    ConnectionGuard,
    RequestLimits,
    peer_key,
    server_ssl_context,
)
from tlspin.collector.metrics import Metrics
from tlspin.collector.settings import Settings
from tlspin.collector.storage import Database
from tlspin.collector.web import (
    CSP,
    DirectRoute,
    IPRateLimiter,
    SafeJSONResponse,
    SecurityHeaders,
    client_ip,
    content_length,
)

__all__ = ["CSP", "CollectorState", "SafeJSONResponse", "client_ip", "create_app"]

log = logging.getLogger("tlspin.collector")

#: The largest body any route but ``/reports`` takes (a monitor run of 10,000 endpoints).
MAX_API_BODY_BYTES = 16 * 1024 * 1024

_REPORT_BODY_SCHEMA: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "description": (
                    "A tlspin, RFC 7469 (HPKP) or TrustKit (iOS/Android) pin failure report."
                ),
                "properties": {
                    "date-time": {"type": "string"},
                    "hostname": {"type": "string"},
                    "port": {"type": "integer"},
                    "effective-expiration-date": {"type": ["string", "null"]},
                    "include-subdomains": {"type": "boolean"},
                    "noted-hostname": {"type": "string"},
                    "served-certificate-chain": {"type": "array", "items": {"type": "string"}},
                    "validated-certificate-chain": {
                        "type": "array", "items": {"type": "string"},
                    },
                    "known-pins": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["hostname"],
            }
        }
    },
}


@dataclass(slots=True)
class CollectorState:
    """Everything a request handler needs, kept on ``app.state.tlspin``."""

    settings: Settings
    db: Database
    auth: Auth
    metrics: Metrics
    limiter: IPRateLimiter
    login_limiter: IPRateLimiter
    alerts: AlertSender | None
    rate_checked: dict[str, float]
    intake: Intake
    connections: ConnectionGuard
    overview_cache: dict[str, tuple[float, Any]]


def state_of(request: Request) -> CollectorState:
    """The collector state of the app serving *request*."""
    state: CollectorState = request.app.state.tlspin
    return state


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build a collector app.

    Args:
        settings: how to behave; defaults to ``Settings()`` (SQLite file ``tlspin.db``).

    The database is migrated to the newest schema when the app starts (``settings.migrate``).
    """
    settings = settings or Settings()
    db = Database(settings.db_url)
    metrics = Metrics(db)
    state = CollectorState(
        settings=settings,
        db=db,
        auth=Auth(settings.token, session_seconds=settings.session_hours * 3600,
                  metrics_token=settings.metrics_token,
                  is_revoked=lambda sid: _session_revoked(db, sid)),
        metrics=metrics,
        limiter=IPRateLimiter(*settings.ip_rate_limit),
        login_limiter=IPRateLimiter(10, 60.0),
        overview_cache={},
        alerts=(
            AlertSender(settings.webhooks, dedup_window=settings.alert_dedup_seconds,
                        summary_interval=settings.alert_summary_seconds)
            if settings.webhooks else None
        ),
        rate_checked={},
        intake=_intake(settings, db),
        connections=ConnectionGuard(
            # Behind a proxy every connection comes from the proxy: a cap would starve it.
            max_per_ip=None if settings.trust_forwarded_for else settings.max_connections_per_ip,
            header_timeout=settings.header_timeout,
            on_refused=metrics.count_refused_connection,
            ssl_context=(server_ssl_context(settings.certfile, settings.keyfile)
                         if settings.certfile and settings.keyfile else None),
        ),
    )
    if state.alerts is not None:
        metrics.watch_alerts(state.alerts)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        pruner = (asyncio.create_task(_prune_forever(state))
                  if settings.retention_days is not None else None)
        yield
        if pruner is not None:
            pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruner
        await state.intake.aclose()
        if state.alerts is not None:
            await run_in_threadpool(state.alerts.close, 2.0)
        db.dispose()

    app = FastAPI(
        title="tlspin collector",
        version=_version(),
        description="Pin-failure report intake, query API and dashboard.",
        docs_url=None,  # the Swagger UI loads scripts from a CDN: not here
        redoc_url=None,
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
    )
    app.state.tlspin = state
    if settings.migrate:
        # At creation rather than in the lifespan: a bad database URL fails at once, and
        # apps driven without a lifespan (some test clients) still get their schema.
        db.migrate()
    app.add_middleware(RequestLimits, guard=state.connections,
                       body_timeout=settings.body_timeout,
                       max_body=max(settings.max_report_bytes, MAX_API_BODY_BYTES))
    app.add_middleware(SecurityHeaders)
    app.add_exception_handler(RequestValidationError, _validation_error)
    _intake_routes(app, state)
    from tlspin.collector import api, dashboard

    api.register(app)
    dashboard.register(app)
    return app


def _version() -> str:
    import tlspin

    return str(tlspin.__version__)


async def _validation_error(_: Request, exc: Exception) -> Response:
    """422 naming what was wrong where, without echoing the input: FastAPI's own handler
    returns the input, and a lone surrogate in it made that answer fail with a 500."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [
        {"loc": [str(part)[:100] for part in error.get("loc", ())][:10],
         "msg": str(error.get("msg", ""))[:300], "type": str(error.get("type", ""))[:64]}
        for error in errors[:20]
    ]
    return SafeJSONResponse({"detail": detail}, status_code=422)


def _session_revoked(db: Database, sid: str) -> bool | None:
    try:
        return upkeep.session_revoked(db, sid)
    except SQLAlchemyError:
        return None  # cannot tell now: the session is refused this time


async def _prune_forever(state: CollectorState, every: float = 3600.0) -> None:
    """Delete what is older than the retention period, now and then every *every* seconds
    (each collector process does it; the deletes are idempotent)."""
    days = state.settings.retention_days
    assert days is not None  # Defensive: only started with a retention period
    while True:
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
        try:
            removed = await run_in_threadpool(upkeep.prune, state.db, cutoff)
        except SQLAlchemyError as exc:
            log.warning("could not delete expired reports: %s", exc)
        else:
            if any(removed):
                log.info("retention: deleted %d reports and %d incidents older than %g days",
                         *removed, days)
        await asyncio.sleep(every)


def _reject(state: CollectorState, status: int, reason: str, detail: str,
            headers: dict[str, str] | None = None) -> JSONResponse:
    state.metrics.rejected.labels(reason=reason).inc()
    return SafeJSONResponse({"status": "rejected", "reason": detail}, status_code=status,
                            headers=headers)


async def _read_capped(request: Request, cap: int) -> bytes | None:
    """The body, or None as soon as it exceeds *cap* bytes.

    Reads the ASGI messages directly: a report body nearly always arrives in one message.

    Raises:
        ClientDisconnect: the client went away before the body was complete.
    """
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            return None
        if not message.get("more_body", False):
            if not chunks:
                return chunk
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


def _intake_routes(app: FastAPI, state: CollectorState) -> None:
    settings = state.settings
    metrics = state.metrics

    async def receive_report(request: Request) -> Response:
        start = time.perf_counter()
        metrics.received.inc()
        ip = client_ip(request, settings)
        declared = content_length(request.scope)
        length = None if declared is None else decimal(declared)
        if declared is not None and length is None:
            return _reject(state, 400, "bad-length", "Content-Length is not a number")
        if length is not None and length > settings.max_report_bytes:
            return _reject(state, 413, "too-large",
                           f"the body exceeds {settings.max_report_bytes} bytes")
        if not state.limiter.allow(peer_key(ip)):
            return _reject(state, 429, "rate-limited", "too many reports from this address",
                           {"Retry-After": "60"})
        try:
            body = await _read_capped(request, settings.max_report_bytes)
        except ClientDisconnect:
            return _reject(state, 400, "disconnected", "the client went away")
        except BodyTimeout as exc:
            return _reject(state, 408, "slow-body", exc.detail, {"Connection": "close"})
        if body is None:
            return _reject(state, 413, "too-large",
                           f"the body exceeds {settings.max_report_bytes} bytes")
        received_at = dt.datetime.now(dt.UTC)
        try:
            accepted = await state.intake.submit(
                body, received_at=received_at,
                client_ip=None if settings.drop_client_ip else ip,
            )
        except ReportError as exc:
            return _reject(state, 400, "malformed", str(exc))
        except IntakeUnavailable as exc:  # the sender should retry, not see a 500
            log.warning("could not store a report: %s", exc)
            return _reject(state, 503, "storage", "storage unavailable; retry later",
                           {"Retry-After": "5"})
        stored = accepted.stored
        metrics.count_accepted(accepted.kind)
        metrics.latency.observe(time.perf_counter() - start)
        return SafeJSONResponse(
            {"status": "accepted", "id": stored.report_id, "incident": stored.incident_id},
            status_code=201,
            # Alerts run after the response is sent, so a slow webhook never delays intake.
            background=(
                BackgroundTask(_alerts_after_intake, state, accepted, received_at, ip)
                if state.alerts is not None else None
            ),
        )

    app.router.add_api_route(
        "/reports",
        receive_report,
        methods=["POST"],
        status_code=201,
        tags=["intake"],
        summary="Receive a pin failure report",
        openapi_extra={"requestBody": _REPORT_BODY_SCHEMA},
        responses={
            201: {"description": "Stored."},
            400: {"description": "Malformed report; the body gives the reason."},
            411: {"description": "A chunked body: send Content-Length."},
            413: {"description": "Body over the size cap."},
            429: {"description": "Too many reports from this client IP."},
            503: {"description": "Storage unavailable; retry later."},
        },
        route_class_override=DirectRoute,
    )

    if settings.benchmark_noop:

        async def noop(request: Request) -> Response:
            # Same route class, framework path and body read as /reports, none of the work:
            # the benchmark's baseline.
            try:
                body = await _read_capped(request, settings.max_report_bytes)
            except (ClientDisconnect, BodyTimeout):
                body = None
            return JSONResponse({"status": "ignored", "bytes": len(body or b"")},
                                status_code=201)

        app.router.add_api_route("/reports/noop", noop, methods=["POST"],
                                 include_in_schema=False, route_class_override=DirectRoute)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics",
             response_class=Response,
             responses={401: {"description": "The collector or metrics token is required."}})
    def prometheus(request: Request) -> Response:
        """Prometheus metrics; needs the collector token, the metrics token, or
        ``metrics_public``."""
        if not settings.metrics_public and not state.auth.authorized_for_metrics(request):
            return JSONResponse(
                {"detail": "a bearer token (the collector or the metrics token) is required"},
                status_code=401, headers={"WWW-Authenticate": "Bearer"},
            )
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", tags=["operations"], summary="Liveness and database check")
    def healthz() -> JSONResponse:
        try:
            revision = state.db.revision()
        except SQLAlchemyError:
            return JSONResponse({"status": "database unavailable"}, status_code=503)
        return JSONResponse({"status": "ok", "schema": revision})


def _intake(settings: Settings, db: Database) -> Intake:
    """The worker process, unless asked otherwise or the database lives in this process."""
    facts = bool(settings.webhooks)
    if settings.intake_process and not db.in_memory:
        from tlspin.collector.intake_worker import IntakeProcess

        return IntakeProcess(db.url, facts=facts)
    return InProcessIntake(db, facts=facts)


def _alerts_after_intake(
    state: CollectorState, accepted: Accepted, received_at: dt.datetime, ip: str
) -> None:
    """Runs after the response: new-incident and host-rate alerts (never raises)."""
    alerts = state.alerts
    report: AlertFacts | None = accepted.facts
    if alerts is None or report is None:  # Defensive: only scheduled when configured.
        return
    stored = accepted.stored
    try:
        if stored.opened:
            payload = {
                "incident_id": stored.incident_id,
                "hostname": report.hostname,
                "observed_pins": list(report.observed_pins),
                "expected_pins": list(report.expected_pins),
                "issuer": report.issuer,
                "app_id": report.app_id,
            }
            if alerts.send(
                "incident.opened",
                f"incident:{stored.incident_id}:{received_at.isoformat()}",
                payload,
                text=f"tlspin: new pin failure incident for {report.hostname} "
                f"(served by {report.issuer or 'unknown issuer'})",
                # One sender, or decoys about one host, cannot use up the overall cap.
                scopes=(f"host:{report.hostname}", f"sender:{peer_key(ip)}"),
            ):
                state.metrics.alerts.labels(kind="incident.opened").inc()
        threshold = state.settings.alert_rate_threshold
        if threshold is None:
            return
        count, per = threshold
        now = time.monotonic()
        # Count at most every few seconds per host: the alert is about a rate, not each report.
        if now - state.rate_checked.get(report.hostname, -1e9) < min(10.0, per / 4):
            return
        state.rate_checked[report.hostname] = now
        if len(state.rate_checked) > 10_000:
            state.rate_checked.clear()
        seen = state.db.host_reports_since(report.hostname,
                                           received_at - dt.timedelta(seconds=per))
        if seen >= count and alerts.send(
            "host.rate",
            f"rate:{report.hostname}",
            {"hostname": report.hostname, "reports": seen, "window_seconds": per,
             "threshold": count},
            text=f"tlspin: {seen} pin failure reports for {report.hostname} in the last "
            f"{per:g} s (threshold {count})",
            scopes=(f"host:{report.hostname}",),
        ):
            state.metrics.alerts.labels(kind="host.rate").inc()
    except Exception:  # alerting must never break intake
        log.exception("alerting after a report failed")
