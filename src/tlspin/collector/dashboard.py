"""The server-rendered HTML dashboard (Jinja2 with autoescaping, SVG charts, no JavaScript).

Every value shown comes from attacker-controlled reports, so templates never mark anything
safe, and the Content-Security-Policy (see :data:`tlspin.collector.app.CSP`) forbids scripts
should something slip through anyway.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.parse
from pathlib import Path
from typing import Any

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from tlspin.collector import charts, monitor_runs, queries, upkeep
from tlspin.collector.app import CollectorState, client_ip, state_of
from tlspin.collector.auth import COOKIE, safe_next
from tlspin.collector.formats import clean_text
from tlspin.collector.limits import peer_key

__all__ = ["register"]

_HERE = Path(__file__).parent
_STATIC = {"dashboard.css": "text/css; charset=utf-8"}
_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_HERE / "templates"),
    autoescape=True,  # every template, whatever its name
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _render(request: Request, template: str, *, status: int = 200, refresh: bool = False,
            **context: Any) -> HTMLResponse:
    state = state_of(request)
    cookie = request.cookies.get(COOKIE)
    html = clean_text(_env.get_template(template).render(
        refresh=state.settings.refresh_seconds if refresh else None,
        auth_enabled=state.auth.enabled,
        csrf=state.auth.csrf_token(cookie),
        logged_in=state.auth.enabled and state.auth.session_valid(cookie),
        **context,
    ))  # the queries clean what they return; this keeps any other stored text encodable
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def _login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/login?" + urllib.parse.urlencode({"next": target}), 303)


async def _form(request: Request, limit: int = 4096) -> dict[str, str]:
    """Parse a small urlencoded form body (no multipart: the dashboard never uploads)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return {}
    try:
        pairs = urllib.parse.parse_qsl(body.decode("utf-8"), max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return {}
    return dict(pairs)


async def _overview(state: CollectorState, range: str, since: dt.datetime,
                    bucket_hours: int) -> dict[str, Any]:
    """The front page's figures, computed at most once per half refresh interval per range
    and process: every open dashboard reloads every *refresh_seconds*, and each computation
    reads the range's reports (the overview of many viewers costs that of one)."""
    cache = state.overview_cache
    ttl = max(2.0, state.settings.refresh_seconds / 2)
    now = time.monotonic()
    known = cache.get(range)
    if known is not None and now - known[0] < ttl:
        data: dict[str, Any] = known[1]
        return data
    data = await run_in_threadpool(queries.overview, state.db, since=since,
                                   bucket_hours=bucket_hours)
    cache[range] = (time.monotonic(), data)
    return data


def _csrf_ok(state: CollectorState, request: Request, form: dict[str, str]) -> bool:
    if not state.auth.enabled:
        return True
    return state.auth.csrf_valid(request.cookies.get(COOKIE), form.get("csrf", ""))


def register(app: FastAPI) -> None:
    """Add the dashboard routes to *app* (kept out of the OpenAPI document)."""

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard", 303)

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        media = _STATIC.get(name)
        if media is None:
            return Response("not found", status_code=404, media_type="text/plain")
        content = (_HERE / "static" / name).read_bytes()
        return Response(content, media_type=media,
                        headers={"Cache-Control": "public, max-age=3600"})

    @app.get("/login", include_in_schema=False)
    def login_form(request: Request, next: str = "/dashboard") -> Response:
        if not state_of(request).auth.enabled:
            return RedirectResponse("/dashboard", 303)
        return _render(request, "login.html", next=safe_next(next), error=None)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        state = state_of(request)
        form = await _form(request)
        target = safe_next(form.get("next"))
        if not state.auth.enabled:
            return RedirectResponse(target, 303)
        if not state.login_limiter.allow(peer_key(client_ip(request, state.settings))):
            return _render(request, "login.html", status=429, next=target,
                           error="Too many attempts; wait a minute.")
        if not state.auth.check_token(form.get("token", "")):
            return _render(request, "login.html", status=401, next=target,
                           error="That token is not right.")
        response = RedirectResponse(target, 303)
        response.set_cookie(
            COOKIE, state.auth.new_session(), max_age=int(state.settings.session_hours * 3600),
            httponly=True, samesite="strict", path="/",
            secure=state.settings.secure_cookies or request.url.scheme == "https",
        )
        return response

    # POST /login needs no CSRF token: logging somebody in takes the one collector token,
    # which an attacker who has it does not need to trick anybody into using.

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        state = state_of(request)
        form = await _form(request)
        if not _csrf_ok(state, request, form):
            return _render(request, "error.html", status=403,
                           message="Not allowed: use the dashboard's Log out button.")
        # Revoked in the database, so that a copy of the cookie dies too, in every process.
        session = state.auth.session(request.cookies.get(COOKIE))
        if session is not None:
            sid, expiry = session
            await run_in_threadpool(upkeep.revoke_session, state.db, sid,
                                    dt.datetime.fromtimestamp(expiry, dt.UTC))
            state.auth.forget(sid)
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                               secure=state.settings.secure_cookies
                               or request.url.scheme == "https")
        return response

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard(request: Request, range: str = "24h") -> Response:
        state = state_of(request)
        if not state.auth.authorized(request):
            return _login_redirect(request)
        if range not in charts.RANGES:
            range = "24h"
        span, bucket_hours = charts.RANGES[range]
        now = dt.datetime.now(dt.UTC)
        try:
            data = await _overview(state, range, now - span, bucket_hours)
        except SQLAlchemyError:
            return _render(request, "error.html", status=503,
                           message="The database is unavailable; retrying.", refresh=True)
        chart = charts.bar_chart(data["series"], now=now, span=span, bucket_hours=bucket_hours)
        return _render(request, "dashboard.html", refresh=True, data=data, chart=chart,
                       range=range, ranges=list(charts.RANGES), now=now)

    @app.get("/incidents/{incident_id}", include_in_schema=False)
    async def incident(request: Request, incident_id: int) -> Response:
        state = state_of(request)
        if not state.auth.authorized(request):
            return _login_redirect(request)
        if not 1 <= incident_id < 2**62:
            return _render(request, "error.html", status=404, message="No such incident.")
        found = await run_in_threadpool(queries.incident_detail, state.db, incident_id)
        if found is None:
            return _render(request, "error.html", status=404, message="No such incident.")
        return _render(request, "incident.html", refresh=True, incident=found)

    @app.post("/incidents/{incident_id}/resolve", include_in_schema=False)
    async def resolve(request: Request, incident_id: int) -> Response:
        state = state_of(request)
        # The session first: nobody without one makes the collector read a body.
        form = await _form(request) if state.auth.authorized(request) else None
        if form is None or not _csrf_ok(state, request, form):
            return _render(request, "error.html", status=403,
                           message="Not allowed: log in again and retry.")
        if 1 <= incident_id < 2**62:
            await run_in_threadpool(state.db.resolve_incident, incident_id)
        return RedirectResponse(f"/incidents/{incident_id}", 303)

    @app.get("/reports/{report_id}", include_in_schema=False)
    async def report(request: Request, report_id: int) -> Response:
        state = state_of(request)
        if not state.auth.authorized(request):
            return _login_redirect(request)
        found = (await run_in_threadpool(queries.report_detail, state.db, report_id)
                 if 1 <= report_id < 2**62 else None)
        if found is None:
            return _render(request, "error.html", status=404, message="No such report.")
        try:
            pretty = json.dumps(json.loads(found["raw"]), indent=2, sort_keys=True)
        except (ValueError, RecursionError):
            pretty = found["raw"]
        return _render(request, "report.html", report=found, pretty=pretty)

    @app.get("/health", include_in_schema=False)
    async def health(request: Request) -> Response:
        state = state_of(request)
        if not state.auth.authorized(request):
            return _login_redirect(request)
        results = await run_in_threadpool(monitor_runs.latest_monitor_results, state.db)
        order = {"red": 0, "amber": 1, "green": 2}
        results.sort(key=lambda r: (order.get(r["status"], 3), r["endpoint"]))
        rows, ticks = charts.expiry_rows(results)
        counts = {s: sum(1 for r in results if r["status"] == s) for s in order}
        return _render(request, "health.html", refresh=True, results=results, rows=rows,
                       ticks=ticks, counts=counts)

    @app.get("/health/endpoint", include_in_schema=False)
    async def endpoint_history(request: Request, e: str = "") -> Response:
        state = state_of(request)
        if not state.auth.authorized(request):
            return _login_redirect(request)
        if not e or len(e) > 400 or "\x00" in e:
            return _render(request, "error.html", status=404, message="No such endpoint.")
        history = await run_in_threadpool(monitor_runs.monitor_history, state.db, e)
        return _render(request, "endpoint.html", refresh=True, endpoint=e, history=history)
