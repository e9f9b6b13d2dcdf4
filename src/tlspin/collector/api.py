"""The token-protected JSON query API, CSV export and monitor-run submission."""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from tlspin.collector import monitor_runs, queries
from tlspin.collector.app import MAX_API_BODY_BYTES, state_of
from tlspin.collector.formats import clean_text, is_storable
from tlspin.collector.limits import BodyTooLarge

__all__ = ["register"]

_bearer = HTTPBearer(auto_error=False, description="The collector token.")
_MAX_ID = 2**62
_SAFE = ("GET", "HEAD")


def require_auth(request: Request, _: Annotated[Any, Depends(_bearer)] = None) -> None:
    """Let the request through with the bearer token, or a dashboard session for reads; else
    401.

    Writes (POST) need the bearer token: a session cookie rides along with any form another
    site posts, and the API checks no CSRF token (the dashboard's own forms do).
    """
    if not state_of(request).auth.authorized(request, session=request.method in _SAFE):
        raise HTTPException(
            status_code=401,
            detail=(
                "a bearer token (Authorization: Bearer …) is required"
                + (", or a dashboard login" if request.method in _SAFE else "")
            ),
            headers={"WWW-Authenticate": "Bearer"},
        )


def _utc(value: dt.datetime | None, name: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)
    except (OverflowError, ValueError):
        raise HTTPException(400, f"{name} is out of range") from None


def _text(value: str | None, name: str) -> str | None:
    # PostgreSQL refuses NUL in text; say so instead of failing in the driver.
    if value is not None and not is_storable(value):
        raise HTTPException(400, f"{name} must be printable text")
    return value


def filters(
    host: Annotated[str | None, Query(max_length=253, description="Exact host name.")] = None,
    since: Annotated[dt.datetime | None, Query(description="Received at or after.")] = None,
    until: Annotated[dt.datetime | None, Query(description="Received before.")] = None,
    app: Annotated[str | None, Query(max_length=256, description="Application id.")] = None,
) -> queries.Filters:
    """Common filters of the query API."""
    return queries.Filters(
        host=_text(host, "host"), since=_utc(since, "since"), until=_utc(until, "until"),
        app=_text(app, "app"),
    )


def _check_storable(value: Any, where: str, depth: int = 0) -> None:
    """Refuse what a database cannot store: NUL, lone surrogates, NaN, deep nesting."""
    if depth > 8:
        raise HTTPException(400, f"{where} is nested too deeply")
    if isinstance(value, str):
        if not is_storable(value):
            raise HTTPException(400, f"{where} contains NUL or an unpaired surrogate")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise HTTPException(400, f"{where} is not a finite number")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_storable(str(key), f"{where} key", depth + 1)
            _check_storable(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_storable(item, f"{where}[{index}]", depth + 1)


Filt = Annotated[queries.Filters, Depends(filters)]
Limit = Annotated[int, Query(ge=1, le=500, description="Page size.")]
Cursor = Annotated[
    int | None, Query(ge=1, le=_MAX_ID, description="next_cursor of the previous page.")
]


class ReportOut(BaseModel):
    """A stored report (normalised fields)."""

    id: int
    received_at: str
    client_time: str | None
    kind: str
    hostname: str
    port: int | None
    noted_hostname: str | None
    include_subdomains: bool | None
    mode: str | None
    reason: str | None
    app_id: str | None
    app_version: str | None
    client_ip: str | None
    issuer: str | None
    observed_pins: list[str]
    known_pins: list[str]
    incident_id: int


class ReportDetailOut(ReportOut):
    """A stored report with its chain and the raw JSON as received."""

    chain: list[dict[str, Any]]
    raw: str


class ReportPage(BaseModel):
    """One page of reports."""

    items: list[ReportOut]
    next_cursor: int | None


class IncidentOut(BaseModel):
    """Reports grouped by host, observed pins and expected pins."""

    id: int
    hostname: str
    observed_pins: list[str]
    expected_pins: list[str]
    first_seen: str
    last_seen: str
    count: int
    status: str
    opened_at: str | None
    resolved_at: str | None


class ChainEntry(BaseModel):
    """One certificate of an incident's chain."""

    subject: str | None
    issuer: str | None
    pin: str | None
    not_after: str | None
    matched: bool


class AppCount(BaseModel):
    """Reports per application."""

    app_id: str | None
    count: int


class IncidentDetailOut(IncidentOut):
    """An incident with its chain and recent reports."""

    chain: list[ChainEntry]
    reports: list[ReportOut]
    apps: list[AppCount]


class IncidentPage(BaseModel):
    """One page of incidents."""

    items: list[IncidentOut]
    next_cursor: int | None


class MonitorRunIn(BaseModel):
    """A monitor run as ``tlspin monitor --collector`` submits it."""

    started_at: dt.datetime
    finished_at: dt.datetime | None = None
    policy_name: str | None = Field(default=None, max_length=256)


class MonitorResultIn(BaseModel):
    """One endpoint's result in a submitted monitor run."""

    endpoint: str = Field(min_length=1, max_length=400)
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(ge=0, le=65535)
    ip: str | None = Field(default=None, max_length=64)
    status: Literal["green", "amber", "red"]
    reasons: list[Annotated[str, Field(max_length=1000)]] = Field(default=[], max_length=100)
    chain: list[dict[str, Any]] = Field(default=[], max_length=16)
    matched: list[dict[str, Any]] = Field(default=[], max_length=64)
    leaf_days_left: int | None = Field(default=None, ge=-100_000, le=100_000)
    min_intermediate_days_left: int | None = Field(default=None, ge=-100_000, le=100_000)
    rule_days_left: int | None = Field(default=None, ge=-100_000, le=100_000)
    redundant: bool | None = None
    changes: list[Annotated[str, Field(max_length=1000)]] = Field(default=[], max_length=100)
    error: str | None = Field(default=None, max_length=4000)
    probed_at: dt.datetime | None = None


class MonitorSubmission(BaseModel):
    """Body of ``POST /api/monitor-runs``."""

    run: MonitorRunIn
    results: list[MonitorResultIn] = Field(max_length=10_000)


class MonitorRunCreated(BaseModel):
    """The stored run."""

    run_id: int
    results: int


# Characters that make a spreadsheet cell a formula (OWASP "CSV injection"), with the
# full-width forms that East Asian spreadsheets also take as formula starts.
_CSV_FORMULA = frozenset("=+-@\uff1d\uff0b\uff0d\uff20")
# Where a cell can begin. Every field is quoted (RFC 4180), so a reader that uses the file's
# own separator splits only between fields. A reader set to another separator does not: a
# spreadsheet in a locale whose list separator is ';' reads '"a","b;=X()"' as the cells
# 'a,"b' and '=X()"', because after the first field's closing quote it no longer sees
# quoting. So a formula character after any separator a reader may split on (',', ';', tab),
# or after a line break, can start a cell too; so can one behind spaces and double quotes,
# which readers strip or take as quoting.
_CSV_SEPARATORS = ",;\t\r\n"
_CSV_SKIPPED = " \t\n\r\x0b\x0c\"" + _CSV_SEPARATORS  # what may stand between a cell start and F
_CSV_HAS_FORMULA = str.maketrans("", "", "".join(_CSV_FORMULA))


def _csv_cell(value: Any) -> str:
    """*value* as CSV cell text that no spreadsheet reads as a formula, whatever separator
    it splits on: a ``'`` goes before each formula character that could start a cell.

    Linear in the length of the text (a regular expression for "a separator, then spaces,
    then a formula character" backtracked quadratically over a run of tabs): each formula
    character looks back only over the run of skippable characters before it, and those runs
    do not overlap, because formula characters are not skippable.
    """
    text = "" if value is None else (" ".join(value) if isinstance(value, list) else str(value))
    text = clean_text(text)
    if len(text.translate(_CSV_HAS_FORMULA)) == len(text):
        return text  # no formula character at all: the common case
    out: list[str] = []
    done = 0  # text[:done] is in out
    previous = 0  # just after the last formula character seen
    for index, char in enumerate(text):
        if char not in _CSV_FORMULA:
            continue
        run = text[previous:index]
        skipped = run.rstrip(_CSV_SKIPPED)
        gap = run[len(skipped):]
        starts_cell = (previous == 0 and not skipped) or any(
            c in _CSV_SEPARATORS for c in gap)
        if starts_cell:
            out.append(text[done:index])
            out.append("'")
            done = index
        previous = index + 1
    out.append(text[done:])
    return "".join(out)


def _csv_lines(rows: Sequence[Any], columns: Sequence[str]) -> Iterator[bytes]:
    """The CSV file, a few hundred rows per piece (iterated in a worker thread by Starlette,
    so building it never holds the event loop)."""
    out = io.StringIO()
    # RFC 4180: every field quoted, CRLF line ends.
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(columns)
    for start in range(0, len(rows), 500):
        for row in rows[start : start + 500]:
            writer.writerow([_csv_cell(row.get(c)) for c in columns])
        yield out.getvalue().encode("utf-8")
        out.seek(0)
        out.truncate()
    rest = out.getvalue()
    if rest:
        yield rest.encode("utf-8")


def _csv(rows: Sequence[Any], columns: list[str], filename: str) -> Response:
    return StreamingResponse(
        _csv_lines(rows, columns), media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"',
                 "Cache-Control": "no-store"},
    )


async def _db(call: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await run_in_threadpool(call, *args, **kwargs)
    except SQLAlchemyError:
        raise HTTPException(503, "storage unavailable; retry later") from None


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """*model*'s JSON schema with its definitions inlined (for an ``openapi_extra`` request
    body, where the schema's own ``#/$defs`` references would point nowhere)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    inlined: dict[str, Any] = inline(schema)
    return inlined


async def _monitor_body(request: Request) -> MonitorSubmission:
    """The validated monitor run in *request*'s body, read up to the cap.

    Raises:
        HTTPException: 413 over the cap, 400 for a body that is not a valid run (the reason
            names the fields, never echoes their values).
    """
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_API_BODY_BYTES:
                raise BodyTooLarge(MAX_API_BODY_BYTES)
            chunks.append(chunk)
    except ClientDisconnect:
        raise HTTPException(400, "the client went away") from None
    try:
        return MonitorSubmission.model_validate_json(b"".join(chunks))
    except ValidationError as exc:
        where = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])[:100]}: {e['msg'][:200]}"
            for e in exc.errors(include_input=False)[:5]
        )
        raise HTTPException(400, f"not a valid monitor run: {where}") from None


def register(app: FastAPI) -> None:
    """Add the query API routes to *app*."""
    auth = [Depends(require_auth)]

    @app.get("/api/reports", tags=["query"], dependencies=auth, response_model=ReportPage)
    async def get_reports(
        request: Request, f: Filt, limit: Limit = 50, cursor: Cursor = None,
        incident: Annotated[int | None, Query(ge=1, le=_MAX_ID)] = None,
    ) -> dict[str, Any]:
        """Reports, newest first, filtered by host, time range, app and incident."""
        f = queries.Filters(host=f.host, since=f.since, until=f.until, app=f.app,
                            incident=incident)
        items, nxt = await _db(queries.list_reports, state_of(request).db, f, limit=limit,
                               cursor=cursor)
        return {"items": items, "next_cursor": nxt}

    @app.get("/api/reports/{report_id}", tags=["query"], dependencies=auth,
             response_model=ReportDetailOut, responses={404: {"description": "No such report."}})
    async def get_report(
        request: Request, report_id: Annotated[int, Path(ge=1, le=_MAX_ID)]
    ) -> dict[str, Any]:
        """One report with its chain and raw JSON."""
        found = await _db(queries.report_detail, state_of(request).db, report_id)
        if found is None:
            raise HTTPException(404, f"no report with id {report_id}")
        return dict(found)

    @app.get("/api/incidents", tags=["query"], dependencies=auth, response_model=IncidentPage)
    async def get_incidents(
        request: Request, f: Filt, limit: Limit = 50, cursor: Cursor = None,
        status: Literal["open", "resolved"] | None = None,
    ) -> dict[str, Any]:
        """Incidents, newest first, filtered by host, time range, app and status."""
        f = queries.Filters(host=f.host, since=f.since, until=f.until, app=f.app, status=status)
        items, nxt = await _db(queries.list_incidents, state_of(request).db, f, limit=limit,
                               cursor=cursor)
        return {"items": items, "next_cursor": nxt}

    @app.get("/api/incidents/{incident_id}", tags=["query"], dependencies=auth,
             response_model=IncidentDetailOut,
             responses={404: {"description": "No such incident."}})
    async def get_incident(
        request: Request, incident_id: Annotated[int, Path(ge=1, le=_MAX_ID)]
    ) -> dict[str, Any]:
        """One incident with its chain (matched or not per certificate) and recent reports."""
        found = await _db(queries.incident_detail, state_of(request).db, incident_id)
        if found is None:
            raise HTTPException(404, f"no incident with id {incident_id}")
        return dict(found)

    @app.post("/api/incidents/{incident_id}/resolve", tags=["query"], dependencies=auth,
              responses={404: {"description": "No such incident."}})
    async def resolve(
        request: Request, incident_id: Annotated[int, Path(ge=1, le=_MAX_ID)]
    ) -> dict[str, Any]:
        """Mark an incident resolved; a new matching report opens it again."""
        if not await _db(state_of(request).db.resolve_incident, incident_id):
            raise HTTPException(404, f"no incident with id {incident_id}")
        return {"id": incident_id, "status": "resolved"}

    @app.get("/api/reports.csv", tags=["export"], dependencies=auth, response_class=Response)
    async def reports_csv(
        request: Request, f: Filt,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
    ) -> Response:
        """Reports as CSV (newest first)."""
        items, _ = await _db(queries.list_reports, state_of(request).db, f, limit=limit)
        columns = ["id", "received_at", "client_time", "kind", "hostname", "port", "mode",
                   "reason", "app_id", "app_version", "client_ip", "issuer", "observed_pins",
                   "known_pins", "incident_id"]
        return _csv(items, columns, "tlspin-reports.csv")

    @app.get("/api/incidents.csv", tags=["export"], dependencies=auth, response_class=Response)
    async def incidents_csv(
        request: Request, f: Filt,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
    ) -> Response:
        """Incidents as CSV (newest first)."""
        items, _ = await _db(queries.list_incidents, state_of(request).db, f, limit=limit)
        columns = ["id", "hostname", "status", "count", "first_seen", "last_seen",
                   "observed_pins", "expected_pins"]
        return _csv(items, columns, "tlspin-incidents.csv")

    @app.post("/api/monitor-runs", tags=["monitor"], dependencies=auth, status_code=201,
              response_model=MonitorRunCreated,
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": _inline_schema(MonitorSubmission)}}}},
              responses={400: {"description": "Malformed monitor run."},
                         413: {"description": "Body over the size cap."}})
    async def submit_monitor_run(request: Request) -> dict[str, Any]:
        """Store a run of ``tlspin monitor`` (as ``--collector URL`` sends it).

        Alerts for runs are the monitor's job (it knows the previous run either way). The
        body is read only after the token was checked (the dependency runs first: the route
        declares no body parameter), and at most ``MAX_API_BODY_BYTES`` of it.
        """
        body = await _monitor_body(request)
        state = state_of(request)
        results = [r.model_dump() for r in body.results]
        _check_storable(results, "results")
        _check_storable(body.run.policy_name, "run.policy_name")
        try:
            run_id = await _db(monitor_runs.save_monitor_run, state.db, body.run.model_dump(),
                               results)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        return {"run_id": run_id, "results": len(results)}

    @app.get("/api/monitor/latest", tags=["monitor"], dependencies=auth)
    async def monitor_latest(request: Request) -> list[dict[str, Any]]:
        """The latest result of every monitored endpoint."""
        return list(await _db(monitor_runs.latest_monitor_results, state_of(request).db))

    @app.get("/api/monitor/history", tags=["monitor"], dependencies=auth)
    async def monitor_endpoint_history(
        request: Request, endpoint: Annotated[str, Query(min_length=1, max_length=400)],
        limit: Limit = 100,
    ) -> list[dict[str, Any]]:
        """Results of one endpoint (``host:port[@ip]``), newest first."""
        _text(endpoint, "endpoint")
        return list(await _db(monitor_runs.monitor_history, state_of(request).db, endpoint,
                              limit=limit))
